/**
 * Acceptance run for a real KVM host (not part of the test suite):
 *
 *   node --import tsx host-agent/sandbox/firecracker/acceptance.ts --base <base snapshot dir> \
 *     [--bake-from <inputs dir> --boot-args '<kernel args>'] \
 *     [--clones 20] [--config driver-config.json] [--code hello.img --code-hash <hash>] \
 *     [--entry index.js] [--invoke-body '<json>'] [--expect-result 'Hello world!']
 *
 * With --bake-from it first boots the inputs (kernel.elf, root.img, code-empty.img) in a jail, waits
 * for the guest runtime, pauses and snapshots into --base. Then it restores N jailed clones in parallel from the base snapshot (slots built ahead of time), attaches
 * the code disk when given, loads it and calls hello-world in each, and prints restore-to-first-byte
 * p50/p99 and jail setup time. It is a gate, not only a measurement (the bake's last step): it exits 1
 * unless every clone loaded the code and answered the call with HTTP 200 and the expected JSON-RPC
 * result. On a host that cannot run the configured VMM (Firecracker without a usable /dev/kvm, or the
 * binaries missing) it prints one line and exits 0 without measuring anything.
 */
import { access, constants, open, stat } from "node:fs/promises";
import { parseArgs } from "node:util";
import { request } from "undici";
import {
  type FirecrackerDriverConfig,
  parseFirecrackerDriverConfig,
} from "../../../contracts/firecracker-driver-config.ts";
import { hostFs } from "../../doctor/host-fs.ts";
import { GuestClient } from "../../guest/client.ts";
import { execaRunner } from "../command-runner.ts";
import { bakeBaseSnapshot } from "./bake-snapshot.ts";
import { spawnerFor } from "./create-driver.ts";
import { doctorConfigOf } from "./doctor-config.ts";
import { FirecrackerDriver, type FirecrackerInstance } from "./firecracker-driver.ts";
import { IdRangeAllocator } from "./id-range.ts";
import { NetworkSlotPool } from "./network-slots.ts";
import { firecrackerPreflight } from "./preflight.ts";

const HELLO_WORLD_CALL = JSON.stringify({
  jsonrpc: "2.0",
  method: "HelloWorldService.helloWorld",
  params: [],
  id: 1,
});

/** Why this host cannot run the acceptance, or undefined when it can. */
async function hostCannotRun(config: FirecrackerDriverConfig): Promise<string | undefined> {
  // QEMU on TCG needs no KVM; Firecracker (and QEMU told to use KVM) does.
  if (config.vmm === "firecracker" || config.qemu.accelerator === "kvm") {
    try {
      if (!(await stat("/dev/kvm")).isCharacterDevice()) return "/dev/kvm is not a character device";
      await (await open("/dev/kvm", "r+")).close();
    } catch (err) {
      return `/dev/kvm is not usable (${(err as NodeJS.ErrnoException).code ?? String(err)})`;
    }
  }
  const binaries =
    config.vmm === "firecracker" ? [config.firecrackerPath, config.jailerPath] : [config.qemu.path];
  for (const path of binaries) {
    try {
      await access(path, constants.X_OK);
    } catch {
      return `${path} is missing or not executable`;
    }
  }
  if (process.getuid?.() !== 0) return "the jailer needs root";
  return undefined;
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return (
    sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? Number.NaN
  );
}

/** Why an answer is not the expected JSON-RPC result, or undefined when it is. */
export function answerProblem(status: number, body: string, expected: string): string | undefined {
  if (status !== 200) return `answered HTTP ${status}: ${body.slice(0, 200)}`;
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return `answered 200 with a body that is not JSON: ${body.slice(0, 200)}`;
  }
  const result = (parsed as { result?: unknown } | null)?.result;
  if (result !== expected)
    return `answered ${JSON.stringify(result)} instead of ${JSON.stringify(expected)}: ${body.slice(0, 200)}`;
  return undefined;
}

function ms(n: number): string {
  return `${n.toFixed(2)} ms`;
}

export async function acceptance(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      base: { type: "string" },
      clones: { type: "string", default: "20" },
      config: { type: "string" },
      code: { type: "string" },
      "code-hash": { type: "string" },
      entry: { type: "string", default: "index.js" },
      "invoke-body": { type: "string", default: HELLO_WORLD_CALL },
      "expect-result": { type: "string", default: "Hello world!" },
      "bake-from": { type: "string" },
      "boot-args": { type: "string", default: "" },
    },
  });
  const raw: unknown = values.config ? JSON.parse(await hostFs.readFile(values.config)) : {};
  const config = parseFirecrackerDriverConfig(raw);
  const reason = await hostCannotRun(config);
  if (reason) {
    console.log(`acceptance: not run, nothing measured: ${reason}`);
    return 0;
  }
  if (!values.base) {
    console.error("acceptance: --base <base snapshot dir> is required");
    return 2;
  }
  const clones = Number.parseInt(values.clones ?? "20", 10);
  const slots = new NetworkSlotPool(
    { ...config.network, poolSize: Math.max(config.network.poolSize, clones) },
    execaRunner,
  );
  const spawnVmm = spawnerFor(config);
  const driver = new FirecrackerDriver(config, {
    spawnVmm,
    slots,
    preflight: () => firecrackerPreflight({ fs: hostFs, exec: execaRunner, config: doctorConfigOf(config) }),
  });
  for (const p of await driver.preflight())
    console.log(`preflight: ${p.fatal ? "FATAL" : "warn"}: ${p.what}`);
  await driver.init();
  if (values["bake-from"]) {
    const baked = await bakeBaseSnapshot(
      {
        id: "acceptance-bake",
        inputsDir: values["bake-from"],
        outDir: values.base,
        bootArgs: values["boot-args"] ?? "",
        // A cold boot takes longer than a restore: a minute at least, more when the config allows
        // restores more (an emulated CPU on a busy host boots in minutes).
        guestReadyTimeoutMs: Math.max(60_000, config.guestReadyTimeoutMs),
      },
      // The bake finishes before any clone starts, so it may borrow the first id of the range.
      {
        config,
        spawnVmm,
        slots,
        ids: new IdRangeAllocator(config.idRange.first, 1),
      },
    );
    console.log(
      `bake: boot to guest ready ${ms(baked.bootToReadyMs)}, pause + Full snapshot ${ms(baked.snapshotMs)}`,
    );
  }
  const base = { version: "acceptance", driver: "firecracker" as const, dir: values.base };
  const limits = {
    memoryMiB: config.limits.memMiB,
    cpuPercent: 100,
    pids: 256,
    tmpMiB: 64,
    openFiles: 1024,
    fileSizeMiB: 1024,
  };
  const instances: FirecrackerInstance[] = [];
  const results = await Promise.allSettled(
    Array.from({ length: clones }, async (_, i) => {
      const t0 = performance.now();
      const { instance, timings } = await driver.startTimed({ id: `acceptance-${i}`, base, limits });
      instances.push(instance);
      if (values.code) {
        await instance.attachCode({
          functionName: "hello-world",
          codeHash: values["code-hash"] ?? "hello",
          hostPath: values.code,
        });
      }
      const endpoint = instance.endpoint;
      if (endpoint.kind !== "tcp") throw new Error("firecracker instances are reached over TCP");
      // The pool's own order: attach, then load through the guest channel (with the instance's
      // control secret), then the call on the function's path.
      const guest = new GuestClient(endpoint, { loadTimeoutMs: 60_000 });
      try {
        if (values.code) await guest.load({ functionName: "hello-world", entry: values.entry ?? "index.js" });
      } finally {
        await guest.close();
      }
      // The runtime serves the loaded function under its own name, as the data plane forwards a call.
      const res = await request(`http://${endpoint.host}:${endpoint.port}/hello-world`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: values["invoke-body"],
      });
      // undici resolves once the status line and headers arrived: the first response bytes.
      const firstByte = performance.now();
      const body = await res.body.text();
      const problem = answerProblem(res.statusCode, body, values["expect-result"] ?? "");
      if (problem) throw new Error(`clone ${i}: ${problem}`);
      return {
        timings,
        restoreToFirstByteMs: firstByte - t0 - timings.jailSetupMs,
        status: res.statusCode,
        body,
      };
    }),
  );
  const ok = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  for (const r of results)
    if (r.status === "rejected") console.log(`clone failed: ${(r.reason as Error).message}`);
  if (ok[0]) console.log(`first answer: ${ok[0].status} ${ok[0].body.slice(0, 200)}`);
  const ttfb = ok.map((r) => r.restoreToFirstByteMs);
  const jail = ok.map((r) => r.timings.jailSetupMs);
  const restore = ok.map((r) => r.timings.restoreMs);
  console.log(`clones: ${ok.length}/${clones} answered`);
  console.log(
    `restore to first byte: p50 ${ms(percentile(ttfb, 50))}  p99 ${ms(percentile(ttfb, 99))}  (targets p50 <= 10 ms, p99 <= 25 ms)`,
  );
  console.log(
    `  of which snapshot load + resume: p50 ${ms(percentile(restore, 50))}  p99 ${ms(percentile(restore, 99))}`,
  );
  console.log(
    `jail + slot setup (off the request path): p50 ${ms(percentile(jail, 50))}  p99 ${ms(percentile(jail, 99))}`,
  );
  await Promise.all(instances.map((i) => i.destroy("acceptance done")));
  await driver.close();
  return ok.length === clones ? 0 : 1;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  process.exitCode = await acceptance(process.argv.slice(2));
}
