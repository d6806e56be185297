import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { DATA_PORT } from "./network.ts";

export interface GatewayArgs {
  /** "alb" (HTTP-aware, default) or "nlb" (TCP/TLS pass-through, lowest added latency). */
  kind?: "alb" | "nlb";
  vpcId: pulumi.Input<string>;
  /** Public subnets, two or more zones. */
  subnetIds: pulumi.Input<pulumi.Input<string>[]>;
  securityGroupId: pulumi.Input<string>;
  /** ACM certificate; with it the listener is HTTPS/TLS on 443, without it HTTP/TCP on 80. */
  certificateArn?: pulumi.Input<string>;
  /** ALB idle timeout; keep it above the platform's call timeout. Default 60. */
  idleTimeoutSeconds?: pulumi.Input<number>;
}

/** The public entry point: a load balancer spreading calls over the agents' data port 8080. */
export class Gateway extends pulumi.ComponentResource {
  public readonly endpointUrl: pulumi.Output<string>;
  public readonly dnsName: pulumi.Output<string>;
  public readonly loadBalancerArn: pulumi.Output<string>;
  public readonly targetGroupArn: pulumi.Output<string>;
  public readonly listenerPort: number;

  constructor(name: string, args: GatewayArgs, opts?: pulumi.ComponentResourceOptions) {
    super("snapfaas:index:Gateway", name, {}, opts);
    const kind = args.kind ?? "alb";
    const secure = args.certificateArn !== undefined;
    this.listenerPort = secure ? 443 : 80;

    const loadBalancer = new aws.lb.LoadBalancer(
      `${name}-lb`,
      {
        loadBalancerType: kind === "alb" ? "application" : "network",
        internal: false,
        subnets: args.subnetIds,
        securityGroups: [args.securityGroupId],
        ...(kind === "alb"
          ? { dropInvalidHeaderFields: true, idleTimeout: args.idleTimeoutSeconds ?? 60 }
          : { enableCrossZoneLoadBalancing: true }),
      },
      { parent: this },
    );
    const targets = new aws.lb.TargetGroup(
      `${name}-targets`,
      {
        vpcId: args.vpcId,
        port: DATA_PORT,
        protocol: kind === "alb" ? "HTTP" : "TCP",
        targetType: "instance",
        // Draining hosts finish their calls; the agent's drain timeout bounds this from the other side.
        deregistrationDelay: 60,
        healthCheck: {
          enabled: true,
          protocol: "HTTP",
          path: "/healthz",
          port: String(DATA_PORT),
          matcher: "200",
          interval: 10,
          healthyThreshold: 2,
          unhealthyThreshold: 3,
        },
      },
      { parent: this },
    );
    new aws.lb.Listener(
      `${name}-listener`,
      {
        loadBalancerArn: loadBalancer.arn,
        port: this.listenerPort,
        protocol: secure ? (kind === "alb" ? "HTTPS" : "TLS") : kind === "alb" ? "HTTP" : "TCP",
        ...(secure
          ? { certificateArn: args.certificateArn, sslPolicy: "ELBSecurityPolicy-TLS13-1-2-2021-06" }
          : {}),
        defaultActions: [{ type: "forward", targetGroupArn: targets.arn }],
      },
      { parent: this },
    );

    this.dnsName = loadBalancer.dnsName;
    this.loadBalancerArn = loadBalancer.arn;
    this.targetGroupArn = targets.arn;
    this.endpointUrl = pulumi.interpolate`${secure ? "https" : "http"}://${loadBalancer.dnsName}`;
    this.registerOutputs({
      endpointUrl: this.endpointUrl,
      dnsName: this.dnsName,
      loadBalancerArn: this.loadBalancerArn,
      targetGroupArn: this.targetGroupArn,
    });
  }
}
