/**
 * Puts the files a VM needs inside its jail, and removes the jail afterwards. Firecracker can only
 * open what is under its chroot, so every path given to the API must be staged here first.
 */
import {
  chmod,
  chown,
  copyFile,
  link,
  mkdir,
  readdir,
  readFile,
  rm,
  rmdir,
  stat,
  unlink,
} from "node:fs/promises";
import { dirname, join } from "node:path";
import type { JailPaths } from "./jailer-args.ts";

export interface FileToStage {
  /** Host path of the source file. */
  readonly source: string;
  /** Absolute path inside the jail. */
  readonly jailPath: string;
  /** Read-only artifacts (snapshot, memory file, disks) may share one inode between jails. */
  readonly readOnly: boolean;
}

export interface StagedFile {
  readonly jailPath: string;
  readonly hostPath: string;
  readonly method: "link" | "copy";
}

export interface JailOwner {
  readonly uid: number;
  readonly gid: number;
}

/**
 * Prepares `<jailDir>/root` for a (re)used id: removes what a previous run left that would break the
 * jailer (its pid file is opened create-new; a stale socket makes Firecracker's bind fail; the exec
 * copy must not be a hard link), then stages every file.
 */
export async function prepareJail(
  paths: JailPaths,
  owner: JailOwner,
  files: readonly FileToStage[],
): Promise<StagedFile[]> {
  await mkdir(paths.root, { recursive: true, mode: 0o755 });
  await rm(paths.pidFile, { force: true });
  await rm(paths.apiSocket, { force: true });
  await rm(paths.execCopy, { force: true });
  const staged: StagedFile[] = [];
  for (const file of files) staged.push(await stageFile(paths, owner, file));
  return staged;
}

/**
 * Hard link when source and jail are on the same filesystem (no copy, and restores share the page
 * cache of the memory file); copy otherwise. A linked inode is shared with other jails, so it is made
 * world-readable and read-only instead of being chowned to this VM (a chown would re-own it for every
 * jail). Copies belong to the VM's uid/gid: 0400 when read-only, 0600 when writable.
 */
export async function stageFile(paths: JailPaths, owner: JailOwner, file: FileToStage): Promise<StagedFile> {
  if (!file.jailPath.startsWith("/") || file.jailPath.split("/").includes("..")) {
    throw new Error(`jail path must be absolute and stay inside the jail: ${file.jailPath}`);
  }
  const hostPath = join(paths.root, file.jailPath);
  await makeJailDirs(paths.root, dirname(file.jailPath), owner);
  await unlink(hostPath).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== "ENOENT") throw err;
  });
  const [sourceStat, rootStat] = await Promise.all([stat(file.source), stat(paths.root)]);
  if (!sourceStat.isFile()) throw new Error(`not a regular file: ${file.source}`);
  if (file.readOnly && sourceStat.dev === rootStat.dev) {
    try {
      await link(file.source, hostPath);
      await chmod(hostPath, 0o444);
      return { jailPath: file.jailPath, hostPath, method: "link" };
    } catch (err) {
      // EXDEV on bind mounts of the same device, EPERM with protected_hardlinks: fall back to a copy.
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== "EXDEV" && code !== "EPERM" && code !== "EMLINK") throw err;
    }
  }
  await copyFile(file.source, hostPath);
  await chown(hostPath, owner.uid, owner.gid);
  await chmod(hostPath, file.readOnly ? 0o400 : 0o600);
  return { jailPath: file.jailPath, hostPath, method: "copy" };
}

/** Creates the folders of a jail path, owned by the VM and private to it. */
async function makeJailDirs(root: string, jailDir: string, owner: JailOwner): Promise<void> {
  let current = root;
  for (const part of jailDir.split("/").filter((p) => p.length > 0)) {
    current = join(current, part);
    await mkdir(current, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== "EEXIST") throw err;
    });
    await chown(current, owner.uid, owner.gid);
  }
}

export interface CgroupRemoval {
  /** rmdir of the cgroup folder (the real one unless a test gives another). */
  readonly rmdir?: (path: string) => Promise<void>;
  readonly sleep?: (ms: number) => Promise<void>;
  /** How many times an EBUSY rmdir is tried in all, and the pause between tries. */
  readonly attempts?: number;
  readonly retryDelayMs?: number;
}

/**
 * Removes everything a VM left on the host filesystem: its whole jail folder and its cgroup (a cgroup
 * folder is removed with rmdir once its processes are gone; its control files are not real files).
 * Right after a SIGKILL the killed VMM may not be reaped yet, and rmdir answers EBUSY while the cgroup
 * still counts it: that is retried for a moment (by default 40 x 25 ms) instead of leaking the folder.
 */
export async function removeJail(
  paths: JailPaths,
  cgroupPath: string | undefined,
  removal: CgroupRemoval = {},
): Promise<void> {
  await rm(paths.jailDir, { recursive: true, force: true });
  if (cgroupPath) await removeCgroup(cgroupPath, removal);
}

/** rmdir of one cgroup folder, EBUSY retried while a killed process is still counted in it. */
async function removeCgroup(cgroupPath: string, removal: CgroupRemoval): Promise<void> {
  const remove = removal.rmdir ?? rmdir;
  const sleep = removal.sleep ?? ((ms: number) => new Promise<void>((done) => setTimeout(done, ms)));
  const attempts = removal.attempts ?? 40;
  for (let attempt = 1; ; attempt++) {
    try {
      await remove(cgroupPath);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return;
      if (code !== "EBUSY" || attempt >= attempts) {
        throw new Error(
          `cannot remove the VM's cgroup ${cgroupPath}${code === "EBUSY" ? ` (still busy after ${attempts} tries: a process of the VM is still in it)` : ""}: ${(err as Error).message}`,
        );
      }
      await sleep(removal.retryDelayMs ?? 25);
    }
  }
}

/**
 * Ends what a crashed agent left in its parent cgroup: every VM cgroup below it, in the v2 hierarchy
 * and each v1 controller's, has its processes SIGKILLed and is removed. The parent is this driver's
 * alone (as its chroot base is), so anything in it belongs to no live VM. Returns the folders removed.
 */
export async function reclaimVmCgroups(
  cgroupRoot: string,
  parent: string,
  removal: CgroupRemoval = {},
): Promise<string[]> {
  const root = cgroupRoot.replace(/\/+$/, "");
  const removed: string[] = [];
  for (const hierarchy of cgroupHierarchies(root)) {
    const parentDir = `${hierarchy}/${parent}`;
    const entries = await readdir(parentDir, { withFileTypes: true }).catch(() => []);
    for (const entry of entries) {
      if (!entry.isDirectory()) continue;
      const dir = `${parentDir}/${entry.name}`;
      const procs = await readFile(`${dir}/cgroup.procs`, "utf8").catch(() => "");
      for (const pid of procs
        .split("\n")
        .map(Number)
        .filter((n) => Number.isInteger(n) && n > 1)) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // already gone
        }
      }
      await removeCgroup(dir, removal);
      removed.push(dir);
    }
  }
  return removed;
}

/** The v1 hierarchies a VM's cgroup settings can land in (qemu-spawner.ts planCgroups maps onto these). */
const CGROUP_V1_CONTROLLERS = ["memory", "cpu", "pids", "blkio"] as const;

/** The v2 hierarchy at the cgroup root, then each v1 controller's: where a VM's cgroup folders can be. */
function cgroupHierarchies(root: string): string[] {
  return [root, ...CGROUP_V1_CONTROLLERS.map((c) => `${root}/${c}`)];
}

/**
 * Removes the driver's parent cgroup (and each of its own parents, deepest first) once no VM's cgroup
 * is left in it: the v2 folder and the v1 one in each controller's hierarchy, whichever exist. A folder
 * that still holds a cgroup (another agent's VM) stays: rmdir refuses it, and that is not an error.
 */
export async function removeParentCgroup(cgroupRoot: string, parent: string): Promise<void> {
  const root = cgroupRoot.replace(/\/+$/, "");
  const parts = parent.split("/").filter((p) => p.length > 0);
  for (let depth = parts.length; depth > 0; depth--) {
    const relative = parts.slice(0, depth).join("/");
    for (const hierarchy of cgroupHierarchies(root)) {
      await rmdir(`${hierarchy}/${relative}`).catch((err: NodeJS.ErrnoException) => {
        if (!["ENOENT", "EBUSY", "ENOTEMPTY", "ENOTDIR"].includes(err.code ?? "")) throw err;
      });
    }
  }
}
