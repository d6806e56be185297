import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { subnetCidr } from "./subnet-cidrs.ts";
import { zoneOfferingProblem } from "./zone-offerings.ts";

export const DATA_PORT = 8080;
export const ADMIN_PORT = 8081;

export interface NetworkArgs {
  /** Region of the VPC, for the S3 gateway endpoint's service name. */
  region: pulumi.Input<string>;
  /** Zone names; one public and one private subnet is created per zone. At least two. */
  availabilityZones: string[];
  /** CIDR of a new VPC; ignored when existingVpcId is set. Default 10.40.0.0/16. */
  vpcCidr?: pulumi.Input<string>;
  /** Use this VPC instead of creating one; then both subnet id lists are required. */
  existingVpcId?: pulumi.Input<string>;
  existingPublicSubnetIds?: pulumi.Input<string>[];
  existingPrivateSubnetIds?: pulumi.Input<string>[];
  /** Port the load balancer listens on (443 with a certificate, else 80). */
  listenerPort: pulumi.Input<number>;
  /** Sources allowed to reach the listener. */
  ingressCidrs: pulumi.Input<string>[];
  /** "vpc": admin port reachable from inside the VPC only; "none": no network path to it at all. */
  adminAccess: "vpc" | "none";
  /**
   * EC2 types launched into these subnets (the fleet's, the builder's): each must be offered in every
   * zone, checked against EC2's offerings at preview.
   */
  instanceTypes?: string[];
}

/**
 * A VPC with public subnets (load balancer, NAT) and private subnets (hosts) in two or more zones, or an
 * existing VPC, plus the two security groups: the load balancer's, and the hosts' that accepts the data
 * port only from the load balancer and the admin port never from outside the VPC.
 */
export class Network extends pulumi.ComponentResource {
  public readonly vpcId: pulumi.Output<string>;
  public readonly vpcCidr: pulumi.Output<string>;
  public readonly publicSubnetIds: pulumi.Output<string[]>;
  public readonly privateSubnetIds: pulumi.Output<string[]>;
  public readonly loadBalancerSecurityGroupId: pulumi.Output<string>;
  public readonly hostSecurityGroupId: pulumi.Output<string>;
  /** The zones, once checked against the offerings of every type in instanceTypes. */
  public readonly availabilityZones: pulumi.Output<string[]>;

  constructor(name: string, args: NetworkArgs, opts?: pulumi.ComponentResourceOptions) {
    validateNetworkArgs(args);
    super("snapfaas:index:Network", name, {}, opts);

    const types = [...new Set(args.instanceTypes ?? [])];
    const offerings = types.map((type) =>
      aws.ec2
        .getInstanceTypeOfferingsOutput(
          { locationType: "availability-zone", filters: [{ name: "instance-type", values: [type] }] },
          { parent: this },
        )
        .locations.apply((zones) => [type, zones] as const),
    );
    // Subnets (and so the hosts and the builder) depend on this: a zone without the type stops preview.
    const zones = pulumi.all(offerings).apply((pairs) => {
      const problem = zoneOfferingProblem(args.availabilityZones, Object.fromEntries(pairs));
      if (problem) throw new Error(`Invalid arguments for Network ${name}: ${problem}`);
      return args.availabilityZones;
    });
    this.availabilityZones = zones;

    if (args.existingVpcId !== undefined) {
      this.vpcId = pulumi.output(args.existingVpcId);
      this.vpcCidr = aws.ec2.getVpcOutput({ id: args.existingVpcId }, { parent: this }).cidrBlock;
      // Existing subnets: what is launched into them still waits for the zone check.
      this.publicSubnetIds = pulumi.all([args.existingPublicSubnetIds ?? [], zones]).apply(([ids]) => ids);
      this.privateSubnetIds = pulumi.all([args.existingPrivateSubnetIds ?? [], zones]).apply(([ids]) => ids);
    } else {
      const cidr = pulumi.output(args.vpcCidr ?? "10.40.0.0/16");
      const vpc = new aws.ec2.Vpc(
        `${name}-vpc`,
        { cidrBlock: cidr, enableDnsHostnames: true, enableDnsSupport: true, tags: { Name: `${name}-vpc` } },
        { parent: this },
      );
      const gateway = new aws.ec2.InternetGateway(`${name}-igw`, { vpcId: vpc.id }, { parent: this });
      const publicRoutes = new aws.ec2.RouteTable(
        `${name}-public-rt`,
        { vpcId: vpc.id, routes: [{ cidrBlock: "0.0.0.0/0", gatewayId: gateway.id }] },
        { parent: this },
      );
      const publicSubnets = args.availabilityZones.map((zone, i) => {
        const subnet = new aws.ec2.Subnet(
          `${name}-public-${zone}`,
          {
            vpcId: vpc.id,
            availabilityZone: zones.apply((z) => z[i]!),
            cidrBlock: cidr.apply((c) => subnetCidr(c, "public", i)),
            // Only the load balancer and the NAT gateway live here; nothing gets a public IP by default.
            mapPublicIpOnLaunch: false,
            tags: { Name: `${name}-public-${zone}` },
          },
          { parent: this },
        );
        new aws.ec2.RouteTableAssociation(
          `${name}-public-rta-${zone}`,
          { subnetId: subnet.id, routeTableId: publicRoutes.id },
          { parent: this },
        );
        return subnet;
      });
      // One NAT gateway keeps the hourly cost down; hosts only need it for outbound package downloads.
      const natAddress = new aws.ec2.Eip(`${name}-nat-eip`, { domain: "vpc" }, { parent: this });
      const firstPublic = publicSubnets[0];
      if (!firstPublic) throw new Error("unreachable: validated two zones");
      const nat = new aws.ec2.NatGateway(
        `${name}-nat`,
        { allocationId: natAddress.id, subnetId: firstPublic.id },
        { parent: this, dependsOn: [gateway] },
      );
      const privateRoutes = new aws.ec2.RouteTable(
        `${name}-private-rt`,
        { vpcId: vpc.id, routes: [{ cidrBlock: "0.0.0.0/0", natGatewayId: nat.id }] },
        { parent: this },
      );
      const privateSubnets = args.availabilityZones.map((zone, i) => {
        const subnet = new aws.ec2.Subnet(
          `${name}-private-${zone}`,
          {
            vpcId: vpc.id,
            availabilityZone: zones.apply((z) => z[i]!),
            cidrBlock: cidr.apply((c) => subnetCidr(c, "private", i)),
            mapPublicIpOnLaunch: false,
            tags: { Name: `${name}-private-${zone}` },
          },
          { parent: this },
        );
        new aws.ec2.RouteTableAssociation(
          `${name}-private-rta-${zone}`,
          { subnetId: subnet.id, routeTableId: privateRoutes.id },
          { parent: this },
        );
        return subnet;
      });
      // Artifact and release downloads stay on the AWS network and skip the NAT's per-GB charge.
      new aws.ec2.VpcEndpoint(
        `${name}-s3-endpoint`,
        {
          vpcId: vpc.id,
          serviceName: pulumi.interpolate`com.amazonaws.${args.region}.s3`,
          vpcEndpointType: "Gateway",
          routeTableIds: [privateRoutes.id],
        },
        { parent: this },
      );
      this.vpcId = vpc.id;
      this.vpcCidr = vpc.cidrBlock;
      this.publicSubnetIds = pulumi.output(publicSubnets.map((s) => s.id));
      this.privateSubnetIds = pulumi.output(privateSubnets.map((s) => s.id));
    }

    const loadBalancerGroup = new aws.ec2.SecurityGroup(
      `${name}-lb-sg`,
      {
        vpcId: this.vpcId,
        description: "snapfaas load balancer: listener from the allowed sources, data port to the VPC",
        ingress: [
          {
            protocol: "tcp",
            fromPort: args.listenerPort,
            toPort: args.listenerPort,
            cidrBlocks: args.ingressCidrs,
            description: "clients",
          },
        ],
        egress: [
          {
            protocol: "tcp",
            fromPort: DATA_PORT,
            toPort: DATA_PORT,
            cidrBlocks: [this.vpcCidr],
            description: "agents data port and health checks",
          },
        ],
      },
      { parent: this },
    );

    const hostIngress: aws.types.input.ec2.SecurityGroupIngress[] = [
      {
        protocol: "tcp",
        fromPort: DATA_PORT,
        toPort: DATA_PORT,
        securityGroups: [loadBalancerGroup.id],
        description: "calls and health checks from the load balancer only",
      },
    ];
    if (args.adminAccess === "vpc") {
      hostIngress.push({
        protocol: "tcp",
        fromPort: ADMIN_PORT,
        toPort: ADMIN_PORT,
        cidrBlocks: [this.vpcCidr],
        description: "agent admin API from inside the VPC only",
      });
    }
    const hostGroup = new aws.ec2.SecurityGroup(
      `${name}-host-sg`,
      {
        vpcId: this.vpcId,
        description:
          "snapfaas KVM hosts: data port from the load balancer; admin port never from the internet",
        ingress: hostIngress,
        // Hosts fetch Firecracker, packages and releases, and functions may call out.
        egress: [
          { protocol: "-1", fromPort: 0, toPort: 0, cidrBlocks: ["0.0.0.0/0"], description: "outbound" },
        ],
      },
      { parent: this },
    );

    this.loadBalancerSecurityGroupId = loadBalancerGroup.id;
    this.hostSecurityGroupId = hostGroup.id;
    this.registerOutputs({
      vpcId: this.vpcId,
      vpcCidr: this.vpcCidr,
      publicSubnetIds: this.publicSubnetIds,
      privateSubnetIds: this.privateSubnetIds,
      loadBalancerSecurityGroupId: this.loadBalancerSecurityGroupId,
      hostSecurityGroupId: this.hostSecurityGroupId,
      availabilityZones: this.availabilityZones,
    });
  }
}

function validateNetworkArgs(args: NetworkArgs): void {
  const errors: pulumi.InputPropertyErrorDetails[] = [];
  if (args.availabilityZones.length < 2) {
    errors.push({ propertyPath: "availabilityZones", reason: "must list at least two availability zones" });
  }
  if (new Set(args.availabilityZones).size !== args.availabilityZones.length) {
    errors.push({ propertyPath: "availabilityZones", reason: "must not repeat a zone" });
  }
  if (args.existingVpcId !== undefined) {
    for (const key of ["existingPublicSubnetIds", "existingPrivateSubnetIds"] as const) {
      if ((args[key]?.length ?? 0) < 2) {
        errors.push({ propertyPath: key, reason: "needs two or more subnet ids when existingVpcId is set" });
      }
    }
  }
  if (args.ingressCidrs.length === 0)
    errors.push({ propertyPath: "ingressCidrs", reason: "must not be empty" });
  if (errors.length > 0)
    throw new pulumi.InputPropertiesError({ message: "Invalid arguments for Network", errors });
}
