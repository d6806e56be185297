import type { BaseImage } from "../../contracts/base-layout.ts";

/**
 * The one interface every sandbox kind implements. The pool and the API only ever see these types:
 * they never know whether an instance is a bubblewrap jail or a jailed Firecracker microVM.
 */

/**
 * How the host reaches the guest runtime inside an instance (HTTP over this transport), and the
 * instance's control secret when its driver gave it one at init (sent on every /_faas/ call).
 */
export type GuestEndpoint = (
  | { readonly kind: "unix"; readonly socketPath: string }
  | { readonly kind: "tcp"; readonly host: string; readonly port: number }
) & { readonly controlSecret?: string };

/** Resource limits applied to one instance before any guest code runs. */
export interface SandboxLimits {
  /** Memory cap (cgroup memory limit / VM memory), MiB. */
  readonly memoryMiB: number;
  /** CPU time as a share of one core, in percent (cgroup cpu.max quota / period). 100 = one full core. */
  readonly cpuPercent: number;
  /** Maximum number of processes and threads (cgroup pids.max). */
  readonly pids: number;
  /** Size cap of the private /tmp, MiB. */
  readonly tmpMiB: number;
  /** RLIMIT_NOFILE. */
  readonly openFiles: number;
  /** RLIMIT_FSIZE, MiB. */
  readonly fileSizeMiB: number;
}

/** What instances are started (or restored) from; its home is the base layout contract. */
export type { BaseImage };

/** The function code to make visible, read-only, at the guest's code path. */
export interface CodeArtifact {
  readonly functionName: string;
  /** Content hash of the bundle the code came from. */
  readonly codeHash: string;
  /** Host path: an unpacked read-only folder (process sandbox) or a code disk image (microVMs). */
  readonly hostPath: string;
}

export interface InstanceSpec {
  /** Unique per host, [a-z0-9-]{1,40}; used in jail, cgroup and socket names. */
  readonly id: string;
  readonly base: BaseImage;
  readonly limits: SandboxLimits;
  /**
   * True for a start no call waits for (the pool refilling its generic instances): a driver may run it
   * at a lower CPU share so it does not slow the calls being served. Absent: a call or deploy waits.
   */
  readonly background?: boolean;
}

/** Why an instance stopped existing. */
export interface SandboxExit {
  /** "exited" when the guest died on its own (crash, OOM kill, process.exit), "destroyed" when the host ended it. */
  readonly cause: "exited" | "destroyed";
  readonly code: number | null;
  readonly signal: string | null;
  /** One human sentence: what happened, as precisely as the driver knows (for example "killed by the memory limit"). */
  readonly reason: string;
}

/**
 * How long a caller whose instance failed under it waits for the exit's reason (exit code, memory limit),
 * which says more than the socket error; it comes once the instance is cleaned up, which a busy host can
 * take a while to do.
 */
export const EXIT_REASON_WAIT_MS = 3000;

/** The instance's exit if it comes within EXIT_REASON_WAIT_MS, else undefined. */
export function exitSoon(exited: Promise<SandboxExit>): Promise<SandboxExit | undefined> {
  return Promise.race([
    exited,
    new Promise<undefined>((r) => setTimeout(() => r(undefined), EXIT_REASON_WAIT_MS).unref()),
  ]);
}

export interface SandboxInstance {
  readonly id: string;
  readonly base: BaseImage;
  readonly endpoint: GuestEndpoint;
  /** Resolves once, when the instance is gone for whatever reason. Never rejects. */
  readonly exited: Promise<SandboxExit>;
  /** Attach a function's code read-only at the guest's code path (bind mount, code disk PATCH). At most once. */
  attachCode(code: CodeArtifact): Promise<void>;
  /** End the instance and free every host resource it held. Idempotent. */
  destroy(reason: string): Promise<void>;
  /** Memory the instance uses now, bytes, where the driver can measure it (cgroup accounting). */
  memoryBytes?(): Promise<number>;
  /**
   * Lowers the instance's memory limit to a function's own (at most the limit it started with), before
   * the function's code loads. Drivers whose memory is fixed at start (a VM's) leave it out.
   */
  limitMemory?(memoryMiB: number): Promise<void>;
  /**
   * Gives the instance a way out (its own network with NAT to the host's uplink and DNS; nothing on the
   * host or in other instances reachable), before the function's code loads. Instances start with no
   * network; drivers without per-function egress leave this out.
   */
  openEgress?(): Promise<void>;
}

/** A host prerequisite that is missing, with the exact command that fixes it. */
export interface PreflightProblem {
  readonly what: string;
  readonly fix: string;
  /** Fatal problems stop the agent; the others degrade isolation and are logged. */
  readonly fatal: boolean;
  /** Debian packages that provide what is missing: the CLI folds them into one install command. */
  readonly packages?: readonly string[];
}

export interface SandboxDriver {
  readonly kind: "process" | "firecracker";
  /** Checks the host for what this driver needs. Pure inspection, changes nothing. */
  preflight(): Promise<PreflightProblem[]>;
  /** Prepares host-wide state and reclaims what a crashed agent left behind (jails, mounts, cgroups, slots). */
  init(): Promise<void>;
  /**
   * Starts (or restores) one generic instance from the base image. Resolves once the guest runtime
   * answers on its endpoint and has been given a fresh identity; rejects with SandboxStartError.
   */
  start(spec: InstanceSpec): Promise<SandboxInstance>;
  /**
   * What this host lacks for per-function egress, one phrase each with its fix (empty: it can be used).
   * Drivers without per-function egress leave this out, and functions asking for it are refused.
   */
  egressProblems?(): Promise<string[]>;
  /** Destroys every live instance and releases host-wide state. */
  close(): Promise<void>;
}

export class SandboxStartError extends Error {
  override readonly name = "SandboxStartError";
  constructor(
    message: string,
    readonly instanceId: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
