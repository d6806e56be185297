/**
 * The command line that starts one process-sandbox instance. Pure, so the jail's shape is tested exactly:
 *   sh (joins the instance's cgroups, then execs) -> prlimit (rlimits) -> setpriv (unprivileged uid/gid,
 *   no capabilities, no_new_privs, killed when the agent dies) -> sh (exits unless the agent is still its
 *   parent) -> bwrap (every namespace unshared, read-only root, code read-only at
 *   /code, private size-capped /tmp, the seccomp filter) -> node from the runtime's startup snapshot.
 */
import { AGENT_PID_ENV, boundToAgentCommand } from "../bound-to-agent.ts";
import type { SandboxLimits } from "../driver.ts";

export const GUEST_CODE_PATH = "/code";
export const GUEST_RUN_PATH = "/run/faas";
export const GUEST_SOCKET_NAME = "guest.sock";
/** The uid/gid the runtime sees inside its user namespace. */
export const GUEST_UID = 1000;

export interface JailCommandInput {
  /** Baked read-only root: node, its libraries, the runtime bundle and snapshot, empty mount points. */
  readonly rootDir: string;
  /** Host folder bound read-only at /code (filled with the function's code at specialization). */
  readonly codeDir: string;
  /** Host folder bound read-write at /run/faas, for the guest's socket only. */
  readonly runDir: string;
  readonly baseVersion: string;
  readonly limits: SandboxLimits;
  /** Host uid/gid the jail runs as; null when the agent is not root (then user namespaces alone). */
  readonly hostId: number | null;
  /** The agent's pid: the jail's parent, whose death must kill it (see BOUND_TO_AGENT_SCRIPT). */
  readonly agentPid: number;
  /** cgroup.procs files to join before anything else runs. */
  readonly cgroupProcs: string[];
  /** False when this bwrap predates --disable-userns (0.8): the flag is left out (preflight warns). */
  readonly disableUserns?: boolean;
  /** The seccomp filter (struct sock_filter[]) bwrap loads before running node; none when undefined. */
  readonly seccompFile?: string;
  /**
   * False for a start a call waits for: the runtime says ready at once instead of first rehearsing a
   * call (about 20 ms), which only a generic instance, waiting for a call it does not know yet, gains by.
   */
  readonly warmUp?: boolean;
}

/** The descriptor the filter file is opened on for bwrap: the first after stdin, stdout and stderr. */
export const SECCOMP_FD = 3;

/** Joins the cgroups with its own pid, then replaces itself: limits apply before the runtime's first instruction. */
export const JOIN_CGROUPS_SCRIPT =
  'IFS=:; for f in $FAAS_CGROUP_PROCS; do echo $$ > "$f" || exit 97; done; unset FAAS_CGROUP_PROCS; exec "$@"';

/** The same, opening the seccomp filter on fd 3 for bwrap (which reads it and closes it). */
export const JOIN_CGROUPS_WITH_FILTER_SCRIPT = `IFS=:; for f in $FAAS_CGROUP_PROCS; do echo $$ > "$f" || exit 97; done; unset FAAS_CGROUP_PROCS; s=$FAAS_SECCOMP_FILE; unset FAAS_SECCOMP_FILE; exec "$@" ${SECCOMP_FD}<"$s"`;

export function jailCommand(input: JailCommandInput): {
  file: string;
  args: string[];
  env: Record<string, string>;
} {
  const { limits } = input;
  const MiB = 1024 * 1024;
  const bwrap = [
    "bwrap",
    "--unshare-all",
    "--unshare-user",
    // No nested user namespaces: a native addon in a bundle could otherwise unshare one and get
    // capabilities over it, the kernel surface that most container escapes start from (bwrap >= 0.8).
    ...(input.disableUserns === false ? [] : ["--disable-userns"]),
    "--die-with-parent",
    "--new-session",
    "--uid",
    String(GUEST_UID),
    "--gid",
    String(GUEST_UID),
    "--hostname",
    "faas",
    "--ro-bind",
    input.rootDir,
    "/",
    "--ro-bind",
    input.codeDir,
    GUEST_CODE_PATH,
    "--bind",
    input.runDir,
    GUEST_RUN_PATH,
    "--size",
    String(limits.tmpMiB * MiB),
    "--tmpfs",
    "/tmp",
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "--clearenv",
    "--setenv",
    "HOME",
    "/tmp",
    "--setenv",
    "TMPDIR",
    "/tmp",
    "--setenv",
    "NODE_ENV",
    "production",
    "--setenv",
    "FAAS_MEMORY_MIB",
    String(limits.memoryMiB),
    "--cap-drop",
    "ALL",
    ...(input.seccompFile === undefined ? [] : ["--seccomp", String(SECCOMP_FD)]),
    "--",
    "/node",
    // No V8 flags here: any flag that changes V8's configuration makes the startup snapshot unloadable.
    "--snapshot-blob",
    "/runtime/runtime.blob",
    "--",
    "--listen",
    `unix:${GUEST_RUN_PATH}/${GUEST_SOCKET_NAME}`,
    "--code",
    GUEST_CODE_PATH,
    "--base-version",
    input.baseVersion,
    // The user's console goes to the host in batches on the instance's framed connection, not as one
    // line per write on stdout (which stays for the ready line, fatal errors and raw output).
    "--console",
    "channel",
    ...(input.warmUp === false ? ["--no-warm-up"] : []),
  ];
  const setpriv =
    input.hostId === null
      ? []
      : boundToAgentCommand("faas-jail-bound", { uid: input.hostId, gid: input.hostId });
  const prlimit = [
    "prlimit",
    `--nofile=${limits.openFiles}:${limits.openFiles}`,
    `--fsize=${limits.fileSizeMiB * MiB}:${limits.fileSizeMiB * MiB}`,
    "--core=0:0",
    "--",
  ];
  const script = input.seccompFile === undefined ? JOIN_CGROUPS_SCRIPT : JOIN_CGROUPS_WITH_FILTER_SCRIPT;
  return {
    file: "/bin/sh",
    args: ["-c", script, "faas-jail", ...prlimit, ...setpriv, ...bwrap],
    env: {
      FAAS_CGROUP_PROCS: input.cgroupProcs.join(":"),
      ...(input.hostId === null ? {} : { [AGENT_PID_ENV]: String(input.agentPid) }),
      ...(input.seccompFile === undefined ? {} : { FAAS_SECCOMP_FILE: input.seccompFile }),
      PATH: "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
    },
  };
}
