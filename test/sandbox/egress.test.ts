/** The process sandbox's egress layout, rules and host check (pure); the running agent is test/e2e/egress.test.ts. */
import assert from "node:assert/strict";
import { execa } from "execa";
import { type CommandRunner, execaRunner } from "../../host-agent/sandbox/command-runner.ts";
import { foreignForwardDrop, resolverOf } from "../../host-agent/sandbox/host-uplink.ts";
import {
  describeLink,
  EGRESS_LINKS,
  egressHostProblems,
  egressNames,
  hostEgressRuleset,
  jailDnsRuleset,
} from "../../host-agent/sandbox/process/egress.ts";
import { findOnPath } from "../../host-agent/sandbox/process/preflight.ts";
import { isRoot } from "../helpers/host.ts";

const ROUTE = { uplink: "eth0", dnsResolver: "10.0.0.2" };
const HEALTHY_FACTS = {
  isRoot: true,
  has: () => true,
  ipForward: "1\n",
  uplink: "eth0",
  dnsResolver: "10.0.0.2",
};

describe("process sandbox egress (pure)", () => {
  it("names an agent's links and table from its state folder, and carves its /24 into /30s", () => {
    const a = egressNames("/var/lib/faas");
    const b = egressNames("/var/lib/faas-2");
    assert.notEqual(a.vethPrefix, b.vethPrefix, "two agents never share names");
    assert.match(a.vethPrefix, /^fe[0-9a-f]{5}$/);
    assert.equal(a.table, `snapfaas_${a.vethPrefix}`);
    assert.match(a.subnetBase, /^10\.207\.\d{1,3}\.0$/);
    assert.deepEqual(egressNames("/x", "10.9.8.0/24").subnetBase, "10.9.8.0");
    const names = egressNames("/x", "10.9.8.0/24");
    assert.deepEqual(describeLink(names, 0), {
      index: 0,
      hostVeth: `${names.vethPrefix}-0`,
      hostAddress: "10.9.8.1",
      jailAddress: "10.9.8.2",
    });
    const last = describeLink(names, EGRESS_LINKS - 1);
    assert.equal(last.jailAddress, "10.9.8.254");
    assert.ok(last.hostVeth.length <= 15, "fits an interface name");
    assert.throws(() => describeLink(names, EGRESS_LINKS), /out of range/);
  });

  it("the host table drops what a jail must not reach, then lets it out of the uplink only, masqueraded", () => {
    const names = egressNames("/x", "10.9.8.0/24");
    const v = `"${names.vethPrefix}-*"`;
    const rules = hostEgressRuleset(names, ROUTE);
    const at = (line: string) => {
      const i = rules.indexOf(line);
      assert.ok(i >= 0, `missing: ${line}\n${rules}`);
      return i;
    };
    const accept = at(`iifname ${v} oifname "eth0" accept`);
    for (const drop of [
      `iifname ${v} oifname ${v} drop`,
      `iifname ${v} meta nfproto ipv6 drop`,
      `iifname ${v} ip daddr 127.0.0.0/8 drop`,
      `iifname ${v} ip daddr 169.254.0.0/16 ip daddr != 10.0.0.2 drop`,
      `oifname ${v} drop`,
    ]) {
      assert.ok(at(drop) < accept, `${drop} comes before the accept`);
    }
    assert.ok(at(`iifname ${v} drop`) > accept, "everything else from a jail is dropped");
    assert.match(rules, /chain input \{\n.*\n.*ct state new drop\n.*iifname "fe[0-9a-f]{5}-\*" drop\n/);
    at('oifname "eth0" ip saddr 10.9.8.0/24 masquerade');
    assert.match(rules, new RegExp(`^table inet ${names.table} \\{`));
  });

  it("the jail's table sends the loopback's DNS (UDP and TCP) to the resolver, from the link's address", () => {
    const rules = jailDnsRuleset("10.0.0.2");
    assert.match(rules, /ip daddr 127\.0\.0\.0\/8 udp dport 53 dnat to 10\.0\.0\.2/);
    assert.match(rules, /ip daddr 127\.0\.0\.0\/8 tcp dport 53 dnat to 10\.0\.0\.2/);
    assert.match(rules, /oifname "eth0" ip saddr 127\.0\.0\.0\/8 masquerade/);
  });

  it("nft accepts both tables as written", async function () {
    if (!isRoot || !findOnPath("nft")) {
      console.log("      skipped: needs root and nft (apt-get install -y nftables)");
      this.skip();
    }
    for (const rules of [
      hostEgressRuleset(egressNames("/x", "10.9.8.0/24"), ROUTE),
      jailDnsRuleset("10.0.0.2"),
    ]) {
      const check = await execa("nft", ["-c", "-f", "-"], { input: rules, reject: false });
      assert.equal(check.exitCode, 0, check.stderr);
    }
  });

  it("takes the first nameserver a jail can reach from resolv.conf", () => {
    assert.equal(resolverOf("# x\nnameserver 127.0.0.53\nnameserver 10.0.0.2\n"), "10.0.0.2");
    assert.equal(resolverOf("nameserver 127.0.0.53\noptions edns0\n"), undefined);
    assert.equal(resolverOf("nameserver fd00::1\n"), undefined);
  });

  it("names everything the host lacks for egress, each with its fix", () => {
    assert.deepEqual(egressHostProblems(HEALTHY_FACTS), []);
    assert.deepEqual(
      egressHostProblems({
        isRoot: false,
        has: (t) => t === "ip",
        ipForward: "0\n",
        uplink: undefined,
        dnsResolver: undefined,
      }),
      [
        "the agent does not run as root (egress links need CAP_NET_ADMIN)",
        "nft, nsenter not installed (apt-get install -y nftables util-linux)",
        "net.ipv4.ip_forward is off (sysctl -w net.ipv4.ip_forward=1)",
        "the host has no default route (or set FAAS_EGRESS_UPLINK to the interface out)",
        "no non-loopback nameserver in /etc/resolv.conf or /run/systemd/resolve/resolv.conf (set FAAS_EGRESS_DNS)",
      ],
    );
  });
});

describe("another firewall's forward drop (real nft, in a namespace of the test's)", function () {
  this.timeout(30_000);
  const ns = `fdt${process.pid % 10_000}`;
  // Every nft call of the check runs in the test's namespace: the host's own ruleset is never touched.
  const inNamespace: CommandRunner = (file, args, options) =>
    execaRunner("ip", ["netns", "exec", ns, file, ...args], options);
  const load = (ruleset: string) => execa("ip", ["netns", "exec", ns, "nft", "-f", "-"], { input: ruleset });

  before(async function () {
    if (!isRoot || findOnPath("nft") === undefined || findOnPath("ip") === undefined) {
      console.log("      skipped: needs root, ip and nft");
      this.skip();
    }
    await execa("ip", ["netns", "add", ns]);
  });
  after(async () => {
    await execa("ip", ["netns", "delete", ns], { reject: false });
  });

  it("names a Docker-style FORWARD policy drop with the fix, and not our own table or a chain that lets the links through", async () => {
    assert.equal(
      await foreignForwardDrop(inNamespace, ["snapfaas_fe123"], ["fe123"]),
      undefined,
      "nothing loaded",
    );
    // Our own table may drop by default: it is ours.
    await load(
      "table inet snapfaas_fe123 {\n  chain forward { type filter hook forward priority filter; policy drop; }\n}\n",
    );
    assert.equal(await foreignForwardDrop(inNamespace, ["snapfaas_fe123"], ["fe123"]), undefined);
    await load(
      'table ip filter {\n  chain FORWARD { type filter hook forward priority filter; policy drop; iifname "docker0" accept; }\n}\n',
    );
    const found = await foreignForwardDrop(inNamespace, ["snapfaas_fe123"], ["fe123"]);
    assert.match(
      found ?? "",
      /^the forward chain ip filter FORWARD drops forwarded traffic by default .* \(nft insert rule ip filter FORWARD iifname "fe123\*" accept;/,
    );
    // The fix it names, applied: the chain now lets the links through, and the check is satisfied.
    await execa("ip", [
      "netns",
      "exec",
      ns,
      "nft",
      "insert",
      "rule",
      "ip",
      "filter",
      "FORWARD",
      "iifname",
      "fe123*",
      "accept",
    ]);
    assert.equal(await foreignForwardDrop(inNamespace, ["snapfaas_fe123"], ["fe123"]), undefined);
    // And an egress host check names it among the problems.
    assert.ok(
      egressHostProblems({ ...HEALTHY_FACTS, foreignForwardDrop: found }).includes(found!),
      "the deploy's 409 carries it",
    );
  });
});
