/**
 * The benchmark suite (`npm run bench`): every figure is measured in this one run on this machine, and
 * the agent's figures are given against a baseline from the same run. Prints a table and writes JSON to
 * bench/results/. Needs root and bubblewrap (the process sandbox jails); says so and exits otherwise.
 *
 *   npm run bench [-- --seconds 5 --quick]
 *   npm run bench -- --first-only   # the bare starts, then first calls (warm and empty pool) and the burst
 */
import { spawn } from "node:child_process";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { cpus, tmpdir, totalmem } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { execa } from "execa";
import { timeCodeDiskBuild, timeFolderCopy } from "../guest-images/code-disk/bench.ts";
import { processBaseNode } from "../guest-images/process/bake.ts";
import { buildRuntime } from "../guest-images/runtime/build.ts";
import { packFunction } from "../host-agent/cli/pack.ts";
import { systemClock } from "../host-agent/clock.ts";
import { GuestClient } from "../host-agent/guest/client.ts";
import { unpackBundle } from "../host-agent/registry/bundle.ts";
import { LocalRegistryBackend } from "../host-agent/registry/local-backend.ts";
import { Registry } from "../host-agent/registry/registry.ts";
import { findOnPath } from "../host-agent/sandbox/process/preflight.ts";
import { type CpuPerCall, type CpuRole, cpuPerCall, descendants } from "./lib/cpu.ts";
import { type LoadResult, runLoad, timeFirstByte } from "./lib/load.ts";
import { startOneHopProxy, startWorkerd, workerdBinary } from "./lib/peers.ts";
import {
  type AgentProcess,
  metric,
  REPO_ROOT,
  startAgent,
  startBaseline,
  stopChild,
} from "./lib/processes.ts";
import { HELLO_WORLD_CALL, percentile } from "./rtt-stats.ts";
import { vmLane, vmLaneRows } from "./vm-lane.ts";

const { values: args } = parseArgs({
  options: {
    seconds: { type: "string", default: "5" },
    quick: { type: "boolean", default: false },
    "warm-only": { type: "boolean", default: false },
    "first-only": { type: "boolean", default: false },
  },
});
const SECONDS = Number(args.seconds);
const QUICK = args.quick === true;
/** Only the warm phases (bare server, peers, agent): for working on the warm path. */
const WARM_ONLY = args["warm-only"] === true;
/** Only the bare starts (the cold-start yardstick), first calls and the burst: for working on first calls. */
const FIRST_ONLY = args["first-only"] === true;
/** The second agent row: hello-world allowed this many calls at once per instance. */
const SHARED_CONCURRENCY = 16;

interface Summary {
  readonly n: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}
const summary = (samples: number[]): Summary => ({
  n: samples.length,
  p50Ms: percentile(samples, 50),
  p99Ms: percentile(samples, 99),
});
const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const LIMITS = { maxBundleBytes: 50 << 20, maxUnpackedBytes: 250 << 20, maxFiles: 10_000 };
const POOL_ENV = { FAAS_POOL_MAX_INSTANCES: "48", FAAS_INSTANCE_MEMORY_MIB: "128", FAAS_IDLE_TTL_MS: "1000" };

function log(line: string): void {
  process.stderr.write(`bench: ${line}\n`);
}

/** A bare `node` start of the guest runtime: spawn -> ready -> load hello-world -> first answer. */
async function bareStart(
  runtimeJs: string,
  blob: string | undefined,
  node: string,
  codeDir: string,
  work: string,
  i: number,
): Promise<number> {
  const sock = path.join(work, `bare-${i}.sock`);
  const t0 = performance.now();
  const argv = blob
    ? ["--snapshot-blob", blob, "--", "--listen", `unix:${sock}`, "--code", codeDir]
    : [runtimeJs, "--listen", `unix:${sock}`, "--code", codeDir];
  const child = spawn(node, argv, { stdio: ["ignore", "pipe", "ignore"] });
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on("line", (l) => {
      if (l.includes('"ready"')) resolve();
    });
    child.once("exit", () => reject(new Error("runtime exited")));
  });
  const client = new GuestClient({ kind: "unix", socketPath: sock });
  await client.load({ functionName: "hello-world", entry: "index.js" });
  const res = await client.forward({
    method: "POST",
    path: "/hello-world",
    headers: {},
    body: Buffer.from(HELLO_WORLD_CALL),
    signal: AbortSignal.timeout(10_000),
    maxResponseBytes: 1 << 20,
  });
  const ms = performance.now() - t0;
  if (res.status !== 200) throw new Error(`bare runtime answered ${res.status}`);
  await client.close();
  child.kill("SIGKILL");
  return ms;
}

async function deploy(
  agent: AgentProcess,
  name: string,
  bundle: Buffer,
  config?: Record<string, unknown>,
): Promise<void> {
  const headers = config
    ? { "x-faas-config": Buffer.from(JSON.stringify(config)).toString("base64") }
    : undefined;
  const res = await agent.adminCall("PUT", `/v1/functions/${name}`, bundle, headers);
  if (res.status >= 300) throw new Error(`deploy ${name}: ${res.status} ${res.text}`);
}

async function poolState(agent: AgentProcess): Promise<{ instances: Record<string, number> }> {
  return JSON.parse((await agent.adminCall("GET", "/v1/pool")).text) as { instances: Record<string, number> };
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return true;
    await sleep(20);
  }
  return false;
}

/** Waits until every specialized instance stopped (idle TTL): the functions are "never called" again. */
async function waitScaledToZero(agent: AgentProcess): Promise<void> {
  await waitFor(async () => {
    const s = await poolState(agent);
    return (s.instances.idle ?? 0) + (s.instances.busy ?? 0) + (s.instances.specializing ?? 0) === 0;
  }, 15_000);
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0 || !findOnPath("bwrap")) {
    console.log("bench: needs root and bubblewrap (the process sandbox's jails); nothing measured");
    return;
  }
  const work = await mkdtemp(path.join(tmpdir(), "faas-bench-"));
  // The jails' uids must traverse it to reach the shared base.
  await chmod(work, 0o711);
  const baseDir = path.join(work, "bases");
  const results: Record<string, unknown> = {
    machine: {
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model,
      memoryGiB: round(totalmem() / 2 ** 30, 1),
      node: process.version,
    },
    guestNode: "",
    date: new Date().toISOString(),
    seconds: SECONDS,
  };
  const hello = await packFunction(path.join(REPO_ROOT, "examples", "hello-world"));
  try {
    // 1. Bare starts of the guest runtime, the yardstick for cold starts.
    log("bare node starts of the guest runtime");
    // The yardstick runs the node the jails run: the base's pinned release, not the agent's.
    const guestNode = await processBaseNode(undefined, log);
    results.guestNode = (await execa(guestNode, ["--version"])).stdout.trim();
    const runtime = await buildRuntime(path.join(work, "runtime"), guestNode);
    const helloDir = path.join(work, "hello-code");
    await unpackBundle(hello, helloDir, LIMITS);
    const runs = WARM_ONLY ? 1 : QUICK ? 5 : 20;
    const bare: number[] = [];
    const fromSnapshot: number[] = [];
    for (let i = 0; i < runs; i++)
      bare.push(await bareStart(runtime.bundlePath, undefined, guestNode, helloDir, work, i));
    for (let i = 0; i < runs; i++)
      fromSnapshot.push(
        await bareStart(runtime.bundlePath, runtime.snapshotPath, guestNode, helloDir, work, 100 + i),
      );
    results.bareNodeStart = summary(bare);
    results.bareSnapshotStart = summary(fromSnapshot);

    if (FIRST_ONLY) {
      await firstCallPhases(results, baseDir, hello, bare);
      printFirst(results);
      console.log(`\nresults: ${path.relative(process.cwd(), await writeResults(results))}`);
      return;
    }

    // 1b. Code disk builds of the same function (what a microVM deploy adds), against a plain copy.
    log("code disk builds");
    const copy = await timeFolderCopy(helloDir, runs);
    const rofs = await timeCodeDiskBuild("rofs", runs, helloDir);
    const squashfs = findOnPath("mksquashfs")
      ? await timeCodeDiskBuild("squashfs", runs, helloDir)
      : undefined;
    results.codeDiskBuild = {
      folderCopy: copy,
      rofs: { ...rofs, ratioToCopy: round(rofs.p50Ms / copy.p50Ms) },
      squashfs: squashfs
        ? { ...squashfs, ratioToCopy: round(squashfs.p50Ms / copy.p50Ms) }
        : "mksquashfs missing",
    };

    // 2. Warm calls: the bare server, the peers (one-hop proxy, workerd) and the agent, each at c=1 and
    // c=16, with the CPU each process spends per call.
    const warmPhases = async (origin: string, roles: () => CpuRole[], settled?: () => Promise<boolean>) => {
      await runLoad(origin, "/hello-world", HELLO_WORLD_CALL, 16, 1);
      // Warm means no instance starts during the phase: the agent's pool grows to c=16 first.
      for (let i = 0; settled && i < 20 && !(await settled()); i++)
        await runLoad(origin, "/hello-world", HELLO_WORLD_CALL, 16, 1);
      const c1 = await cpuPerCall(roles(), () =>
        runLoad(origin, "/hello-world", HELLO_WORLD_CALL, 1, SECONDS),
      );
      const c16 = await cpuPerCall(roles(), () =>
        runLoad(origin, "/hello-world", HELLO_WORLD_CALL, 16, SECONDS),
      );
      return { c1, c16 };
    };
    log("warm calls: bare server");
    const baseline = await startBaseline();
    const bareWarm = await warmPhases(baseline.origin, () => [
      { name: "server", pids: [baseline.child.pid!] },
    ]);
    await stopChild(baseline.child);

    log("warm calls: one-hop proxy");
    const proxy = await startOneHopProxy();
    const proxyWarm = await warmPhases(proxy.origin, () => {
      const [front, runtime] = proxy.pids();
      return [
        { name: "proxy", pids: [front!] },
        { name: "runtime", pids: [runtime!] },
      ];
    });
    await proxy.stop();

    const workerdBin = workerdBinary();
    let workerdWarm: Awaited<ReturnType<typeof warmPhases>> | string;
    if ("missing" in workerdBin) workerdWarm = workerdBin.missing;
    else {
      log("warm calls: workerd");
      try {
        const workerd = await startWorkerd(workerdBin.path);
        try {
          workerdWarm = await warmPhases(workerd.origin, () => [{ name: "workerd", pids: workerd.pids() }]);
        } finally {
          await workerd.stop();
        }
      } catch (err) {
        workerdWarm = (err as Error).message;
      }
    }
    if (typeof workerdWarm === "string") log(`workerd skipped: ${workerdWarm}`);

    /** The agent's warm phases for hello-world deployed with this configuration (one agent each). */
    const agentPhases = async (config?: Record<string, unknown>) => {
      const agent = await startAgent({ FAAS_BASE_DIR: baseDir });
      try {
        await deploy(agent, "hello-world", hello, config);
        const starts = () => metric(agent, "faas_instance_starts_total", 'result="ok"');
        let startsSeen = -1;
        const phases = await warmPhases(
          agent.origin,
          () => [
            { name: "agent", pids: [agent.child.pid!] },
            // The jails: bwrap and the runtime's node, everything the agent started.
            { name: "guest", pids: descendants(agent.child.pid!) },
          ],
          async () => {
            const now = await starts();
            const same = now === startsSeen;
            startsSeen = now;
            return same;
          },
        );
        return { phases, startsDuringPhases: (await starts()) - startsSeen };
      } finally {
        await stopChild(agent.child);
      }
    };
    log("warm calls: through the agent");
    const { phases: agentWarm, startsDuringPhases } = await agentPhases();
    // The same function allowed 16 calls at once per instance (`concurrency`): one jail at c=16.
    log(`warm calls: through the agent, concurrency ${SHARED_CONCURRENCY}`);
    const { phases: sharedWarm, startsDuringPhases: sharedStarts } = await agentPhases({
      concurrency: SHARED_CONCURRENCY,
    });
    const warm1 = agentWarm.c1.result;
    const base1 = bareWarm.c1.result;
    const row = (r: LoadResult, bare: LoadResult) => ({
      rps: round(r.rps, 0),
      p50Ms: round(r.p50Ms, 3),
      p99Ms: round(r.p99Ms, 3),
      addedP50Ms: round(r.p50Ms - bare.p50Ms, 3),
      addedP99Ms: round(r.p99Ms - bare.p99Ms, 3),
      errors: r.errors,
    });
    const level = (c: "c1" | "c16") => {
      const bare = bareWarm[c].result;
      const agent = agentWarm[c].result;
      const shared = sharedWarm[c].result;
      const prox = proxyWarm[c].result;
      const wd = typeof workerdWarm === "string" ? undefined : workerdWarm[c].result;
      return {
        bare: row(bare, bare),
        proxy: row(prox, bare),
        ...(wd ? { workerd: row(wd, bare) } : {}),
        agent: row(agent, bare),
        agentShared: row(shared, bare),
        ratios: {
          agentToBare: round(agent.rps / bare.rps),
          sharedToBare: round(shared.rps / bare.rps),
          sharedToProxy: round(shared.rps / prox.rps),
          ...(wd ? { sharedToWorkerd: round(shared.rps / wd.rps) } : {}),
          proxyToBare: round(prox.rps / bare.rps),
          ...(wd ? { workerdToBare: round(wd.rps / bare.rps) } : {}),
          agentToProxy: round(agent.rps / prox.rps),
          ...(wd ? { agentToWorkerd: round(agent.rps / wd.rps) } : {}),
        },
        cpuPerCallUs: {
          bare: bareWarm[c].cpu,
          proxy: proxyWarm[c].cpu,
          ...(typeof workerdWarm === "string" ? {} : { workerd: workerdWarm[c].cpu }),
          agent: agentWarm[c].cpu,
          agentShared: sharedWarm[c].cpu,
        },
      };
    };
    results.warm = {
      c1: level("c1"),
      c16: level("c16"),
      /** Instances the agent started during its two measured phases (0: every call was warm). */
      agentInstanceStartsDuringPhases: startsDuringPhases,
      agentSharedInstanceStartsDuringPhases: sharedStarts,
      sharedConcurrency: SHARED_CONCURRENCY,
      ...(typeof workerdWarm === "string" ? { workerdSkipped: workerdWarm } : {}),
    };

    if (WARM_ONLY) {
      printWarm(results);
      console.log(`\nresults: ${path.relative(process.cwd(), await writeResults(results))}`);
      return;
    }

    await firstCallPhases(results, baseDir, hello, bare);

    // 7. Warm-call overhead with 10,000 registered functions against 1.
    log("10,000 registered functions");
    const manyState = await mkdtemp(path.join(tmpdir(), "faas-bench-many-"));
    const registry = new Registry(
      new LocalRegistryBackend(manyState),
      path.join(manyState, "code"),
      LIMITS,
      systemClock,
    );
    await registry.init();
    const prepared = await registry.prepare("hello-world", hello);
    await registry.commit(prepared);
    const backend = new LocalRegistryBackend(manyState);
    const total = QUICK ? 1000 : 10_000;
    for (let i = 1; i < total; i++) {
      await backend.putRecord({ ...prepared.record, name: `f-${String(i).padStart(5, "0")}` });
    }
    const agentE = await startAgent({ FAAS_BASE_DIR: baseDir }, manyState);
    await runLoad(agentE.origin, "/hello-world", HELLO_WORLD_CALL, 16, 1);
    const many1 = await runLoad(agentE.origin, "/hello-world", HELLO_WORLD_CALL, 1, SECONDS);
    await stopChild(agentE.child);
    await rm(manyState, { recursive: true, force: true });
    const overhead1 = warm1.p50Ms - base1.p50Ms;
    const overheadMany = many1.p50Ms - base1.p50Ms;
    results.scale = {
      functions: total,
      oneFunctionP50Ms: round(warm1.p50Ms, 3),
      manyFunctionsP50Ms: round(many1.p50Ms, 3),
      overheadOneMs: round(overhead1, 3),
      overheadManyMs: round(overheadMany, 3),
      overheadRatio: round(overheadMany / overhead1),
      manyFunctionsRps: round(many1.rps, 0),
    };

    // 8. The microVM lane (its own module; one line when QEMU or the guest image is absent).
    results.vm = await vmLane({ seconds: SECONDS, quick: QUICK, hello, log });
  } finally {
    await rm(work, { recursive: true, force: true });
  }

  const file = await writeResults(results);
  printTable(results);
  console.log(`\nresults: ${path.relative(process.cwd(), file)}`);
}

/** Phases 4 to 6: first calls with a warm generic pool and with an empty one, then the burst. */
async function firstCallPhases(
  results: Record<string, unknown>,
  baseDir: string,
  hello: Buffer,
  bare: number[],
): Promise<void> {
  // 4. First call of never-called functions while the generic pool is warm.
  log("first calls with a warm generic pool");
  const fnCount = QUICK ? 10 : 50;
  const agentB = await startAgent({
    ...POOL_ENV,
    FAAS_BASE_DIR: baseDir,
    FAAS_POOL_GENERIC: "4",
    FAAS_POOL_GENERIC_MAX: "8",
  });
  for (let i = 0; i < fnCount; i++) await deploy(agentB, `fn-${i}`, hello);
  await waitScaledToZero(agentB);
  const warmGeneric: number[] = [];
  let misses = 0;
  for (let i = 0; i < fnCount; i++) {
    await waitFor(async () => ((await poolState(agentB)).instances.generic ?? 0) >= 2, 5_000);
    const { ms, status } = await timeFirstByte(agentB.origin, `/fn-${i}`, HELLO_WORLD_CALL);
    if (status !== 200) misses++;
    warmGeneric.push(ms);
  }
  results.firstCallWarmPool = { ...summary(warmGeneric), errors: misses, functions: fnCount };
  await stopChild(agentB.child);

  // 5. First call with an empty pool (every call starts an instance).
  log("first calls with an empty pool");
  const coldCount = QUICK ? 5 : 20;
  const agentC = await startAgent({
    ...POOL_ENV,
    FAAS_BASE_DIR: baseDir,
    FAAS_POOL_GENERIC: "0",
    FAAS_POOL_GENERIC_MAX: "0",
  });
  for (let i = 0; i < coldCount; i++) await deploy(agentC, `cold-${i}`, hello);
  await waitScaledToZero(agentC);
  const cold: number[] = [];
  let coldErrors = 0;
  for (let i = 0; i < coldCount; i++) {
    const { ms, status } = await timeFirstByte(agentC.origin, `/cold-${i}`, HELLO_WORLD_CALL);
    if (status !== 200) coldErrors++;
    cold.push(ms);
  }
  const coldSummary = summary(cold);
  results.firstCallEmptyPool = {
    ...coldSummary,
    errors: coldErrors,
    ratioToBareNodeStart: round(coldSummary.p50Ms / percentile(bare, 50)),
  };
  await stopChild(agentC.child);

  // 6. Burst: 200 simultaneous first calls over 20 new functions.
  log("burst");
  const burstFns = 20;
  const perFn = QUICK ? 5 : 10;
  const agentD = await startAgent({
    ...POOL_ENV,
    FAAS_BASE_DIR: baseDir,
    FAAS_POOL_GENERIC: "2",
    FAAS_POOL_MAX_STARTING: "8",
  });
  for (let i = 0; i < burstFns; i++) await deploy(agentD, `burst-${i}`, hello);
  await waitScaledToZero(agentD);
  const startsBefore = await metric(agentD, "faas_instance_starts_total", 'result="ok"');
  const calls: Array<Promise<{ ms: number; status: number }>> = [];
  for (let k = 0; k < perFn; k++) {
    for (let i = 0; i < burstFns; i++)
      calls.push(timeFirstByte(agentD.origin, `/burst-${i}`, HELLO_WORLD_CALL));
  }
  const burst = await Promise.all(calls.map((c) => c.catch(() => ({ ms: Number.NaN, status: 0 }))));
  const startsAfter = await metric(agentD, "faas_instance_starts_total", 'result="ok"');
  const specialized = await metric(agentD, "faas_pool_acquire_total", 'result="generic"');
  const coldStarted = await metric(agentD, "faas_pool_acquire_total", 'result="cold"');
  results.burst = {
    calls: burst.length,
    functions: burstFns,
    errors: burst.filter((b) => b.status !== 200).length,
    ...summary(burst.filter((b) => b.status === 200).map((b) => b.ms)),
    instancesStarted: startsAfter - startsBefore,
    instancesSpecializedForCalls: specialized + coldStarted,
    concurrencyNeeded: burstFns,
  };
  await stopChild(agentD.child);
}

/** bench/results/<date>.json (not committed). */
async function writeResults(results: Record<string, unknown>): Promise<string> {
  const outDir = path.join(REPO_ROOT, "bench", "results");
  await mkdir(outDir, { recursive: true });
  const file = path.join(outDir, `${(results.date as string).replace(/[:.]/g, "-")}.json`);
  await writeFile(file, `${JSON.stringify(results, null, 2)}\n`);
  return file;
}

// biome-ignore lint/suspicious/noExplicitAny: the results object is plain JSON built above.
function printTable(r: Record<string, any>): void {
  const rows: Array<[string, string, string]> = [
    [
      "bare node start of the runtime (spawn..first answer)",
      `p50 ${r.bareNodeStart.p50Ms.toFixed(1)} ms`,
      `p99 ${r.bareNodeStart.p99Ms.toFixed(1)} ms`,
    ],
    [
      "same, from the V8 startup snapshot",
      `p50 ${r.bareSnapshotStart.p50Ms.toFixed(1)} ms`,
      `p99 ${r.bareSnapshotStart.p99Ms.toFixed(1)} ms`,
    ],
    [
      "code disk build, hello-world (rofs / squashfs)",
      `p50 ${r.codeDiskBuild.rofs.p50Ms.toFixed(1)} ms / ${typeof r.codeDiskBuild.squashfs === "string" ? r.codeDiskBuild.squashfs : `${r.codeDiskBuild.squashfs.p50Ms.toFixed(1)} ms`}`,
      `${r.codeDiskBuild.rofs.ratioToCopy} x a plain copy (p50 ${r.codeDiskBuild.folderCopy.p50Ms.toFixed(2)} ms)`,
    ],
    ...warmRows(r.warm),
    [
      `first call, warm generic pool (${r.firstCallWarmPool.functions} fns)`,
      `p50 ${r.firstCallWarmPool.p50Ms.toFixed(2)} ms`,
      `p99 ${r.firstCallWarmPool.p99Ms.toFixed(2)} ms, errors ${r.firstCallWarmPool.errors}`,
    ],
    [
      "first call, empty pool",
      `p50 ${r.firstCallEmptyPool.p50Ms.toFixed(1)} ms`,
      `p99 ${r.firstCallEmptyPool.p99Ms.toFixed(1)} ms, ${r.firstCallEmptyPool.ratioToBareNodeStart} x bare node start`,
    ],
    [
      `burst: ${r.burst.calls} calls over ${r.burst.functions} new fns`,
      `errors ${r.burst.errors}, p50 ${r.burst.p50Ms.toFixed(1)} ms, p99 ${r.burst.p99Ms.toFixed(1)} ms`,
      `instances started ${r.burst.instancesStarted}, specialized ${r.burst.instancesSpecializedForCalls} (needed ${r.burst.concurrencyNeeded})`,
    ],
    [
      `scale: ${r.scale.functions} functions vs 1`,
      `overhead p50 ${r.scale.overheadManyMs} ms vs ${r.scale.overheadOneMs} ms`,
      `ratio ${r.scale.overheadRatio}`,
    ],
  ];
  rows.push(...vmLaneRows(r.vm));
  const w0 = Math.max(...rows.map((x) => x[0].length));
  const w1 = Math.max(...rows.map((x) => x[1].length));
  console.log(
    `\nmachine: ${r.machine.cpus} x ${r.machine.cpuModel}, ${r.machine.memoryGiB} GiB, node ${r.machine.node} (agent), ${r.guestNode} (jails)`,
  );
  for (const [a, b, c] of rows) console.log(`${a.padEnd(w0)}  ${b.padEnd(w1)}  ${c}`);
  printCpu(r.warm);
}

// biome-ignore lint/suspicious/noExplicitAny: the results object is plain JSON built above.
function printFirst(r: Record<string, any>): void {
  const w = r.firstCallWarmPool;
  const c = r.firstCallEmptyPool;
  const b = r.burst;
  console.log(
    `bare node start of the runtime  p50 ${r.bareNodeStart.p50Ms.toFixed(1)} ms, p99 ${r.bareNodeStart.p99Ms.toFixed(1)} ms`,
  );
  console.log(
    `same, from the snapshot         p50 ${r.bareSnapshotStart.p50Ms.toFixed(1)} ms, p99 ${r.bareSnapshotStart.p99Ms.toFixed(1)} ms`,
  );
  console.log(
    `first call, warm generic pool   p50 ${w.p50Ms.toFixed(2)} ms, p99 ${w.p99Ms.toFixed(2)} ms, errors ${w.errors} (${w.functions} fns)`,
  );
  console.log(
    `first call, empty pool          p50 ${c.p50Ms.toFixed(1)} ms, p99 ${c.p99Ms.toFixed(1)} ms, ${c.ratioToBareNodeStart} x bare node start`,
  );
  console.log(
    `burst (${b.calls} calls, ${b.functions} fns)      errors ${b.errors}, p50 ${b.p50Ms.toFixed(1)} ms, p99 ${b.p99Ms.toFixed(1)} ms, started ${b.instancesStarted}, specialized ${b.instancesSpecializedForCalls}`,
  );
}

function printWarm(r: Record<string, unknown>): void {
  const rows = warmRows(r.warm as Record<string, unknown>);
  for (const [a, b, c] of rows) console.log(`${a.padEnd(30)}  ${b.padEnd(40)}  ${c}`);
  printCpu(r.warm as Record<string, unknown>);
}

// biome-ignore lint/suspicious/noExplicitAny: the results object is plain JSON built above.
function printCpu(w: Record<string, any>): void {
  console.log(
    "\nCPU per warm call, µs (user+kernel by process; machine = all CPUs' busy time, other work included):",
  );
  for (const c of ["c1", "c16"] as const) {
    for (const [target, cpu] of Object.entries(w[c].cpuPerCallUs) as Array<[string, CpuPerCall]>) {
      const parts = Object.entries(cpu.roles).map(([role, t]) => `${role} ${t.userUs}+${t.sysUs}`);
      console.log(`  ${c.padEnd(3)} ${target.padEnd(8)} ${parts.join(", ")}; machine ${cpu.machineUs}`);
    }
  }
}

const WARM_LABELS: Record<string, string> = {
  bare: "bare server",
  proxy: "one-hop proxy",
  agentShared: "agent, concurrency",
};

/** The warm rows: every target's throughput and latency against the bare server, and every ratio. */
// biome-ignore lint/suspicious/noExplicitAny: the results object is plain JSON built above.
function warmRows(w: Record<string, any>): Array<[string, string, string]> {
  const rows: Array<[string, string, string]> = [];
  for (const c of ["c1", "c16"] as const) {
    const l = w[c];
    const label = c === "c1" ? "c=1" : "c=16";
    for (const target of ["bare", "proxy", "workerd", "agent", "agentShared"]) {
      const t = l[target];
      if (!t) {
        if (target === "workerd") rows.push([`warm ${label}: workerd`, "skipped", w.workerdSkipped]);
        continue;
      }
      rows.push([
        `warm ${label}: ${WARM_LABELS[target] ?? target}${target === "agentShared" ? ` ${w.sharedConcurrency}` : ""}`,
        `${t.rps} rps, p50 ${t.p50Ms} ms`,
        target === "bare"
          ? `p99 ${t.p99Ms} ms`
          : `added p50 ${t.addedP50Ms} ms, p99 ${t.addedP99Ms} ms, errors ${t.errors}`,
      ]);
    }
    const q = l.ratios;
    if (c === "c16")
      rows.push([
        "warm: agent instance starts",
        `${w.agentInstanceStartsDuringPhases} during the measured phases`,
        `concurrency ${w.sharedConcurrency}: ${w.agentSharedInstanceStartsDuringPhases}`,
      ]);
    rows.push([
      `warm ${label}: ratios`,
      `agent/bare ${q.agentToBare}, proxy/bare ${q.proxyToBare}, workerd/bare ${q.workerdToBare ?? "-"}`,
      `agent/proxy ${q.agentToProxy}, agent/workerd ${q.agentToWorkerd ?? "-"}`,
    ]);
    rows.push([
      `warm ${label}: ratios, concurrency ${w.sharedConcurrency}`,
      `agent/bare ${q.sharedToBare}`,
      `agent/proxy ${q.sharedToProxy}, agent/workerd ${q.sharedToWorkerd ?? "-"}`,
    ]);
  }
  return rows;
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(`bench: failed: ${(err as Error).stack ?? err}`);
    process.exit(1);
  },
);
