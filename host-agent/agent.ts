/**
 * Wires one host agent together: state dir, admin token, sandbox driver, base image, registry, the
 * rollout (one pool per base version; one pool outside a roll), and the two HTTP planes. Everything it
 * depends on can be passed in, so tests run real agents with their own ports, state dirs and clocks.
 */
import { randomBytes } from "node:crypto";
import { mkdir, readFile } from "node:fs/promises";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import type { S3Client } from "@aws-sdk/client-s3";
import { execa } from "execa";
import { cpuModelOf } from "../contracts/base-manifest.ts";
import type { FirecrackerLimits } from "../contracts/firecracker-driver-config.ts";
import { verifyBaseImage } from "../guest-images/bake/verify.ts";
import { bakeProcessBase } from "../guest-images/process/bake.ts";
import { type FleetOverrides, startFleetDuties } from "./aws/fleet.ts";
import { type Clock, systemClock } from "./clock.ts";
import type { AgentConfig } from "./config.ts";
import { GuestClient } from "./guest/client.ts";
import { resolveAdminToken } from "./http/auth.ts";
import { createControlPlane } from "./http/control-plane.ts";
import { createDataPlane } from "./http/data-plane.ts";
import { TrustedProxies } from "./http/forward-headers.ts";
import { ServingState } from "./http/serving-state.ts";
import { createLogger, type Logger } from "./log.ts";
import { FunctionLogs } from "./logs/function-logs.ts";
import { createMetrics } from "./metrics.ts";
import type { InstanceSource } from "./pool/instance-source.ts";
import { functionVersion } from "./pool/lease.ts";
import { codeDisksForBase } from "./registry/code-disks.ts";
import { LocalRegistryBackend } from "./registry/local-backend.ts";
import { RegistryPoller } from "./registry/poller.ts";
import { Registry } from "./registry/registry.ts";
import { S3RegistryBackend } from "./registry/s3-backend.ts";
import { checkProcessBase, driverProbe } from "./release/base-check.ts";
import { fileReleaseFetch, ReleasePoller, releaseFileFolder } from "./release/poller.ts";
import { parseRelease, type Release } from "./release/release.ts";
import { Rollout, RolloutConflictError } from "./release/rollout.ts";
import { readReleaseRecords, writeReleaseRecords } from "./release/store.ts";
import type { BaseImage, PreflightProblem, SandboxDriver } from "./sandbox/driver.ts";
import { createFirecrackerDriver } from "./sandbox/firecracker/create-driver.ts";
import { QEMU_ADAPTER_API_VERSION } from "./sandbox/firecracker/qemu-vmm.ts";
import { ProcessDriver } from "./sandbox/process/driver.ts";

/**
 * `firecracker --version` of the binary the driver config names, for the base's version check; on
 * the QEMU backend, the API release its adapter speaks (what a base baked on it records).
 */
async function firecrackerVersion(configFile: string | undefined): Promise<string> {
  const raw = configFile
    ? (JSON.parse(await readFile(configFile, "utf8")) as { firecrackerPath?: string; vmm?: string })
    : {};
  if (raw.vmm === "qemu") return QEMU_ADAPTER_API_VERSION;
  const { stdout } = await execa(raw.firecrackerPath ?? "/usr/local/bin/firecracker", ["--version"]);
  return stdout.split("\n")[0] ?? "";
}

/** The VMM the driver config restores with (its `vmm`, Firecracker unless it says QEMU). */
async function hostVmm(configFile: string | undefined): Promise<"firecracker" | "qemu"> {
  const raw = configFile ? (JSON.parse(await readFile(configFile, "utf8")) as { vmm?: string }) : {};
  return raw.vmm === "qemu" ? "qemu" : "firecracker";
}

export class PreflightError extends Error {
  override readonly name = "PreflightError";
  constructor(readonly problems: PreflightProblem[]) {
    super(problems.map((p) => `${p.what}: ${p.fix}`).join("\n"));
  }
}

export interface AgentOverrides {
  readonly clock?: Clock;
  readonly log?: Logger;
  readonly driver?: SandboxDriver;
  /** A baked base to use instead of baking one into the state dir (or the release it last rolled to). */
  readonly base?: BaseImage;
  /** Picks the calls a canary serves, in [0, 1). */
  readonly random?: () => number;
  /** VM shape and rate limiters from the host's release manifest; the driver config file's own win. */
  readonly firecrackerLimits?: Partial<FirecrackerLimits>;
  /** The release's VM shape: a microVM base whose snapshot fixes another one is refused at start. */
  readonly releaseMachine?: { readonly vcpus: number; readonly memMiB: number };
  /** Where this host's CPU model is read (/proc/cpuinfo); a microVM base baked on another is refused. */
  readonly cpuinfoPath?: string;
  /** The instance metadata service and AWS API clients the fleet duties use. */
  readonly aws?: FleetOverrides;
  /** The S3 client of an S3 registry (an S3-compatible server in tests); else one from the environment. */
  readonly s3Client?: S3Client;
}

export interface RunningAgent {
  readonly dataUrl: string;
  readonly adminUrl: string;
  readonly adminToken: string;
  /** True when the token was generated by this start (print it once). */
  readonly tokenGenerated: boolean;
  readonly tokenFile: string;
  /** The base the agent started on (rollout.currentBase is the one serving now). */
  readonly base: BaseImage;
  readonly registry: Registry;
  readonly pool: InstanceSource;
  readonly rollout: Rollout;
  readonly warnings: PreflightProblem[];
  /** Calls in flight on the data plane, and whether the host is draining. */
  readonly serving: ServingState;
  stop(): Promise<void>;
}

function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** The driver config file with the release's limits under its own `limits`. */
export function withReleaseLimits(
  fileConfig: Record<string, unknown>,
  limits: Partial<FirecrackerLimits> | undefined,
): Record<string, unknown> {
  if (!limits) return fileConfig;
  const own = typeof fileConfig.limits === "object" && fileConfig.limits !== null ? fileConfig.limits : {};
  return { ...fileConfig, limits: { ...limits, ...own } };
}

function close(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

export async function startAgent(config: AgentConfig, overrides: AgentOverrides = {}): Promise<RunningAgent> {
  const clock = overrides.clock ?? systemClock;
  const log = overrides.log ?? createLogger(config.logLevel);
  const stateDir = path.resolve(config.stateDir);
  await mkdir(stateDir, { recursive: true, mode: 0o711 });
  const metrics = createMetrics();
  const functionLogs = new FunctionLogs(clock);
  const token = await resolveAdminToken(stateDir, config.adminToken);

  const driver =
    overrides.driver ??
    (config.driver === "firecracker"
      ? createFirecrackerDriver(
          withReleaseLimits(
            config.firecrackerConfig ? JSON.parse(await readFile(config.firecrackerConfig, "utf8")) : {},
            overrides.firecrackerLimits,
          ),
        )
      : new ProcessDriver({
          stateDir,
          baseDir: config.baseDir,
          uidBase: config.uidBase,
          // A roll runs two pools side by side, plus one probe instance.
          uidCount: config.pool.maxInstances * 3 + 1,
          log,
          onUserLine: ({ fn, ...line }) => functionLogs.record(fn, line),
        }));
  const problems = await driver.preflight();
  const fatal = problems.filter((p) => p.fatal);
  if (fatal.length > 0) throw new PreflightError(fatal);
  for (const p of problems) log.warn({ fix: p.fix }, p.what);
  await driver.init();

  // A microVM base is only ever taken from a baked, verified folder (its snapshot is tied to this
  // host's Firecracker version); rolls between microVM bases are not wired yet.
  const vmBase =
    config.driver === "firecracker" && !overrides.base
      ? await verifyBaseImage(path.resolve(config.baseDir!), {
          hostFirecrackerVersion: await firecrackerVersion(config.firecrackerConfig),
          hostVmm: await hostVmm(config.firecrackerConfig),
          // The bake reads the same file (guest-images/bake/cpu-model.ts); one rule turns both into a model.
          hostCpuModel: cpuModelOf(
            await readFile(overrides.cpuinfoPath ?? "/proc/cpuinfo", "utf8").catch(() => ""),
          ),
          ...(overrides.releaseMachine ? { expectedMachine: overrides.releaseMachine } : {}),
        })
      : undefined;
  // A restarted agent comes back on the release it had rolled to, when that base is still usable.
  const records = overrides.base || vmBase ? undefined : await readReleaseRecords(stateDir);
  let base = overrides.base ?? vmBase;
  if (!base && records) {
    base = await checkProcessBase(records.current).catch((err: Error) => {
      log.warn({ err: err.message }, "the recorded release's base is not usable: baking the default base");
      return undefined;
    });
  }
  base ??= await bakeProcessBase(path.resolve(config.baseDir ?? path.join(stateDir, "base")));
  const initialRelease: Release =
    records && records.current.baseVersion === base.version
      ? records.current
      : parseRelease({ baseVersion: base.version, baseDir: base.dir });
  const registry = new Registry(
    config.registry.kind === "s3"
      ? new S3RegistryBackend({
          bucket: config.registry.bucket,
          prefix: config.registry.prefix,
          ...(overrides.s3Client ? { client: overrides.s3Client } : {}),
        })
      : new LocalRegistryBackend(stateDir),
    path.join(stateDir, "code"),
    config.bundle,
    clock,
    {
      log,
      // MicroVMs get each function's code as a disk image, built at deploy and cached by code hash.
      codeDisks: codeDisksForBase(base, path.join(stateDir, "code-disks")),
      functionDefaults: {
        memoryMiB: config.limits.memoryMiB,
        callTimeoutMs: config.pool.callTimeoutMs,
        ...(config.aws.region ? { region: config.aws.region } : {}),
      },
      // The base the agent starts on: a roll to another Node major re-checks nothing already deployed.
      ...(base.nativeAddons ? { nativeAddons: base.nativeAddons } : {}),
    },
  );
  await registry.init();

  let seq = 0;
  const prefix = randomBytes(3).toString("hex");
  const newInstanceId = () => `i${prefix}-${(seq++).toString(36)}`;
  // Records are written one after the other, so the last roll's is the one left on disk.
  let recording = Promise.resolve();
  const rollout = new Rollout(
    {
      driver,
      limits: config.limits,
      poolConfig: config.pool,
      clock,
      log,
      metrics,
      newInstanceId,
      random: overrides.random ?? Math.random,
      // A module's load is bounded by the call deadline, and a load that kills its instance says why.
      clientFor: (sandbox) =>
        new GuestClient(sandbox.endpoint, {
          loadTimeoutMs: config.pool.callTimeoutMs,
          exited: sandbox.exited,
          // Every runtime keeps the user's console for the host: a VM's stdout is a serial console, and
          // a jail's lines come in batches on its framed connection instead of one pipe write each.
          onConsole: (line) => {
            log[line.level]({ instance: sandbox.id, fn: line.fn, rid: line.rid, user: true }, line.msg);
            const { fn, ...rest } = line;
            if (fn) functionLogs.record(fn, { ...rest, instance: sandbox.id });
          },
          consoleChannel: true,
        }),
      checkBase: checkProcessBase,
      probeBase: driverProbe({ driver, limits: config.limits, newInstanceId }),
      warmupTimeoutMs: config.release.warmupTimeoutMs,
      drainTimeoutMs: config.pool.callTimeoutMs + 10_000,
      onReleaseChange: (current, previous) => {
        recording = recording
          .then(() => writeReleaseRecords(stateDir, previous ? { current, previous } : { current }))
          .catch((err: Error) => log.error({ err: err.message }, "could not record the release"));
      },
    },
    {
      release: initialRelease,
      base,
      ...(records?.previous && records.current.baseVersion === base.version
        ? { previous: records.previous }
        : {}),
    },
  );
  rollout.start();
  // Functions another writer replaced or deleted: their instances finish the call they serve, then stop.
  registry.changeListener = (name, record) => {
    rollout.retireFunction(
      name,
      record &&
        functionVersion({ codeHash: record.codeHash, settingsHash: registry.settingsFor(record).hash }),
    );
    if (!record) functionLogs.forget(name);
  };

  const serving = new ServingState({
    starts: () => rollout.startHealth(),
    startFailureLimit: config.healthStartFailures,
  });
  const data = createDataPlane({
    registry,
    pool: rollout,
    clock,
    log,
    metrics,
    callTimeoutMs: config.pool.callTimeoutMs,
    maxBodyBytes: config.maxBodyBytes,
    timeouts: { headersTimeoutMs: config.headersTimeoutMs, requestTimeoutMs: config.requestTimeoutMs },
    serving,
    trustedProxies: TrustedProxies.parse(config.trustedProxies),
  });
  const admin = createControlPlane({
    registry,
    pool: rollout,
    clock,
    log,
    metrics,
    adminToken: token.token,
    maxBundleBytes: config.bundle.maxBundleBytes,
    deployTimeoutMs: Math.max(config.pool.callTimeoutMs, 30_000),
    configLimits: { maxMemoryMiB: config.limits.memoryMiB, maxTimeoutMs: config.pool.callTimeoutMs },
    rollout,
    health: () => ({
      baseVersion: rollout.currentBase.version,
      driver: driver.kind,
      functions: registry.size,
    }),
    timeouts: { headersTimeoutMs: config.headersTimeoutMs, requestTimeoutMs: config.adminRequestTimeoutMs },
    functionLogs,
  });
  let dataPort: number;
  let adminPort: number;
  try {
    dataPort = await listen(data, config.port, config.host);
    adminPort = await listen(admin, config.adminPort, config.adminHost);
  } catch (err) {
    await rollout.close();
    await driver.close();
    await close(data);
    throw err;
  }
  const releaseFile = config.release.file;
  const poller = releaseFile
    ? new ReleasePoller({
        fetch: fileReleaseFetch(releaseFile),
        apply: (release) => rollout.begin(release),
        clock,
        log,
        intervalMs: config.release.pollMs,
        relativeTo: releaseFileFolder(releaseFile),
        retryLater: (err) => err instanceof RolloutConflictError,
      })
    : undefined;
  poller?.start();
  // A shared registry changes under running hosts (FaasFunction deploys, other hosts): follow it.
  const registryPoller =
    config.registry.kind === "s3" && config.registryPollMs > 0
      ? new RegistryPoller({ registry, clock, log, intervalMs: config.registryPollMs })
      : undefined;
  registryPoller?.start();
  // Once the data plane listens: a drain must be able to fail its health check.
  const fleet = startFleetDuties({
    config: config.aws,
    pool: rollout,
    serving,
    clock,
    log,
    metrics,
    ...(overrides.aws ? { overrides: overrides.aws } : {}),
  });
  log.info(
    {
      data: `${config.host}:${dataPort}`,
      admin: `${config.adminHost}:${adminPort}`,
      base: base.version,
      functions: registry.size,
    },
    "agent listening",
  );
  return {
    dataUrl: `http://${config.host}:${dataPort}`,
    adminUrl: `http://${config.adminHost}:${adminPort}`,
    adminToken: token.token,
    tokenGenerated: token.generated,
    tokenFile: token.file,
    base,
    registry,
    pool: rollout,
    rollout,
    warnings: problems,
    serving,
    async stop() {
      await fleet.stop();
      await poller?.stop();
      await registryPoller?.stop();
      await Promise.all([close(data), close(admin)]);
      await rollout.close();
      await recording;
      await driver.close();
      log.info("agent stopped");
    },
  };
}
