import assert from "node:assert/strict";
import * as pulumi from "@pulumi/pulumi";
import { Network } from "../../components/network.ts";
import {
  EXISTING_VPC_CIDR,
  findRegistered,
  invoked,
  promiseOf,
  registeredTypesAndNames,
  settled,
  usePulumiMocks,
} from "../support/pulumi-mocks.ts";

describe("Network", () => {
  usePulumiMocks();

  const baseArgs = {
    region: "us-east-1",
    availabilityZones: ["us-east-1a", "us-east-1b"],
    listenerPort: 443,
    ingressCidrs: ["0.0.0.0/0"],
  };

  it("creates a VPC with public and private subnets in two zones, one NAT and an S3 endpoint", async () => {
    const network = new Network("net", { ...baseArgs, adminAccess: "none" });
    await settled(network);
    await promiseOf(network.hostSecurityGroupId);
    assert.deepEqual(registeredTypesAndNames(), [
      "aws:ec2/eip:Eip net-nat-eip",
      "aws:ec2/internetGateway:InternetGateway net-igw",
      "aws:ec2/natGateway:NatGateway net-nat",
      "aws:ec2/routeTable:RouteTable net-private-rt",
      "aws:ec2/routeTable:RouteTable net-public-rt",
      "aws:ec2/routeTableAssociation:RouteTableAssociation net-private-rta-us-east-1a",
      "aws:ec2/routeTableAssociation:RouteTableAssociation net-private-rta-us-east-1b",
      "aws:ec2/routeTableAssociation:RouteTableAssociation net-public-rta-us-east-1a",
      "aws:ec2/routeTableAssociation:RouteTableAssociation net-public-rta-us-east-1b",
      "aws:ec2/securityGroup:SecurityGroup net-host-sg",
      "aws:ec2/securityGroup:SecurityGroup net-lb-sg",
      "aws:ec2/subnet:Subnet net-private-us-east-1a",
      "aws:ec2/subnet:Subnet net-private-us-east-1b",
      "aws:ec2/subnet:Subnet net-public-us-east-1a",
      "aws:ec2/subnet:Subnet net-public-us-east-1b",
      "aws:ec2/vpc:Vpc net-vpc",
      "aws:ec2/vpcEndpoint:VpcEndpoint net-s3-endpoint",
      "snapfaas:index:Network net",
    ]);
    const subnets = [
      "public-us-east-1a",
      "public-us-east-1b",
      "private-us-east-1a",
      "private-us-east-1b",
    ].map((n) => findRegistered("aws:ec2/subnet:Subnet", `net-${n}`).inputs);
    assert.deepEqual(
      subnets.map((s) => [s.availabilityZone, s.cidrBlock, s.mapPublicIpOnLaunch]),
      [
        ["us-east-1a", "10.40.0.0/20", false],
        ["us-east-1b", "10.40.16.0/20", false],
        ["us-east-1a", "10.40.128.0/20", false],
        ["us-east-1b", "10.40.144.0/20", false],
      ],
    );
    assert.equal(
      findRegistered("aws:ec2/vpcEndpoint:VpcEndpoint", "net-s3-endpoint").inputs.serviceName,
      "com.amazonaws.us-east-1.s3",
    );
  });

  it("lets the data port in only from the load balancer group and never opens the admin port by default", async () => {
    const network = new Network("net", { ...baseArgs, adminAccess: "none" });
    await promiseOf(network.hostSecurityGroupId);
    await settled(network);
    const host = findRegistered("aws:ec2/securityGroup:SecurityGroup", "net-host-sg").inputs;
    assert.deepEqual(host.ingress, [
      {
        protocol: "tcp",
        fromPort: 8080,
        toPort: 8080,
        securityGroups: ["net-lb-sg-id"],
        description: "calls and health checks from the load balancer only",
      },
    ]);
    const lb = findRegistered("aws:ec2/securityGroup:SecurityGroup", "net-lb-sg").inputs;
    assert.deepEqual(lb.ingress, [
      { protocol: "tcp", fromPort: 443, toPort: 443, cidrBlocks: ["0.0.0.0/0"], description: "clients" },
    ]);
    assert.deepEqual(lb.egress, [
      {
        protocol: "tcp",
        fromPort: 8080,
        toPort: 8080,
        cidrBlocks: ["10.40.0.0/16"],
        description: "agents data port and health checks",
      },
    ]);
  });

  it("opens the admin port to the VPC CIDR only when asked", async () => {
    const network = new Network("net", { ...baseArgs, adminAccess: "vpc" });
    await promiseOf(network.hostSecurityGroupId);
    await settled(network);
    const ingress = findRegistered("aws:ec2/securityGroup:SecurityGroup", "net-host-sg").inputs
      .ingress as Array<Record<string, unknown>>;
    assert.deepEqual(
      ingress.map((r) => [r.fromPort, r.cidrBlocks ?? null, r.securityGroups ?? null]),
      [
        [8080, null, ["net-lb-sg-id"]],
        [8081, ["10.40.0.0/16"], null],
      ],
    );
    for (const rule of ingress) {
      assert.notDeepEqual(rule.cidrBlocks, ["0.0.0.0/0"], "no host port is open to the internet");
    }
  });

  it("reuses an existing VPC: only the security groups are created, admin limited to its CIDR", async () => {
    const network = new Network("net", {
      ...baseArgs,
      adminAccess: "vpc",
      existingVpcId: "vpc-0abc",
      existingPublicSubnetIds: ["subnet-01", "subnet-02"],
      existingPrivateSubnetIds: ["subnet-11", "subnet-12"],
    });
    assert.deepEqual(await promiseOf(network.privateSubnetIds), ["subnet-11", "subnet-12"]);
    await promiseOf(network.hostSecurityGroupId);
    await settled(network);
    assert.deepEqual(registeredTypesAndNames(), [
      "aws:ec2/securityGroup:SecurityGroup net-host-sg",
      "aws:ec2/securityGroup:SecurityGroup net-lb-sg",
      "snapfaas:index:Network net",
    ]);
    const host = findRegistered("aws:ec2/securityGroup:SecurityGroup", "net-host-sg").inputs;
    assert.deepEqual((host.ingress as Array<{ cidrBlocks?: string[] }>)[1]?.cidrBlocks, [EXISTING_VPC_CIDR]);
  });

  it("names the property when given one zone or an existing VPC without subnets", () => {
    assert.throws(
      () => new Network("bad", { ...baseArgs, availabilityZones: ["us-east-1a"], adminAccess: "none" }),
      (error: unknown) => {
        assert.ok(error instanceof pulumi.InputPropertiesError);
        assert.deepEqual(error.errors, [
          { propertyPath: "availabilityZones", reason: "must list at least two availability zones" },
        ]);
        return true;
      },
    );
    assert.throws(
      () => new Network("bad2", { ...baseArgs, adminAccess: "none", existingVpcId: "vpc-1" }),
      (error: unknown) =>
        error instanceof pulumi.InputPropertiesError &&
        error.errors.map((e) => e.propertyPath).join() === "existingPublicSubnetIds,existingPrivateSubnetIds",
    );
  });

  it("asks EC2 where each launched type is offered and builds the subnets only in checked zones", async () => {
    const network = new Network("net", {
      ...baseArgs,
      adminAccess: "none",
      instanceTypes: ["c5.metal", "m7i.metal-24xl", "c5.metal"],
    });
    assert.deepEqual(await promiseOf(network.availabilityZones), ["us-east-1a", "us-east-1b"]);
    await settled(network);
    const asked = invoked
      .filter((i) => i.token === "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings")
      .map((i) => i.inputs);
    assert.deepEqual(asked, [
      { locationType: "availability-zone", filters: [{ name: "instance-type", values: ["c5.metal"] }] },
      { locationType: "availability-zone", filters: [{ name: "instance-type", values: ["m7i.metal-24xl"] }] },
    ]);
    assert.equal(
      findRegistered("aws:ec2/subnet:Subnet", "net-private-us-east-1b").inputs.availabilityZone,
      "us-east-1b",
    );
  });
});
