/**
 * A stand-in for the internet, for the egress suites of both drivers: a network namespace of the test's,
 * joined to the host by a veth that the agent is told is its uplink. It holds an HTTP server answering
 * who called it (on a TEST-NET address and on 169.254.169.254, the metadata address) and a tiny DNS
 * server answering one name, and it has no route back to the sandboxes' addresses: an answer only comes
 * back when the host masqueraded the call. The host routes the sandboxes' traffic (only theirs, by
 * source, and only what it forwards) to it with a policy rule, so only the agent's rules stand between a
 * sandbox and the fake metadata server, and the host's own routes stay as they are.
 * Needs root, iproute2 and a node to run the servers; turns ip_forward on and restores it at close.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { execa } from "execa";

/** The outside's HTTP server (TEST-NET-2), its DNS server, and the name it resolves (to the server). */
export const OUTSIDE_SERVER = "198.51.100.80";
export const OUTSIDE_DNS = "198.51.100.53";
export const OUTSIDE_NAME = "api.example.test";
export const METADATA_ADDRESS = "169.254.169.254";
/** The host's end of the uplink: what the outside sees a masqueraded call come from. */
export const UPLINK_ADDRESS = "100.127.254.1";

/** The outside's servers: HTTP answering who called, and DNS answering one name (NXDOMAIN otherwise). */
const SERVERS = `
const http = require("node:http");
const dgram = require("node:dgram");
const [, , dnsAddress, name, answer] = process.argv;
http.createServer((req, res) => {
  res.setHeader("content-type", "application/json");
  res.end(JSON.stringify({ from: req.socket.remoteAddress, to: req.socket.localAddress }));
}).listen(80, "0.0.0.0", () => {
  const udp = dgram.createSocket("udp4");
  udp.on("message", (q, rinfo) => {
    // The question: labels from byte 12 to the zero byte, then type and class.
    let i = 12; const labels = [];
    while (q[i] !== 0) { labels.push(q.subarray(i + 1, i + 1 + q[i]).toString()); i += q[i] + 1; }
    const qtype = q.readUInt16BE(i + 1);
    const question = q.subarray(12, i + 5);
    const known = labels.join(".").toLowerCase() === name;
    const found = known && qtype === 1;
    const head = Buffer.alloc(12);
    q.copy(head, 0, 0, 2);
    head.writeUInt16BE(0x8180 | (known ? 0 : 3), 2);
    head.writeUInt16BE(1, 4);
    head.writeUInt16BE(found ? 1 : 0, 6);
    const rr = Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, ...answer.split(".").map(Number)]);
    udp.send(Buffer.concat([head, question, found ? rr : Buffer.alloc(0)]), rinfo.port, rinfo.address);
  });
  udp.bind(53, dnsAddress, () => console.log("ready"));
});
`;

export interface Outside {
  /** The host's end of the veth: the agent's FAAS_EGRESS_UPLINK. */
  readonly uplink: string;
  /**
   * Routes what the host forwards from `sourceCidr` (the sandboxes' addresses) to the outside. The
   * host's own traffic from that range (its calls into microVMs, from the slots' host addresses) and
   * sandbox-to-sandbox traffic keep the main table. Once per outside.
   */
  route(sourceCidr: string): Promise<void>;
  /** Removes the policy rules, the veth and the namespace, stops the servers, restores ip_forward. */
  close(): Promise<void>;
}

const sh = (file: string, args: string[], input?: string) => execa(file, args, { input, timeout: 20_000 });

/** Builds the outside; `route()` then sends the sandboxes' traffic to it. */
export async function startOutside(): Promise<Outside> {
  const tag = randomBytes(2).toString("hex");
  const netns = `feo${tag}`;
  const uplink = `feo${tag}h`;
  const table = 7200 + (Number.parseInt(tag, 16) % 100) * 3;
  const script = path.join(tmpdir(), `faas-egress-outside-${tag}.cjs`);
  const ipForward = (await readFile("/proc/sys/net/ipv4/ip_forward", "utf8")).trim();
  let servers: ChildProcess | undefined;
  const close = async () => {
    servers?.kill("SIGKILL");
    await writeFile("/proc/sys/net/ipv4/ip_forward", ipForward);
    for (const priority of [table, table - 1, table - 2])
      await execa("ip", ["rule", "del", "priority", String(priority)], { reject: false });
    await execa("ip", ["route", "flush", "table", String(table)], { reject: false });
    await execa("ip", ["link", "delete", uplink], { reject: false });
    await execa("ip", ["netns", "delete", netns], { reject: false });
    await rm(script, { force: true });
  };
  try {
    await writeFile("/proc/sys/net/ipv4/ip_forward", "1");
    await sh("ip", ["netns", "add", netns]);
    await sh("ip", ["link", "add", uplink, "type", "veth", "peer", "name", "eth0", "netns", netns]);
    await sh("ip", ["addr", "add", `${UPLINK_ADDRESS}/30`, "dev", uplink]);
    await sh("ip", ["link", "set", uplink, "up"]);
    await sh(
      "ip",
      ["-n", netns, "-batch", "-"],
      [
        "link set lo up",
        "link set eth0 up",
        "addr add 100.127.254.2/30 dev eth0",
        ...[OUTSIDE_SERVER, OUTSIDE_DNS, METADATA_ADDRESS].map((a) => `addr add ${a}/32 dev lo`),
        "",
      ].join("\n"),
    );
    await sh("ip", [
      "route",
      "add",
      "default",
      "via",
      "100.127.254.2",
      "dev",
      uplink,
      "table",
      String(table),
    ]);
    await writeFile(script, SERVERS);
    const started = spawn(
      "ip",
      ["netns", "exec", netns, process.execPath, script, OUTSIDE_DNS, OUTSIDE_NAME, OUTSIDE_SERVER],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    servers = started;
    await new Promise<void>((resolve, reject) => {
      started.stdout!.on("data", (d: Buffer) => d.toString().includes("ready") && resolve());
      started.on("exit", (code) => reject(new Error(`the outside's servers exited (${code})`)));
    });
    const route = async (sourceCidr: string) => {
      const from = ["from", sourceCidr];
      // Sandbox to sandbox keeps the host's own routes, so the agent's rules are what refuses it.
      await sh("ip", [
        "rule",
        "add",
        ...from,
        "to",
        sourceCidr,
        "lookup",
        "main",
        "priority",
        String(table - 2),
      ]);
      // `iif lo` is the host's own traffic: its calls into the sandboxes stay on the main table.
      await sh("ip", ["rule", "add", ...from, "iif", "lo", "lookup", "main", "priority", String(table - 1)]);
      await sh("ip", ["rule", "add", ...from, "lookup", String(table), "priority", String(table)]);
    };
    return { uplink, route, close };
  } catch (err) {
    await close();
    throw err;
  }
}
