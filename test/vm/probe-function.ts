/**
 * The function the VM scenarios deploy: a Lambda-style handler that reports what it sees from inside
 * its guest (randomness, clock, its code disk, the block devices, its TCP peers), tries connections,
 * a name lookup and an HTTP GET out of the guest, sleeps or exits on demand. Each deployment carries a
 * marker of its own, so two deployments are two different code disks.
 */
import { tarGz } from "../helpers/tar-builder.ts";

export const PROBE_SOURCE = `
const crypto = require("node:crypto");
const fs = require("node:fs");
const net = require("node:net");
const dns = require("node:dns");
const http = require("node:http");

// Drawn when the function loads, after the clone's /_faas/init: a name for this clone.
const CLONE = crypto.randomUUID();

// A listener inside the guest: the positive control of every reachability probe.
const control = net.createServer((s) => s.end()).listen(0, "127.0.0.1");

/** Remote IPv4 addresses of the guest's established TCP connections (the host's, when it calls in). */
function peers() {
  const out = new Set();
  for (const line of fs.readFileSync("/proc/net/tcp", "utf8").split("\\n").slice(1)) {
    const f = line.trim().split(/\\s+/);
    if (f.length < 4 || f[3] !== "01") continue;
    const hex = f[2].split(":")[0];
    const ip = [3, 2, 1, 0].map((i) => parseInt(hex.slice(i * 2, i * 2 + 2), 16)).join(".");
    if (ip !== "127.0.0.1") out.add(ip);
  }
  return [...out];
}

function connect(host, port, timeoutMs) {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (outcome) => { clearTimeout(timer); socket.destroy(); resolve(outcome); };
    const timer = setTimeout(() => done("timeout"), timeoutMs);
    socket.once("connect", () => done("connected"));
    socket.once("error", (err) => done(err.code || String(err)));
  });
}

function httpGet(url) {
  return new Promise((resolve) => {
    const req = http.get(url, { timeout: 4000 }, (res) => {
      let text = "";
      res.on("data", (c) => (text += c));
      res.on("end", () => resolve({ status: res.statusCode, body: text }));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", (e) => resolve({ error: e.code || e.message }));
  });
}

const json = (value, statusCode = 200) => ({
  statusCode,
  headers: { "content-type": "application/json" },
  body: JSON.stringify(value),
});

exports.handler = async (event) => {
  const path = event.rawPath;
  const query = new URLSearchParams(event.rawQueryString || "");
  if (path === "/facts") {
    return json({
      clone: CLONE,
      marker: JSON.parse(fs.readFileSync("/code/marker.json", "utf8")),
      random: Math.random(),
      uuid: crypto.randomUUID(),
      bytes: crypto.randomBytes(16).toString("hex"),
      now: Date.now(),
      clocksource: fs.readFileSync("/sys/devices/system/clocksource/clocksource0/current_clocksource", "utf8").trim(),
      uptime: Number(fs.readFileSync("/proc/uptime", "utf8").split(" ")[0]),
      peers: peers(),
    });
  }
  if (path === "/headers") return json(event.headers);
  if (path === "/disks") {
    const code = [];
    const walk = (dir) => {
      for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
        const p = dir + "/" + e.name;
        if (e.isDirectory()) walk(p); else code.push({ path: p, text: fs.readFileSync(p, "utf8") });
      }
    };
    walk("/code");
    const blockDevices = fs.readdirSync("/sys/block").filter((d) => /^vd/.test(d)).sort();
    const sha256 = {};
    for (const d of blockDevices) {
      if (d === "vda") continue;
      sha256[d] = crypto.createHash("sha256").update(fs.readFileSync("/dev/" + d)).digest("hex");
    }
    return json({ blockDevices, sha256, code });
  }
  if (path === "/reach") {
    // The body: the targets to connect to, or { targets, lookup (a name), get (a URL) }.
    const body = JSON.parse(event.body);
    const { targets, lookup: name = "registry.npmjs.org", get } = Array.isArray(body) ? { targets: body } : body;
    const controlPort = control.address().port;
    const results = await Promise.all(
      [{ host: "127.0.0.1", port: controlPort, control: true }, ...targets].map(async (t) => ({
        ...t,
        outcome: await connect(t.host, t.port, 3000),
      })),
    );
    const lookup = await Promise.race([
      dns.promises.lookup(name, 4).then((a) => "resolved " + a.address, (e) => e.code || String(e)),
      new Promise((r) => setTimeout(() => r("timeout"), 6000)),
    ]);
    const fetched = get ? await httpGet(get) : undefined;
    return json({ results, dns: lookup, get: fetched });
  }
  if (path === "/sleep") {
    await new Promise((r) => setTimeout(r, Number(query.get("ms") || "1000")));
    return json({ clone: CLONE, slept: true, peers: peers() });
  }
  if (path === "/exit") {
    // The runtime is the guest's PID 1: this ends the whole VM.
    process.exit(7);
  }
  return json({ error: "no such probe: " + path }, 404);
};
`;

/** The probe as a deployable bundle, with `marker` as /code/marker.json. */
export function probeBundle(marker: Record<string, unknown>): Buffer {
  return tarGz([
    { name: "index.js", data: PROBE_SOURCE },
    { name: "marker.json", data: JSON.stringify(marker) },
  ]);
}
