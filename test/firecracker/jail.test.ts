import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, rmdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { IdRangeAllocator } from "../../host-agent/sandbox/firecracker/id-range.ts";
import {
  prepareJail,
  reclaimVmCgroups,
  removeJail,
  removeParentCgroup,
  stageFile,
} from "../../host-agent/sandbox/firecracker/jail-staging.ts";
import { buildJailerArgs, cgroupDir, jailPaths } from "../../host-agent/sandbox/firecracker/jailer-args.ts";
import { isRoot, makeTempDir, removeDir } from "./helpers.ts";

describe("jailer arguments", () => {
  const input = {
    id: "vm-42",
    execFile: "/opt/fc/firecracker",
    uid: 900_042,
    gid: 900_042,
    chrootBase: "/srv/jailer",
    netnsPath: "/var/run/netns/fcslot-3",
    newPidNs: true,
    daemonize: true,
    parentCgroup: "snapfaas",
    cgroups: ["cpu.max=50000 100000", "memory.max=301989888", "io.max=259:0 rbps=1000000"],
    resourceLimits: ["fsize=1048576", "no-file=1024"],
    apiSocket: "/run/firecracker.socket",
  };

  it("builds the full argv in the jailer's terms, Firecracker args after --", () => {
    assert.deepEqual(buildJailerArgs(input), [
      "--id", "vm-42",
      "--exec-file", "/opt/fc/firecracker",
      "--uid", "900042",
      "--gid", "900042",
      "--chroot-base-dir", "/srv/jailer",
      "--netns", "/var/run/netns/fcslot-3",
      "--new-pid-ns",
      "--cgroup-version", "2",
      "--parent-cgroup", "snapfaas",
      "--cgroup", "cpu.max=50000 100000",
      "--cgroup", "memory.max=301989888",
      "--cgroup", "io.max=259:0 rbps=1000000",
      "--resource-limit", "fsize=1048576",
      "--resource-limit", "no-file=1024",
      "--daemonize",
      "--", "--api-sock", "/run/firecracker.socket",
    ]); // biome-ignore format: one flag per line
  });

  it("leaves out optional flags when not asked for", () => {
    const args = buildJailerArgs({
      ...input,
      netnsPath: undefined,
      newPidNs: false,
      daemonize: false,
      cgroups: [],
    });
    for (const flag of ["--netns", "--new-pid-ns", "--daemonize", "--cgroup"])
      assert.equal(args.includes(flag), false, flag);
  });

  it("refuses ids, users and cgroups the jailer would refuse or that would be unsafe", () => {
    assert.throws(() => buildJailerArgs({ ...input, id: "a/b" }), /id/);
    assert.throws(() => buildJailerArgs({ ...input, id: "x".repeat(65) }), /id/);
    assert.throws(() => buildJailerArgs({ ...input, uid: 0 }), /root/);
    assert.throws(() => buildJailerArgs({ ...input, parentCgroup: "../x" }), /parent cgroup/);
    assert.throws(() => buildJailerArgs({ ...input, resourceLimits: ["nproc=1"] }), /resource limit/);
  });

  it("derives the jail layout from chroot base, exec file name and id", () => {
    const p = jailPaths("/srv/jailer/", "/opt/fc/firecracker", "vm-42");
    assert.equal(p.jailDir, "/srv/jailer/firecracker/vm-42");
    assert.equal(p.root, "/srv/jailer/firecracker/vm-42/root");
    assert.equal(p.apiSocket, "/srv/jailer/firecracker/vm-42/root/run/firecracker.socket");
    assert.equal(p.pidFile, "/srv/jailer/firecracker/vm-42/root/firecracker.pid");
    assert.equal(cgroupDir("/sys/fs/cgroup", "snapfaas", "vm-42"), "/sys/fs/cgroup/snapfaas/vm-42");
  });
});

describe("uid/gid range", () => {
  it("hands out distinct ids, refuses when exhausted and reuses released ones last", () => {
    const ids = new IdRangeAllocator(900_000, 3);
    const a = ids.acquire();
    const b = ids.acquire();
    const c = ids.acquire();
    assert.deepEqual([a, b, c], [900_000, 900_001, 900_002]);
    assert.throws(() => ids.acquire(), /in use/);
    ids.release(b);
    ids.release(b);
    assert.equal(ids.inUse, 2);
    assert.equal(ids.acquire(), b);
  });
});

describe("chroot staging on real files", () => {
  let dir: string | undefined;
  let shmDir: string | undefined;
  const owner = { uid: 900_123, gid: 900_124 };

  before(function () {
    if (!isRoot()) {
      console.log("    skipped: chroot staging needs root (chown to the VM's uid)");
      this.skip();
    }
  });
  beforeEach(async () => {
    dir = await makeTempDir("jail");
  });
  afterEach(async () => {
    await removeDir(dir);
    await removeDir(shmDir);
    shmDir = undefined;
  });

  it("hard links read-only files on the same filesystem, without re-owning the shared inode", async () => {
    const base = join(dir!, "base-image");
    await mkdir(base);
    await writeFile(join(base, "memory"), "guest memory");
    const paths = jailPaths(join(dir!, "chroot"), "/usr/bin/firecracker", "vm-1");
    const staged = await prepareJail(paths, owner, [
      { source: join(base, "memory"), jailPath: "/base/memory", readOnly: true },
    ]);
    assert.equal(staged[0]!.method, "link");
    const [src, dst] = await Promise.all([stat(join(base, "memory")), stat(join(paths.root, "base/memory"))]);
    assert.equal(dst.ino, src.ino);
    assert.equal(dst.nlink, 2);
    assert.equal(dst.uid, 0, "a shared inode keeps its owner");
    assert.equal(dst.mode & 0o777, 0o444);
    const folder = await stat(join(paths.root, "base"));
    assert.equal(folder.uid, owner.uid);
    assert.equal(folder.gid, owner.gid);
    assert.equal(folder.mode & 0o777, 0o700);
  });

  it("copies across filesystems and gives the copy to the VM's uid/gid", async function () {
    if (!existsSync("/dev/shm")) {
      console.log("    skipped: no /dev/shm to stage from another filesystem");
      this.skip();
    }
    shmDir = await mkdtemp("/dev/shm/snapfaas-jail-");
    const source = join(shmDir, "code.img");
    await writeFile(source, "code disk");
    const paths = jailPaths(join(dir!, "chroot"), "/usr/bin/firecracker", "vm-2");
    await mkdir(paths.root, { recursive: true });
    if ((await stat(source)).dev === (await stat(paths.root)).dev) {
      console.log("    skipped: /dev/shm and the temp dir share a filesystem here");
      this.skip();
    }
    const staged = await stageFile(paths, owner, { source, jailPath: "/code/abc.img", readOnly: true });
    assert.equal(staged.method, "copy");
    const st = await stat(staged.hostPath);
    assert.notEqual(st.ino, (await stat(source)).ino);
    assert.equal(st.uid, owner.uid);
    assert.equal(st.gid, owner.gid);
    assert.equal(st.mode & 0o777, 0o400);
    assert.equal(await readFile(staged.hostPath, "utf8"), "code disk");
  });

  it("always copies writable files, mode 0600", async () => {
    await writeFile(join(dir!, "scratch.img"), "rw");
    const paths = jailPaths(join(dir!, "chroot"), "/usr/bin/firecracker", "vm-3");
    const [staged] = await prepareJail(paths, owner, [
      { source: join(dir!, "scratch.img"), jailPath: "/scratch.img", readOnly: false },
    ]);
    assert.equal(staged!.method, "copy");
    assert.equal((await stat(staged!.hostPath)).mode & 0o777, 0o600);
  });

  it("removes a stale pid file, api socket and exec copy before a jail is reused", async () => {
    const paths = jailPaths(join(dir!, "chroot"), "/usr/bin/firecracker", "vm-4");
    await mkdir(join(paths.root, "run"), { recursive: true });
    await writeFile(paths.pidFile, "12345");
    await writeFile(paths.apiSocket, "");
    await writeFile(paths.execCopy, "old binary");
    await prepareJail(paths, owner, []);
    assert.equal(existsSync(paths.pidFile), false);
    assert.equal(existsSync(paths.apiSocket), false);
    assert.equal(existsSync(paths.execCopy), false);
  });

  it("refuses jail paths that escape the jail", async () => {
    const paths = jailPaths(join(dir!, "chroot"), "/usr/bin/firecracker", "vm-5");
    await writeFile(join(dir!, "f"), "x");
    await assert.rejects(
      stageFile(paths, owner, { source: join(dir!, "f"), jailPath: "/../../etc/x", readOnly: true }),
      /inside the jail/,
    );
  });

  it("cleanup removes the whole jail folder and the VM's cgroup folder, and is idempotent", async () => {
    const paths = jailPaths(join(dir!, "chroot"), "/usr/bin/firecracker", "vm-6");
    await writeFile(join(dir!, "m"), "x");
    await prepareJail(paths, owner, [{ source: join(dir!, "m"), jailPath: "/base/memory", readOnly: true }]);
    const cgroup = join(dir!, "cgroup", "snapfaas", "vm-6");
    await mkdir(cgroup, { recursive: true });
    await removeJail(paths, cgroup);
    assert.equal(existsSync(paths.jailDir), false);
    assert.equal(existsSync(cgroup), false);
    assert.equal(existsSync(join(dir!, "m")), true, "the base file itself stays");
    await removeJail(paths, cgroup);
    await rm(join(dir!, "m"));
  });

  it("on close, removes the parent cgroup in v2 and every v1 hierarchy, but not one a VM still holds", async () => {
    const root = join(dir!, "cgroups");
    // v2 folder and two v1 hierarchies emptied; one v1 hierarchy still holds another agent's VM.
    for (const d of ["local/a", "memory/local/a", "cpu/local/a", "pids/local/a/vm-9"])
      await mkdir(join(root, d), { recursive: true });
    await removeParentCgroup(root, "local/a");
    assert.equal(existsSync(join(root, "local")), false);
    assert.equal(existsSync(join(root, "memory", "local")), false);
    assert.equal(existsSync(join(root, "cpu", "local")), false);
    assert.equal(existsSync(join(root, "pids", "local", "a", "vm-9")), true, "a held cgroup stays");
    await removeParentCgroup(root, "local/a");
  });

  it("at start, kills what a crashed agent left in its VM cgroups (v1 here) and removes them, leaving other parents alone", async function () {
    const parent = `snapfaas-reclaim-${process.pid}`;
    const memory = "/sys/fs/cgroup/memory";
    if (!existsSync(`${memory}/cgroup.procs`)) {
      console.log("    skipped: no cgroup v1 memory hierarchy to leave a VM cgroup in");
      this.skip();
    }
    const vmDir = `${memory}/${parent}/vm-3`;
    const other = `${memory}/${parent}-other/vm-4`;
    await mkdir(vmDir, { recursive: true });
    await mkdir(other, { recursive: true });
    // A process left in the VM's cgroup, as a QEMU of a SIGKILLed agent would be.
    const left = spawn("sleep", ["60"], { stdio: "ignore" });
    try {
      await writeFile(`${vmDir}/cgroup.procs`, String(left.pid));
      const ended = new Promise((resolve) => left.once("exit", (_code, signal) => resolve(signal)));
      const removed = await reclaimVmCgroups("/sys/fs/cgroup", parent);
      assert.deepEqual(removed, [vmDir]);
      assert.equal(await ended, "SIGKILL", "the leftover process was killed");
      assert.equal(existsSync(vmDir), false);
      assert.equal(existsSync(other), true, "another parent's cgroup stays");
    } finally {
      left.kill("SIGKILL");
      for (const d of [other, `${memory}/${parent}-other`, vmDir, `${memory}/${parent}`])
        await rmdir(d).catch(() => undefined);
    }
  });

  it("retries a cgroup rmdir that is EBUSY while the killed VMM is reaped, and names the cgroup when it stays busy", async () => {
    const paths = jailPaths(join(dir!, "chroot"), "/usr/bin/firecracker", "vm-7");
    const busy = (left: { n: number }) => async (_path: string) => {
      if (left.n-- > 0) throw Object.assign(new Error("EBUSY: resource busy or locked"), { code: "EBUSY" });
    };
    const slept: number[] = [];
    const sleep = async (ms: number) => {
      slept.push(ms);
    };
    const twice = { n: 2 };
    await removeJail(paths, "/sys/fs/cgroup/snapfaas/vm-7", { rmdir: busy(twice), sleep, retryDelayMs: 5 });
    assert.equal(twice.n, -1, "tried three times: two EBUSY, then removed");
    assert.deepEqual(slept, [5, 5]);
    await assert.rejects(
      removeJail(paths, "/sys/fs/cgroup/snapfaas/vm-7", { rmdir: busy({ n: 100 }), sleep, attempts: 4 }),
      /cannot remove the VM's cgroup \/sys\/fs\/cgroup\/snapfaas\/vm-7 \(still busy after 4 tries/,
    );
    const denied = async () => {
      throw Object.assign(new Error("EACCES: permission denied"), { code: "EACCES" });
    };
    await assert.rejects(removeJail(paths, "/x/vm-7", { rmdir: denied, sleep }), /cgroup \/x\/vm-7: EACCES/);
  });
});
