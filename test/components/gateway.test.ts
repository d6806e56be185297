import assert from "node:assert/strict";
import { Gateway } from "../../components/gateway.ts";
import {
  findRegistered,
  promiseOf,
  registeredTypesAndNames,
  settled,
  usePulumiMocks,
} from "../support/pulumi-mocks.ts";

const base = { vpcId: "vpc-1", subnetIds: ["subnet-a", "subnet-b"], securityGroupId: "sg-lb" };

describe("Gateway", () => {
  usePulumiMocks();

  it("fronts the agents' port 8080 with an ALB, /healthz checks and an HTTP listener without a certificate", async () => {
    const gateway = new Gateway("gw", base);
    assert.equal(await promiseOf(gateway.endpointUrl), "http://gw-lb.elb.mock.amazonaws.com");
    await settled(gateway);
    assert.deepEqual(registeredTypesAndNames(), [
      "aws:lb/listener:Listener gw-listener",
      "aws:lb/loadBalancer:LoadBalancer gw-lb",
      "aws:lb/targetGroup:TargetGroup gw-targets",
      "snapfaas:index:Gateway gw",
    ]);
    const lb = findRegistered("aws:lb/loadBalancer:LoadBalancer", "gw-lb").inputs;
    assert.equal(lb.loadBalancerType, "application");
    assert.equal(lb.dropInvalidHeaderFields, true);
    assert.deepEqual(lb.securityGroups, ["sg-lb"]);
    const targets = findRegistered("aws:lb/targetGroup:TargetGroup", "gw-targets").inputs;
    assert.equal(targets.port, 8080);
    assert.equal(targets.protocol, "HTTP");
    assert.deepEqual(
      [
        targets.healthCheck.path,
        targets.healthCheck.port,
        targets.healthCheck.protocol,
        targets.healthCheck.matcher,
      ],
      ["/healthz", "8080", "HTTP", "200"],
    );
    const listener = findRegistered("aws:lb/listener:Listener", "gw-listener").inputs;
    assert.deepEqual([listener.port, listener.protocol, listener.certificateArn], [80, "HTTP", undefined]);
    assert.equal(gateway.listenerPort, 80);
  });

  it("serves HTTPS on 443 with a modern TLS policy when a certificate is configured", async () => {
    const certificateArn = "arn:aws:acm:us-east-1:123456789012:certificate/abc";
    const gateway = new Gateway("gw", { ...base, certificateArn });
    assert.equal(await promiseOf(gateway.endpointUrl), "https://gw-lb.elb.mock.amazonaws.com");
    await settled(gateway);
    const listener = findRegistered("aws:lb/listener:Listener", "gw-listener").inputs;
    assert.deepEqual(
      [listener.port, listener.protocol, listener.certificateArn, listener.sslPolicy],
      [443, "HTTPS", certificateArn, "ELBSecurityPolicy-TLS13-1-2-2021-06"],
    );
  });

  it("builds an NLB with TCP targets and still checks /healthz over HTTP", async () => {
    const gateway = new Gateway("gw", { ...base, kind: "nlb" });
    await promiseOf(gateway.endpointUrl);
    await settled(gateway);
    assert.equal(
      findRegistered("aws:lb/loadBalancer:LoadBalancer", "gw-lb").inputs.loadBalancerType,
      "network",
    );
    const targets = findRegistered("aws:lb/targetGroup:TargetGroup", "gw-targets").inputs;
    assert.deepEqual(
      [targets.protocol, targets.healthCheck.protocol, targets.healthCheck.path],
      ["TCP", "HTTP", "/healthz"],
    );
    assert.equal(findRegistered("aws:lb/listener:Listener", "gw-listener").inputs.protocol, "TCP");
  });
});
