/**
 * The process sandbox's seccomp filter: the program is run here by a small classic-BPF interpreter (what
 * the kernel does with it), its syscall numbers are checked against the kernel's own headers, and a real
 * bwrap loads it and stops a call that every capability would otherwise allow.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { execa } from "execa";
import { SECCOMP_FD } from "../../host-agent/sandbox/process/bwrap-args.ts";
import { findOnPath } from "../../host-agent/sandbox/process/preflight.ts";
import {
  AUDIT_ARCH,
  type BpfInstruction,
  CLONE_SYSCALLS,
  DENIED_SYSCALLS,
  deniedSyscalls,
  encodeProgram,
  type FilterArch,
  hostSeccompFilter,
  SECCOMP_RET_ALLOW,
  SECCOMP_RET_ERRNO,
  SECCOMP_RET_KILL_PROCESS,
  seccompProgram,
  X32_SYSCALL_BIT,
} from "../../host-agent/sandbox/process/seccomp.ts";

/** Runs a classic-BPF seccomp program over one call, as the kernel does: the value it returns. */
function runFilter(program: BpfInstruction[], call: { nr: number; arch: number; arg0?: number }): number {
  // struct seccomp_data on a little-endian machine: nr, arch, instruction pointer, args[0] low word, ...
  const data = new Map([
    [0, call.nr >>> 0],
    [4, call.arch >>> 0],
    [16, (call.arg0 ?? 0) >>> 0],
    [20, 0],
  ]);
  let acc = 0;
  for (let pc = 0; pc < program.length; pc++) {
    const { code, jt, jf, k } = program[pc]!;
    if (code === 0x20) acc = data.get(k) ?? Number.NaN;
    else if (code === 0x15) pc += acc === k >>> 0 ? jt : jf;
    else if (code === 0x35) pc += acc >= k >>> 0 ? jt : jf;
    else if (code === 0x45) pc += (acc & k) !== 0 ? jt : jf;
    else if (code === 0x06) return k >>> 0;
    else throw new Error(`unexpected opcode ${code.toString(16)} at ${pc}`);
    if (Number.isNaN(acc)) throw new Error(`load from an unexpected offset at ${pc}`);
  }
  throw new Error("the program fell off its end");
}

const EPERM = (SECCOMP_RET_ERRNO | 1) >>> 0;
/** Calls node makes all the time, by number: read, write, openat, mmap, futex, epoll_wait, exit_group. */
const EVERYDAY: Record<FilterArch, number[]> = {
  x64: [0, 1, 257, 9, 202, 232, 231],
  arm64: [63, 64, 56, 222, 98, 22, 94],
};

describe("process sandbox seccomp filter", () => {
  for (const arch of ["x64", "arm64"] as const) {
    describe(arch, () => {
      const program = seccompProgram(arch);
      const call = (nr: number, a: number = AUDIT_ARCH[arch]) => runFilter(program, { nr, arch: a });

      it("answers EPERM to every denied call", () => {
        const denied = deniedSyscalls(arch);
        assert.ok(denied.size >= Object.keys(DENIED_SYSCALLS).length);
        for (const [name, nr] of denied) assert.equal(call(nr), EPERM, `${name} (${nr})`);
      });

      it("lets every other call through", () => {
        const denied = new Set([...deniedSyscalls(arch).values(), CLONE_SYSCALLS[arch].clone3]);
        for (const nr of EVERYDAY[arch]) assert.equal(call(nr), SECCOMP_RET_ALLOW, `call ${nr}`);
        for (let nr = 0; nr < 460; nr++) {
          if (!denied.has(nr)) assert.equal(call(nr), SECCOMP_RET_ALLOW, `call ${nr}`);
        }
      });

      it("refuses clone with a new-namespace flag, lets threads and forks through, sends clone3 to clone", () => {
        const { clone, clone3 } = CLONE_SYSCALLS[arch];
        // What glibc's pthread_create and fork pass.
        const thread = 0x3d0f00;
        const fork = 0x01200011;
        assert.equal(
          runFilter(program, { nr: clone, arch: AUDIT_ARCH[arch], arg0: thread }),
          SECCOMP_RET_ALLOW,
        );
        assert.equal(
          runFilter(program, { nr: clone, arch: AUDIT_ARCH[arch], arg0: fork }),
          SECCOMP_RET_ALLOW,
        );
        for (const flag of [
          0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000,
        ]) {
          assert.equal(
            runFilter(program, { nr: clone, arch: AUDIT_ARCH[arch], arg0: fork | flag }),
            EPERM,
            `clone with 0x${flag.toString(16)}`,
          );
        }
        assert.equal(call(clone3), (SECCOMP_RET_ERRNO | 38) >>> 0, "ENOSYS: glibc falls back to clone");
      });

      it("kills a call made through another ABI", () => {
        const other = arch === "x64" ? AUDIT_ARCH.arm64 : AUDIT_ARCH.x64;
        assert.equal(call(1, other), SECCOMP_RET_KILL_PROCESS);
        assert.equal(call(1, 0x40000003 /* AUDIT_ARCH_I386 */), SECCOMP_RET_KILL_PROCESS);
      });

      it("encodes struct sock_filter: 8 bytes each, code, jt, jf, k", () => {
        const bytes = encodeProgram(program);
        assert.equal(bytes.length, program.length * 8);
        const last = program.at(-1)!;
        const o = bytes.length - 8;
        assert.deepEqual(
          [bytes.readUInt16LE(o), bytes[o + 2], bytes[o + 3], bytes.readUInt32LE(o + 4)],
          [last.code, last.jt, last.jf, last.k],
        );
        const be = encodeProgram(program, false);
        assert.equal(be.readUInt32BE(4), program[0]!.k);
      });
    });
  }

  it("kills x32 calls on x86_64 (their numbers would slip past a filter of x86_64 numbers)", () => {
    const program = seccompProgram("x64");
    assert.equal(
      runFilter(program, { nr: X32_SYSCALL_BIT | 0, arch: AUDIT_ARCH.x64 }),
      SECCOMP_RET_KILL_PROCESS,
    );
    assert.equal(
      runFilter(program, { nr: X32_SYSCALL_BIT | 101, arch: AUDIT_ARCH.x64 }),
      SECCOMP_RET_KILL_PROCESS,
    );
  });

  it("has no filter for an architecture without a table", () => {
    assert.equal(hostSeccompFilter("ia32"), undefined);
    assert.ok(hostSeccompFilter("x64")!.length > 0);
  });

  it("names each call by the kernel's own number (checked against the installed kernel headers)", function () {
    const x64Header = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h";
    const genericHeader = "/usr/include/asm-generic/unistd.h";
    if (!existsSync(x64Header) || !existsSync(genericHeader)) {
      console.log("      skipped: no kernel headers here (apt-get install -y linux-libc-dev)");
      this.skip();
    }
    const numbersIn = (file: string) => {
      const out = new Map<string, number>();
      for (const m of readFileSync(file, "utf8").matchAll(/#define __NR_(\w+)\s+(\d+)/g))
        if (!out.has(m[1]!)) out.set(m[1]!, Number(m[2]));
      return out;
    };
    const x64 = numbersIn(x64Header);
    const generic = numbersIn(genericHeader);
    for (const [name, nr] of deniedSyscalls("x64")) assert.equal(nr, x64.get(name), `x86_64 ${name}`);
    for (const [name, nr] of deniedSyscalls("arm64")) assert.equal(nr, generic.get(name), `arm64 ${name}`);
    for (const name of ["clone", "clone3"] as const) {
      assert.equal(CLONE_SYSCALLS.x64[name], x64.get(name), `x86_64 ${name}`);
      assert.equal(CLONE_SYSCALLS.arm64[name], generic.get(name), `arm64 ${name}`);
    }
  });

  describe("loaded by a real bwrap", () => {
    let dir: string;
    let busybox: string | undefined;

    before(async function () {
      busybox = findOnPath("busybox");
      if (process.getuid?.() !== 0 || !findOnPath("bwrap") || !busybox || process.arch !== "x64") {
        console.log(
          "      skipped: needs root, bwrap and busybox on x86_64 (apt-get install -y bubblewrap busybox-static)",
        );
        this.skip();
      }
      dir = await mkdtemp(path.join(tmpdir(), "faas-seccomp-"));
      await writeFile(path.join(dir, "filter.bpf"), hostSeccompFilter()!);
    });

    after(async () => {
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    /** `busybox unshare -n true` in a bwrap that keeps every capability: only seccomp can stop it. */
    const unshareInBwrap = (withFilter: boolean) =>
      execa(
        "/bin/sh",
        [
          "-c",
          withFilter ? `exec "$@" ${SECCOMP_FD}<"${path.join(dir, "filter.bpf")}"` : 'exec "$@"',
          "sh",
          "bwrap",
          "--ro-bind",
          "/",
          "/",
          "--dev",
          "/dev",
          "--proc",
          "/proc",
          "--cap-add",
          "ALL",
          ...(withFilter ? ["--seccomp", String(SECCOMP_FD)] : []),
          "--",
          busybox!,
          "unshare",
          "-n",
          "true",
        ],
        { reject: false },
      );

    it("stops unshare in a jail that holds every capability, which succeeds without the filter", async () => {
      const without = await unshareInBwrap(false);
      assert.equal(without.exitCode, 0, `without the filter: ${without.stderr}`);
      const filtered = await unshareInBwrap(true);
      assert.notEqual(filtered.exitCode, 0);
      assert.match(filtered.stderr, /Operation not permitted/);
    });
  });
});
