/**
 * The microVM lane of `npm run bench`: the agent on restored microVMs (the firecracker driver on the
 * QEMU backend, the local Linux base `faas start` bakes), measured through the same agent path as the
 * process sandbox's figures. Each figure is labelled with the accelerator it ran on: under TCG (no
 * usable KVM) every guest instruction is emulated, so TCG figures are budgets for the test lane, not
 * claims about a KVM host. Skips with one line without root, QEMU or the cached Linux image.
 *
 *   restore -> first byte   FAAS_POOL_GENERIC=0, function scaled to zero: restore, init, attach, load, call
 *   load (code attach)      a generic clone ready: attach the code disk, load, call
 *   warm call               hello-world JSON-RPC to one loaded clone, closed loop c=1
 */
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { LinuxImageUnavailable, linuxGuestImage } from "../guest-images/linux/local-image.ts";
import { localVmBase, localVmChoice, localVmPoolDefaults } from "../host-agent/cli/local-vm-base.ts";
import { decideAccelerator, probeAccelerator } from "../host-agent/sandbox/firecracker/qemu-accel.ts";
import { findOnPath } from "../host-agent/sandbox/process/preflight.ts";
import { runLoad, timeFirstByte } from "./lib/load.ts";
import { type AgentProcess, metric, startAgent, stopChild } from "./lib/processes.ts";
import { HELLO_WORLD_CALL, percentile } from "./rtt-stats.ts";

export interface VmLaneFigure {
  readonly n: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly errors: number;
}

export interface VmLaneResult {
  /** "tcg" or "kvm": what every figure below ran on. */
  readonly accelerator: string;
  readonly acceleratorWhy: string;
  readonly bakeSeconds: number;
  /** The agent's own measure of an instance start (restore + guest ready + init), mean over the run. */
  readonly instanceStartMeanMs: number;
  readonly restoreToFirstByte: VmLaneFigure;
  readonly attachLoadFirstByte: VmLaneFigure;
  readonly warmC1: {
    readonly rps: number;
    readonly p50Ms: number;
    readonly p99Ms: number;
    readonly errors: number;
  };
}

export interface VmLaneOptions {
  readonly seconds: number;
  readonly quick: boolean;
  readonly hello: Buffer;
  readonly log: (line: string) => void;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const round = (n: number, digits = 1) => Math.round(n * 10 ** digits) / 10 ** digits;

/** Why the lane cannot run here (one line), or undefined. */
async function missing(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return "needs root (jails, network namespaces, cgroups)";
  if (!findOnPath("qemu-system-x86_64"))
    return "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)";
  try {
    await linuxGuestImage();
  } catch (err) {
    if (err instanceof LinuxImageUnavailable)
      return `no cached Linux guest image (npm run guest:linux): ${err.message}`;
    throw err;
  }
  return undefined;
}

async function deploy(agent: AgentProcess, name: string, bundle: Buffer): Promise<void> {
  const res = await agent.adminCall("PUT", `/v1/functions/${name}`, bundle);
  if (res.status >= 300) throw new Error(`deploy ${name}: ${res.status} ${res.text}`);
}

async function instances(agent: AgentProcess): Promise<Record<string, number>> {
  return (
    JSON.parse((await agent.adminCall("GET", "/v1/pool")).text) as { instances: Record<string, number> }
  ).instances;
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`vm lane: timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

const specialized = async (agent: AgentProcess) => {
  const s = await instances(agent);
  return (s.idle ?? 0) + (s.busy ?? 0) + (s.specializing ?? 0);
};

/** First calls of functions whose clones all stopped (idle TTL), each timed to its first byte. */
async function firstCalls(
  agent: AgentProcess,
  names: string[],
  before: () => Promise<void>,
): Promise<VmLaneFigure> {
  const ms: number[] = [];
  let errors = 0;
  await until("the functions to scale to zero", async () => (await specialized(agent)) === 0, 120_000);
  for (const name of names) {
    await before();
    const r = await timeFirstByte(agent.origin, `/${name}`, HELLO_WORLD_CALL);
    if (r.status === 200) ms.push(r.ms);
    else errors++;
    // The clone it got stops after the idle TTL: the next function starts from nothing again.
    await until("the clone to stop", async () => (await specialized(agent)) === 0, 120_000);
  }
  return { n: ms.length, p50Ms: round(percentile(ms, 50)), p99Ms: round(percentile(ms, 99)), errors };
}

/** Runs the lane, or says in one line why it cannot here. */
export async function vmLane(options: VmLaneOptions): Promise<VmLaneResult | { skipped: string }> {
  const why = await missing();
  if (why) {
    options.log(`vm lane skipped: ${why}`);
    return { skipped: why };
  }
  const { accelerator: choice } = localVmChoice(process.env);
  const decision = await decideAccelerator(choice, () =>
    probeAccelerator("/usr/bin/qemu-system-x86_64", "kvm", 10_000),
  );
  const accelerator = decision.accelerator;
  const work = await mkdtemp(path.join(tmpdir(), "faas-bench-vm-"));
  // QEMU is not chrooted and drops to the VM's uid: every folder above the jails must be traversable.
  await chmod(work, 0o755);
  const stateDir = path.join(work, "state");
  const env = { ...process.env, FAAS_VMM: "qemu", FAAS_VMM_ACCELERATOR: accelerator };
  const agents: AgentProcess[] = [];
  try {
    options.log(`vm lane (${accelerator.toUpperCase()}): baking the local Linux base`);
    const t0 = Date.now();
    const base = await localVmBase(stateDir, env, (line) => options.log(`vm lane: ${line}`));
    const bakeSeconds = (Date.now() - t0) / 1000;
    const agentEnv = (extra: Record<string, string>) => ({
      ...localVmPoolDefaults,
      FAAS_VMM: "qemu",
      FAAS_DRIVER: "firecracker",
      FAAS_BASE_DIR: base.baseDir,
      FAAS_FIRECRACKER_CONFIG: base.configFile,
      FAAS_IDLE_TTL_MS: "1000",
      FAAS_POOL_MAX_INSTANCES: "3",
      ...extra,
    });
    const runs = options.quick ? 2 : 4;
    const names = Array.from({ length: runs }, (_, i) => `vm-${i}`);

    // Restore -> first byte: nothing warm, every first call restores a clone for itself.
    options.log(`vm lane (${accelerator.toUpperCase()}): first calls on an empty pool`);
    const cold = await startAgent(agentEnv({ FAAS_POOL_GENERIC: "0", FAAS_POOL_GENERIC_MAX: "0" }), stateDir);
    agents.push(cold);
    for (const name of names) await deploy(cold, name, options.hello);
    const restoreToFirstByte = await firstCalls(cold, names, async () => {});
    const startSum = await metric(cold, "faas_instance_start_seconds_sum");
    const startCount = await metric(cold, "faas_instance_start_seconds_count");
    await stopChild(cold.child);

    // Load (code attach): a generic clone is ready before each first call.
    options.log(`vm lane (${accelerator.toUpperCase()}): first calls with a generic clone ready`);
    const warm = await startAgent(agentEnv({ FAAS_POOL_GENERIC: "1", FAAS_POOL_GENERIC_MAX: "1" }), stateDir);
    agents.push(warm);
    for (const name of names) await deploy(warm, name, options.hello);
    const attachLoadFirstByte = await firstCalls(warm, names, () =>
      until("a generic clone", async () => ((await instances(warm)).generic ?? 0) >= 1, 120_000),
    );

    // Warm calls to one loaded clone.
    options.log(`vm lane (${accelerator.toUpperCase()}): warm calls`);
    await runLoad(warm.origin, `/${names[0]}`, HELLO_WORLD_CALL, 1, 1);
    const load = await runLoad(warm.origin, `/${names[0]}`, HELLO_WORLD_CALL, 1, options.seconds);
    await stopChild(warm.child);
    return {
      accelerator,
      acceleratorWhy: decision.why,
      bakeSeconds: round(bakeSeconds),
      instanceStartMeanMs: startCount > 0 ? round((startSum / startCount) * 1000) : Number.NaN,
      restoreToFirstByte,
      attachLoadFirstByte,
      warmC1: {
        rps: round(load.rps),
        p50Ms: round(load.p50Ms, 2),
        p99Ms: round(load.p99Ms, 2),
        errors: load.errors,
      },
    };
  } finally {
    for (const a of agents) await stopChild(a.child);
    await rm(work, { recursive: true, force: true });
  }
}

/** The lane's rows for the bench table (figure, p50, other). */
export function vmLaneRows(r: VmLaneResult | { skipped: string }): Array<[string, string, string]> {
  if ("skipped" in r) return [["microVM lane", "skipped", r.skipped]];
  const label = r.accelerator.toUpperCase();
  return [
    [
      `microVM (${label}): restore -> first byte`,
      `p50 ${r.restoreToFirstByte.p50Ms} ms`,
      `p99 ${r.restoreToFirstByte.p99Ms} ms, n ${r.restoreToFirstByte.n}, errors ${r.restoreToFirstByte.errors}; instance start mean ${r.instanceStartMeanMs} ms`,
    ],
    [
      `microVM (${label}): load (code attach) -> first byte`,
      `p50 ${r.attachLoadFirstByte.p50Ms} ms`,
      `p99 ${r.attachLoadFirstByte.p99Ms} ms, n ${r.attachLoadFirstByte.n}, errors ${r.attachLoadFirstByte.errors}`,
    ],
    [
      `microVM (${label}): warm call c=1`,
      `p50 ${r.warmC1.p50Ms} ms`,
      `p99 ${r.warmC1.p99Ms} ms, ${r.warmC1.rps} rps, errors ${r.warmC1.errors}; bake ${r.bakeSeconds} s`,
    ],
  ];
}

/** `node --import tsx bench/vm-lane.ts [--seconds 5] [--quick]`: the lane alone, its rows and JSON. */
if (import.meta.url === `file://${process.argv[1]}`) {
  const { parseArgs } = await import("node:util");
  const { packFunction } = await import("../host-agent/cli/pack.ts");
  const { REPO_ROOT } = await import("./lib/processes.ts");
  const { values } = parseArgs({
    options: { seconds: { type: "string", default: "5" }, quick: { type: "boolean", default: false } },
  });
  const result = await vmLane({
    seconds: Number(values.seconds),
    quick: values.quick === true,
    hello: await packFunction(path.join(REPO_ROOT, "examples", "hello-world")),
    log: (line) => process.stderr.write(`bench: ${line}\n`),
  });
  for (const [a, b, c] of vmLaneRows(result)) console.log(`${a}  ${b}  ${c}`);
  console.log(JSON.stringify(result));
  process.exit(0);
}
