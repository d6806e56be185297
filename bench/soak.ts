/**
 * Soak: a real agent (child process, process sandbox) under mixed load for a while, with redeploys and
 * short-lived functions deployed and deleted in between. Reports errors, latencies and the agent's
 * memory (VmRSS of its pid, sampled every second) after a warm-up.
 *
 *   node --import tsx bench/soak.ts --minutes 10 [--concurrency 8] [--out bench/results/soak.json]
 *
 * The test suite runs it for 12 seconds (test/hardening/soak.test.ts).
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { request } from "undici";
import { freePorts, startChildAgent } from "../test/helpers/child-agent.ts";
import { tarGz } from "../test/helpers/tar-builder.ts";

export interface SoakOptions {
  readonly durationMs: number;
  readonly concurrency: number;
  /** A redeploy (or a deploy + delete of a short-lived function) this often. */
  readonly deployEveryMs: number;
  /** Memory is compared from the end of this period on. */
  readonly warmupMs: number;
  readonly log?: (line: string) => void;
}

export interface SoakReport {
  readonly seconds: number;
  readonly calls: number;
  readonly callsPerSecond: number;
  readonly callErrors: number;
  readonly errorSamples: string[];
  readonly deploys: number;
  readonly deployErrors: number;
  readonly latencyMs: { p50: number; p99: number; max: number };
  readonly rssMiB: { afterWarmup: number; end: number; max: number; growth: number };
  readonly instanceFoldersAtEnd: number;
}

const HELLO = `exports.Hello = class Hello { hi(name) { return "hi " + name; } };`;
const ECHO = `exports.handler = async (event) => ({ statusCode: 200, body: event.body ?? "" });`;
const SLOW = `exports.Slow = class Slow { async nap(ms) { await new Promise((r) => setTimeout(r, ms)); return ms; } };`;
const versioned = (v: number) =>
  `exports.Ver = class Ver { which() { return ${v}; } work(n) { let s = 0; for (let i = 0; i < n; i++) s += i; return s; } };`;

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : 0;
}

export async function runSoak(opts: SoakOptions): Promise<SoakReport> {
  const log = opts.log ?? (() => undefined);
  const stateDir = await mkdtemp(path.join(tmpdir(), "faas-soak-"));
  const token = randomBytes(18).toString("base64url");
  const [port, adminPort] = await freePorts(2);
  const agent = await startChildAgent({
    stateDir,
    token,
    port: port!,
    adminPort: adminPort!,
    env: { FAAS_POOL_GENERIC: "2", FAAS_LOG_LEVEL: "warn" },
  });
  const admin = async (method: string, route: string, body?: Buffer) => {
    const res = await request(`${agent.adminUrl}${route}`, {
      method: method as "GET",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/gzip" },
      body,
    });
    return { status: res.statusCode, text: await res.body.text() };
  };
  const deploy = (name: string, code: string) =>
    admin("PUT", `/v1/functions/${name}`, tarGz([{ name: "index.js", data: code }]));

  const latencies: number[] = [];
  const errorSamples: string[] = [];
  let calls = 0;
  let callErrors = 0;
  let deploys = 0;
  let deployErrors = 0;
  const fail = (what: string) => {
    if (errorSamples.length < 20) errorSamples.push(what.slice(0, 300));
  };

  try {
    for (const [name, code] of [
      ["hello", HELLO],
      ["echo", ECHO],
      ["slow", SLOW],
      ["ver", versioned(0)],
    ] as const) {
      const res = await deploy(name, code);
      if (res.status !== 201) throw new Error(`deploy ${name}: ${res.status} ${res.text}`);
    }

    const kinds = [
      {
        path: "/hello",
        body: JSON.stringify({ jsonrpc: "2.0", method: "Hello.hi", params: ["soak"], id: 1 }),
      },
      { path: "/echo/x?y=1", body: randomBytes(512).toString("base64") },
      { path: "/slow", body: JSON.stringify({ jsonrpc: "2.0", method: "Slow.nap", params: [50], id: 2 }) },
      { path: "/ver", body: JSON.stringify({ jsonrpc: "2.0", method: "Ver.work", params: [20000], id: 3 }) },
    ];
    const started = Date.now();
    const endAt = started + opts.durationMs;
    const samples: Array<{ t: number; rss: number }> = [];
    const sampler = setInterval(
      () => samples.push({ t: Date.now() - started, rss: rssMiB(agent.pid) }),
      1000,
    );

    const worker = async (w: number) => {
      for (let i = w; Date.now() < endAt; i++) {
        const kind = kinds[i % kinds.length]!;
        const t0 = performance.now();
        try {
          const res = await request(`${agent.dataUrl}${kind.path}`, { method: "POST", body: kind.body });
          const text = await res.body.text();
          calls++;
          latencies.push(performance.now() - t0);
          if (res.statusCode !== 200) {
            callErrors++;
            fail(`${kind.path}: ${res.statusCode} ${text}`);
          }
        } catch (err) {
          calls++;
          callErrors++;
          fail(`${kind.path}: ${(err as Error).message}`);
        }
      }
    };
    const deployer = async () => {
      for (let v = 1; Date.now() < endAt; v++) {
        await new Promise((r) => setTimeout(r, opts.deployEveryMs));
        if (Date.now() >= endAt) break;
        // Alternate: a redeploy of a function under load, and a short-lived function deployed, called, deleted.
        const steps =
          v % 2 === 1
            ? [() => deploy("ver", versioned(v))]
            : [() => deploy(`temp-${v}`, HELLO), () => admin("DELETE", `/v1/functions/temp-${v}`)];
        for (const step of steps) {
          deploys++;
          const res = await step().catch((err: Error) => ({ status: 0, text: err.message }));
          if (res.status < 200 || res.status >= 300) {
            deployErrors++;
            fail(`deploy step ${v}: ${res.status} ${res.text}`);
          }
        }
        log(
          `${Math.round((Date.now() - started) / 1000)} s: ${calls} calls, ${callErrors} errors, rss ${rssMiB(agent.pid).toFixed(1)} MiB`,
        );
      }
    };
    await Promise.all([...Array.from({ length: opts.concurrency }, (_, w) => worker(w)), deployer()]);
    clearInterval(sampler);
    samples.push({ t: Date.now() - started, rss: rssMiB(agent.pid) });

    const seconds = (Date.now() - started) / 1000;
    const afterWarmup = samples.filter((s) => s.t >= opts.warmupMs);
    const baseline = afterWarmup[0]?.rss ?? samples[0]!.rss;
    const end = samples[samples.length - 1]!.rss;
    const max = Math.max(...afterWarmup.map((s) => s.rss), end);
    const sorted = [...latencies].sort((a, b) => a - b);
    const round = (n: number) => Math.round(n * 10) / 10;
    return {
      seconds: round(seconds),
      calls,
      callsPerSecond: round(calls / seconds),
      callErrors,
      errorSamples,
      deploys,
      deployErrors,
      latencyMs: {
        p50: round(quantile(sorted, 0.5)),
        p99: round(quantile(sorted, 0.99)),
        max: round(sorted[sorted.length - 1] ?? 0),
      },
      rssMiB: {
        afterWarmup: round(baseline),
        end: round(end),
        max: round(max),
        growth: round(end - baseline),
      },
      instanceFoldersAtEnd: (await readdir(path.join(stateDir, "run", "instances"))).length,
    };
  } finally {
    agent.child.kill("SIGTERM");
    await Promise.race([agent.exited, new Promise((r) => setTimeout(r, 10_000))]);
    if (agent.child.exitCode === null && agent.child.signalCode === null) agent.child.kill("SIGKILL");
    await rm(stateDir, { recursive: true, force: true });
  }
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1] === fileURLToPath(import.meta.url)) {
  const minutes = Number(arg("minutes") ?? (arg("seconds") ? Number(arg("seconds")) / 60 : 10));
  const durationMs = Math.round(minutes * 60_000);
  const report = await runSoak({
    durationMs,
    concurrency: Number(arg("concurrency") ?? 8),
    deployEveryMs: Number(arg("deploy-every-ms") ?? 5000),
    warmupMs: Math.min(60_000, Math.round(durationMs / 5)),
    log: (line) => console.error(line),
  });
  const text = `${JSON.stringify(report, null, 2)}\n`;
  const out = arg("out");
  if (out) {
    await mkdir(path.dirname(out), { recursive: true });
    await writeFile(out, text);
  }
  process.stdout.write(text);
  process.exit(report.callErrors === 0 && report.deployErrors === 0 ? 0 : 1);
}
