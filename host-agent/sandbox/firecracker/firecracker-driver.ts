/**
 * The production sandbox driver: every instance is a jailed Firecracker microVM restored from the base
 * snapshot into its own network slot. start() = jail + slot -> spawn -> load (paused) -> limits ->
 * resume -> guest healthy -> /_faas/init; attachCode() = stage code disk -> pause -> PATCH -> resume.
 */
import { randomBytes as nodeRandomBytes } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { baseFiles, codeDiskJailPath } from "../../../contracts/base-layout.ts";
import type { FirecrackerDriverConfig } from "../../../contracts/firecracker-driver-config.ts";
import { INIT_ENTROPY_BYTES } from "../../../contracts/guest-protocol.ts";
import type {
  BaseImage,
  CodeArtifact,
  GuestEndpoint,
  InstanceSpec,
  PreflightProblem,
  SandboxDriver,
  SandboxExit,
  SandboxInstance,
} from "../driver.ts";
import { SandboxStartError } from "../driver.ts";
import { FirecrackerApiClient, FirecrackerApiError } from "./api-client.ts";
import { GuestChannel } from "./guest-channel.ts";
import { IdRangeAllocator } from "./id-range.ts";
import {
  type FileToStage,
  prepareJail,
  reclaimVmCgroups,
  removeJail,
  removeParentCgroup,
  stageFile,
} from "./jail-staging.ts";
import {
  API_SOCKET_JAIL_PATH,
  buildJailerArgs,
  cgroupDir,
  type JailPaths,
  jailPaths,
} from "./jailer-args.ts";
import { cgroupSettings, resourceLimits, toRateLimiter } from "./limits.ts";
import type { NetworkSlot, SlotOwner } from "./network-slots.ts";
import {
  loadSnapshot,
  reapplyRateLimiters,
  resumeVm,
  swapCodeDisk,
  type VmRateLimiters,
} from "./vm-lifecycle.ts";
import { type SpawnVmm, type VmmProcess, waitForApiSocket } from "./vmm-process.ts";

/** What the driver needs from the network slot pool (NetworkSlotPool in production). */
export interface SlotProvider {
  reclaim(): Promise<string[]>;
  fill(): Promise<void>;
  acquire(owner: SlotOwner): Promise<NetworkSlot>;
  /** Lets a leased slot's guest out (its clone now serves a function with egress). */
  openEgress(slot: NetworkSlot): Promise<void>;
  /** What keeps guests' traffic from leaving the host (ip_forward, another firewall), one phrase each. */
  egressProblems(): Promise<string[]>;
  release(slot: NetworkSlot): Promise<void>;
  close(): Promise<void>;
}

export interface FirecrackerDriverDeps {
  readonly spawnVmm: SpawnVmm;
  readonly slots: SlotProvider;
  /** Host checks for preflight(); the doctor's checks in production. */
  readonly preflight: () => Promise<PreflightProblem[]>;
  /** Wall clock sent to the guest. */
  readonly now?: () => number;
  readonly randomBytes?: (size: number) => Buffer;
}

/** Where the time of one start went, for the acceptance script and metrics. */
export interface StartTimings {
  /** uid + slot + chroot staging, before Firecracker runs. */
  readonly jailSetupMs: number;
  /** Spawn to the API socket answering. */
  readonly spawnMs: number;
  /** snapshot/load + limiters + resume. */
  readonly restoreMs: number;
  /** Resume to the guest's first answer, then /_faas/init. */
  readonly guestReadyMs: number;
}

export class FirecrackerDriver implements SandboxDriver {
  readonly kind = "firecracker" as const;
  private readonly ids: IdRangeAllocator;
  private readonly live = new Map<string, FirecrackerInstance>();
  /** Starts in flight by id: a second start with the same id would share its jail, and close() waits for them. */
  private readonly starting = new Map<string, Promise<unknown>>();
  private closing = false;
  private readonly limiters: VmRateLimiters;
  private readonly now: () => number;
  private readonly randomBytes: (size: number) => Buffer;

  constructor(
    readonly config: FirecrackerDriverConfig,
    private readonly deps: FirecrackerDriverDeps,
  ) {
    this.ids = new IdRangeAllocator(config.idRange.first, config.idRange.count);
    const l = config.limits;
    this.limiters = {
      rootDisk: toRateLimiter(l.rootDisk),
      codeDisk: toRateLimiter(l.codeDisk),
      networkRx: toRateLimiter(l.networkRx),
      networkTx: toRateLimiter(l.networkTx),
    };
    this.now = deps.now ?? Date.now;
    this.randomBytes = deps.randomBytes ?? nodeRandomBytes;
  }

  preflight(): Promise<PreflightProblem[]> {
    return this.deps.preflight();
  }

  /** Egress per function needs the host to offer it (network.egress) and the kernel to forward. */
  async egressProblems(): Promise<string[]> {
    if (!this.config.network.egress.enabled) {
      return [
        "the microVM network offers no way out (network.egress.enabled is off in the driver config; `faas start` turns it on when the host has a default route and a resolver, or FAAS_EGRESS_UPLINK and FAAS_EGRESS_DNS)",
      ];
    }
    return this.deps.slots.egressProblems();
  }

  /** Removes jails, cgroups and slots a crashed agent left, then builds the slot pool ahead of time. */
  async init(): Promise<void> {
    const execRoot = join(this.config.chrootBase, basename(this.config.firecrackerPath));
    const leftovers = await readdir(execRoot).catch(() => [] as string[]);
    for (const id of leftovers) {
      const paths = jailPaths(this.config.chrootBase, this.config.firecrackerPath, id);
      await killLeftoverVmm(paths, id);
      await removeJail(paths, cgroupDir(this.config.cgroupRoot, this.config.parentCgroup, id));
    }
    // A VM's cgroups on a v1 host, or of a jail already gone: their processes too.
    await reclaimVmCgroups(this.config.cgroupRoot, this.config.parentCgroup);
    await this.deps.slots.reclaim();
    await this.deps.slots.fill();
  }

  async start(spec: InstanceSpec): Promise<SandboxInstance> {
    return this.startTimed(spec).then((r) => r.instance);
  }

  /** start() with the timings of each phase. */
  async startTimed(spec: InstanceSpec): Promise<{ instance: FirecrackerInstance; timings: StartTimings }> {
    if (spec.base.driver !== "firecracker")
      throw new SandboxStartError(`base ${spec.base.version} is not a firecracker base`, spec.id);
    if (this.closing) throw new SandboxStartError("the firecracker sandbox is shutting down", spec.id);
    if (this.live.has(spec.id) || this.starting.has(spec.id)) {
      throw new SandboxStartError(`instance id already in use: ${spec.id}`, spec.id);
    }
    const restoring = this.restore(spec);
    this.starting.set(spec.id, restoring);
    try {
      return await restoring;
    } finally {
      this.starting.delete(spec.id);
    }
  }

  private async restore(
    spec: InstanceSpec,
  ): Promise<{ instance: FirecrackerInstance; timings: StartTimings }> {
    const cfg = this.config;
    const t0 = performance.now();
    const paths = jailPaths(cfg.chrootBase, cfg.firecrackerPath, spec.id);
    const cgroupPath = cgroupDir(cfg.cgroupRoot, cfg.parentCgroup, spec.id);
    const held: Held = { paths, cgroupPath };
    let stage = "allocating a uid";
    try {
      held.uid = this.ids.acquire();
      const owner = { uid: held.uid, gid: held.uid };
      stage = "acquiring a network slot";
      held.slot = await this.deps.slots.acquire(owner);
      stage = "staging the jail";
      await prepareJail(paths, owner, restoreFiles(spec.base));
      const jailerArgv = buildJailerArgs({
        id: spec.id,
        execFile: cfg.firecrackerPath,
        uid: owner.uid,
        gid: owner.gid,
        chrootBase: cfg.chrootBase,
        netnsPath: held.slot.netnsPath,
        newPidNs: cfg.newPidNs,
        daemonize: cfg.daemonize,
        parentCgroup: cfg.parentCgroup,
        cgroups: cgroupSettings(cfg.limits, spec.limits),
        resourceLimits: resourceLimits(spec.limits),
        apiSocket: API_SOCKET_JAIL_PATH,
      });
      const t1 = performance.now();
      stage = "starting firecracker";
      held.vmm = await this.deps.spawnVmm({
        id: spec.id,
        jailerArgv,
        jailRoot: paths.root,
        apiSocketPath: paths.apiSocket,
        pidFilePath: paths.pidFile,
      });
      held.api = new FirecrackerApiClient({ socketPath: paths.apiSocket });
      await waitForApiSocket(held.vmm, cfg.apiSocketTimeoutMs);
      const t2 = performance.now();
      stage = "loading the base snapshot";
      await loadSnapshot(held.api, cfg.network.ifaceId, held.slot.tapName);
      stage = "re-applying rate limiters";
      await reapplyRateLimiters(held.api, cfg.network.ifaceId, this.limiters);
      stage = "resuming the VM";
      await resumeVm(held.api);
      const t3 = performance.now();
      stage = "reaching the guest runtime";
      const guest = new GuestChannel(held.slot.cloneAddress, cfg.guestPort);
      await guest.waitHealthy(cfg.guestReadyTimeoutMs);
      stage = "initialising the guest runtime";
      // Only this host learns the secret: the guest refuses later control calls without it.
      const controlSecret = this.randomBytes(32).toString("base64url");
      await guest.init(
        {
          instanceId: spec.id,
          unixTimeMs: this.now(),
          entropy: this.randomBytes(INIT_ENTROPY_BYTES).toString("base64"),
          controlSecret,
        },
        cfg.guestReadyTimeoutMs,
      );
      const t4 = performance.now();
      // close() swept `live` while this VM was restoring: it must not outlive the driver.
      stage = "handing over the instance";
      if (this.closing) throw new Error("the firecracker sandbox is shutting down");
      const instance = new FirecrackerInstance(spec, {
        held: held as Required<Held>,
        guestPort: cfg.guestPort,
        controlSecret,
        codeDiskLimiter: this.limiters.codeDisk,
        slots: this.deps.slots,
        ids: this.ids,
        onReleased: (i) => this.released(i),
      });
      this.live.set(spec.id, instance);
      return {
        instance,
        timings: { jailSetupMs: t1 - t0, spawnMs: t2 - t1, restoreMs: t3 - t2, guestReadyMs: t4 - t3 },
      };
    } catch (err) {
      const reason = await explainStartFailure(stage, err, held.vmm);
      await releaseHeld(held, this.deps.slots, this.ids);
      throw new SandboxStartError(reason, spec.id, { cause: err });
    }
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all([...this.live.values()].map((i) => i.destroy("driver closing")));
    // Restores in flight see the close at their hand-over and release their jail, slot and VMM.
    await Promise.allSettled([...this.starting.values()]);
    await this.deps.slots.close();
    // The VMs' parent cgroup is this driver's: an agent that stops leaves no empty cgroup behind.
    await removeParentCgroup(this.config.cgroupRoot, this.config.parentCgroup);
  }

  /** Ids of instances that hold host resources right now. */
  get liveIds(): string[] {
    return [...this.live.keys()];
  }

  private released(instance: FirecrackerInstance): void {
    this.live.delete(instance.id);
  }
}

interface Held {
  paths: JailPaths;
  cgroupPath: string;
  uid?: number;
  slot?: NetworkSlot;
  vmm?: VmmProcess;
  api?: FirecrackerApiClient;
}

/** Frees everything a (partly) started VM holds; each step runs even if an earlier one failed. */
async function releaseHeld(held: Held, slots: SlotProvider, ids: IdRangeAllocator): Promise<void> {
  await held.vmm?.kill().catch(() => undefined);
  await held.api?.close().catch(() => undefined);
  await removeJail(held.paths, held.cgroupPath).catch(() => undefined);
  if (held.slot) await slots.release(held.slot).catch(() => undefined);
  if (held.uid !== undefined) ids.release(held.uid);
}

async function explainStartFailure(
  stage: string,
  err: unknown,
  vmm: VmmProcess | undefined,
): Promise<string> {
  if (err instanceof FirecrackerApiError && err.path === "/snapshot/load") {
    // Firecracker exits after a failed load; say so instead of leaving a "connection refused" later.
    const gone = vmm
      ? await Promise.race([vmm.exited.then(() => true), sleep(200).then(() => false)])
      : false;
    return `snapshot load failed, firecracker ${gone ? "exited" : "is unusable"}: ${err.faultMessage}`;
  }
  return `${stage} failed: ${err instanceof Error ? err.message : String(err)}`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** The base files a restore needs, staged at the jail paths recorded in the snapshot. */
function restoreFiles(base: BaseImage): FileToStage[] {
  return Object.values(baseFiles)
    .filter((f) => f.neededForRestore)
    .map((f) => ({ source: join(base.dir, f.name), jailPath: f.jailPath, readOnly: true }));
}

/** A jail left by a crashed agent may still hold a running Firecracker: end it before removing the jail. */
async function killLeftoverVmm(paths: JailPaths, id: string): Promise<void> {
  const pid = Number.parseInt((await readFile(paths.pidFile, "utf8").catch(() => "")).trim(), 10);
  if (!Number.isInteger(pid) || pid <= 1) return;
  const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
  // Only a process started for this jail id (the jailer passes --id): pids get reused.
  if (!cmdline.split("\0").includes(id)) return;
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // already gone
  }
}

interface InstanceContext {
  readonly held: Required<Held>;
  readonly guestPort: number;
  /** Given to the guest at init; every later control call carries it (GuestClient reads the endpoint). */
  readonly controlSecret: string;
  readonly codeDiskLimiter: VmRateLimiters["codeDisk"];
  readonly slots: SlotProvider;
  readonly ids: IdRangeAllocator;
  readonly onReleased: (instance: FirecrackerInstance) => void;
}

export class FirecrackerInstance implements SandboxInstance {
  readonly id: string;
  readonly base: BaseImage;
  readonly endpoint: GuestEndpoint;
  readonly exited: Promise<SandboxExit>;
  private resolveExited!: (exit: SandboxExit) => void;
  private codeAttached = false;
  private gone: Promise<void> | undefined;

  private readonly held: Required<Held>;

  constructor(
    spec: InstanceSpec,
    private readonly context: InstanceContext,
  ) {
    this.id = spec.id;
    this.base = spec.base;
    this.held = context.held;
    this.endpoint = {
      kind: "tcp",
      host: this.held.slot.cloneAddress,
      port: context.guestPort,
      controlSecret: context.controlSecret,
    };
    this.exited = new Promise((resolve) => {
      this.resolveExited = resolve;
    });
    void this.held.vmm.exited.then((exit) => {
      if (this.gone) return;
      this.gone = this.release({
        cause: "exited",
        code: exit.code,
        signal: exit.signal,
        reason: `the microVM stopped on its own: ${exit.description}`,
      });
    });
  }

  /** Host uid/gid and network slot of this VM (for tests and diagnostics). */
  get uid(): number {
    return this.held.uid;
  }

  get slot(): NetworkSlot {
    return this.held.slot;
  }

  get jail(): JailPaths {
    return this.held.paths;
  }

  async attachCode(code: CodeArtifact): Promise<void> {
    if (this.codeAttached) throw new Error(`instance ${this.id} already has code attached`);
    if (this.gone) throw new Error(`instance ${this.id} is gone`);
    this.codeAttached = true;
    const jailPath = codeDiskJailPath(code.codeHash);
    await stageFile(
      this.held.paths,
      { uid: this.held.uid, gid: this.held.uid },
      {
        source: code.hostPath,
        jailPath,
        readOnly: true,
      },
    );
    await swapCodeDisk(this.held.api, jailPath, this.context.codeDiskLimiter);
  }

  /** The slot's egress gate opens: NAT to the host's uplink and DNS, for this VM's function only. */
  async openEgress(): Promise<void> {
    if (this.gone) throw new Error(`instance ${this.id} is gone`);
    await this.context.slots.openEgress(this.held.slot);
  }

  destroy(reason: string): Promise<void> {
    this.gone ??= this.release({ cause: "destroyed", code: null, signal: "SIGKILL", reason });
    return this.gone;
  }

  private async release(exit: SandboxExit): Promise<void> {
    await releaseHeld(this.held, this.context.slots, this.context.ids);
    this.context.onReleased(this);
    this.resolveExited(exit);
  }
}
