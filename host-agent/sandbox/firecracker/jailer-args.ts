/** Builds the jailer command line. Pure: the same config always gives the same argv. */
import { basename } from "node:path";

export interface JailerArgsInput {
  /** VM id: 1-64 alphanumerics or '-' (the jailer's rule). */
  readonly id: string;
  /** Host path of the Firecracker binary; the jailer copies it into the jail. */
  readonly execFile: string;
  readonly uid: number;
  readonly gid: number;
  readonly chrootBase: string;
  /** `/var/run/netns/<name>` of the VM's network slot. */
  readonly netnsPath?: string;
  readonly newPidNs: boolean;
  readonly daemonize: boolean;
  /** Relative cgroup (v2) the per-VM cgroup is created under. */
  readonly parentCgroup: string;
  /** `file=value` cgroup v2 settings, e.g. `cpu.max=50000 100000`. */
  readonly cgroups: readonly string[];
  /** `res=value` rlimits: `fsize` and `no-file`. */
  readonly resourceLimits: readonly string[];
  /** API socket path inside the jail. */
  readonly apiSocket: string;
  /** Extra Firecracker arguments after `--` (the jailer already passes --id). */
  readonly firecrackerArgs?: readonly string[];
}

const ID_PATTERN = /^[A-Za-z0-9-]{1,64}$/;

export function buildJailerArgs(input: JailerArgsInput): string[] {
  if (!ID_PATTERN.test(input.id))
    throw new Error(`jailer id must be 1-64 letters, digits or '-': ${input.id}`);
  if (!Number.isInteger(input.uid) || input.uid <= 0 || !Number.isInteger(input.gid) || input.gid <= 0) {
    throw new Error(`jailed VMs never run as root: uid ${input.uid} gid ${input.gid}`);
  }
  if (
    input.parentCgroup.startsWith("/") ||
    input.parentCgroup.split("/").some((p) => p === "" || p.includes("."))
  ) {
    throw new Error(`parent cgroup must be relative and free of '.': ${input.parentCgroup}`);
  }
  const args = [
    "--id",
    input.id,
    "--exec-file",
    input.execFile,
    "--uid",
    String(input.uid),
    "--gid",
    String(input.gid),
    "--chroot-base-dir",
    input.chrootBase,
  ];
  if (input.netnsPath) args.push("--netns", input.netnsPath);
  if (input.newPidNs) args.push("--new-pid-ns");
  args.push("--cgroup-version", "2", "--parent-cgroup", input.parentCgroup);
  for (const setting of input.cgroups) {
    if (!/^[a-z]+\.[a-z.]+=.+$/.test(setting))
      throw new Error(`cgroup setting must be file=value: ${setting}`);
    args.push("--cgroup", setting);
  }
  for (const limit of input.resourceLimits) {
    if (!/^(fsize|no-file)=\d+$/.test(limit))
      throw new Error(`resource limit must be fsize=N or no-file=N: ${limit}`);
    args.push("--resource-limit", limit);
  }
  if (input.daemonize) args.push("--daemonize");
  args.push("--", "--api-sock", input.apiSocket, ...(input.firecrackerArgs ?? []));
  return args;
}

/** The jail layout the jailer creates for an exec file and id. */
export interface JailPaths {
  /** `<chrootBase>/<exec name>/<id>`: removed whole on destroy. */
  readonly jailDir: string;
  /** `<jailDir>/root`: the VM's `/`. */
  readonly root: string;
  /** Host path of the API socket. */
  readonly apiSocket: string;
  /** Host path of the pid file the jailer writes (`/<exec name>.pid` in the jail). */
  readonly pidFile: string;
  /** Host path of the jailer's copy of the Firecracker binary. */
  readonly execCopy: string;
}

/** Jail path of the API socket: the `run` folder is made and owned for the VM by the jailer. */
export const API_SOCKET_JAIL_PATH = "/run/firecracker.socket";

export function jailPaths(chrootBase: string, execFile: string, id: string): JailPaths {
  const execName = basename(execFile);
  const jailDir = `${chrootBase.replace(/\/+$/, "")}/${execName}/${id}`;
  const root = `${jailDir}/root`;
  return {
    jailDir,
    root,
    apiSocket: `${root}${API_SOCKET_JAIL_PATH}`,
    pidFile: `${root}/${execName}.pid`,
    execCopy: `${root}/${execName}`,
  };
}

/** The per-VM cgroup the jailer creates: `<cgroupRoot>/<parent>/<id>`. */
export function cgroupDir(cgroupRoot: string, parentCgroup: string, id: string): string {
  return `${cgroupRoot.replace(/\/+$/, "")}/${parentCgroup}/${id}`;
}
