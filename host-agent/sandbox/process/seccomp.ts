/**
 * The process sandbox's seccomp filter: a classic-BPF program that bwrap loads (`--seccomp FD`) right
 * before it runs the guest. The namespaces, the uid drop and the empty capability set already make these
 * calls fail; the filter keeps them from reaching the kernel at all, which is where escapes start (the
 * call's own bugs, io_uring, BPF, userfaultfd-timed races). clone may not ask for a new namespace, and
 * clone3 (whose flags a filter cannot read) answers ENOSYS, so glibc uses clone. Calls of another ABI
 * (i386 via int 0x80, x32) kill the process: node never makes them, and they would bypass a filter
 * keyed by x86_64 numbers.
 */

export type FilterArch = "x64" | "arm64";

/** Syscalls no guest needs, with their numbers on x86_64 and on arm64 (the generic table). */
export const DENIED_SYSCALLS: Readonly<Record<string, { readonly x64: number; readonly arm64: number }>> = {
  // Other processes' memory and the kernel itself.
  ptrace: { x64: 101, arm64: 117 },
  process_vm_readv: { x64: 310, arm64: 270 },
  process_vm_writev: { x64: 311, arm64: 271 },
  kexec_load: { x64: 246, arm64: 104 },
  kexec_file_load: { x64: 320, arm64: 294 },
  init_module: { x64: 175, arm64: 105 },
  finit_module: { x64: 313, arm64: 273 },
  delete_module: { x64: 176, arm64: 106 },
  bpf: { x64: 321, arm64: 280 },
  perf_event_open: { x64: 298, arm64: 241 },
  userfaultfd: { x64: 323, arm64: 282 },
  // libuv falls back to its thread pool when io_uring cannot be set up.
  io_uring_setup: { x64: 425, arm64: 425 },
  io_uring_enter: { x64: 426, arm64: 426 },
  io_uring_register: { x64: 427, arm64: 427 },
  // Mounts and namespaces: the jail's are final.
  mount: { x64: 165, arm64: 40 },
  umount2: { x64: 166, arm64: 39 },
  pivot_root: { x64: 155, arm64: 41 },
  open_tree: { x64: 428, arm64: 428 },
  move_mount: { x64: 429, arm64: 429 },
  fsopen: { x64: 430, arm64: 430 },
  fsconfig: { x64: 431, arm64: 431 },
  fsmount: { x64: 432, arm64: 432 },
  fspick: { x64: 433, arm64: 433 },
  mount_setattr: { x64: 442, arm64: 442 },
  unshare: { x64: 272, arm64: 97 },
  setns: { x64: 308, arm64: 268 },
  open_by_handle_at: { x64: 304, arm64: 265 },
  name_to_handle_at: { x64: 303, arm64: 264 },
  // Kernel keyrings: shared by uid across the host, not namespaced.
  keyctl: { x64: 250, arm64: 219 },
  add_key: { x64: 248, arm64: 217 },
  request_key: { x64: 249, arm64: 218 },
  // The host's clock, swap, power, accounting, quotas and kernel log.
  settimeofday: { x64: 164, arm64: 170 },
  clock_settime: { x64: 227, arm64: 112 },
  clock_adjtime: { x64: 305, arm64: 266 },
  adjtimex: { x64: 159, arm64: 171 },
  swapon: { x64: 167, arm64: 224 },
  swapoff: { x64: 168, arm64: 225 },
  reboot: { x64: 169, arm64: 142 },
  acct: { x64: 163, arm64: 89 },
  quotactl: { x64: 179, arm64: 60 },
  quotactl_fd: { x64: 443, arm64: 443 },
  syslog: { x64: 103, arm64: 116 },
  vhangup: { x64: 153, arm64: 58 },
  lookup_dcookie: { x64: 212, arm64: 18 },
  fanotify_init: { x64: 300, arm64: 262 },
};

/** Calls only x86_64 has. */
const DENIED_X64_ONLY: Readonly<Record<string, number>> = {
  iopl: 172,
  ioperm: 173,
  uselib: 134,
  create_module: 174,
  _sysctl: 156,
};

/** AUDIT_ARCH_* from linux/audit.h: the ABI a call came in through. */
export const AUDIT_ARCH = { x64: 0xc000003e, arm64: 0xc00000b7 } as const;
/** Set in the number of every x32-ABI call on x86_64. */
export const X32_SYSCALL_BIT = 0x40000000;

export const SECCOMP_RET_KILL_PROCESS = 0x80000000;
export const SECCOMP_RET_ERRNO = 0x00050000;
export const SECCOMP_RET_ALLOW = 0x7fff0000;
const EPERM = 1;
const ENOSYS = 38;

// Classic BPF opcodes (linux/filter.h) and the offsets of struct seccomp_data's fields.
const LD_W_ABS = 0x20;
const JEQ_K = 0x15;
const JGE_K = 0x35;
const JSET_K = 0x45;
const RET_K = 0x06;
const DATA_NR = 0;
const DATA_ARCH = 4;

export interface BpfInstruction {
  readonly code: number;
  readonly jt: number;
  readonly jf: number;
  readonly k: number;
}

export function deniedSyscalls(arch: FilterArch): Map<string, number> {
  const out = new Map<string, number>();
  for (const [name, nr] of Object.entries(DENIED_SYSCALLS)) out.set(name, nr[arch]);
  if (arch === "x64") for (const [name, nr] of Object.entries(DENIED_X64_ONLY)) out.set(name, nr);
  return out;
}

/** clone and clone3, which can make namespaces without calling unshare. */
export const CLONE_SYSCALLS: Readonly<
  Record<FilterArch, { readonly clone: number; readonly clone3: number }>
> = {
  x64: { clone: 56, clone3: 435 },
  arm64: { clone: 220, clone3: 435 },
};

/** CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET: clone's flags that make namespaces. */
export const CLONE_NEW_NAMESPACES =
  0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000;

/** Where the low 32 bits of a call's first argument sit in struct seccomp_data. */
const dataArg0Low = (littleEndian: boolean) => (littleEndian ? 16 : 20);

type Step = BpfInstruction | { code: number; k: number; jt?: string; jf?: string } | { label: string };

/** Lays out steps with named jump targets (forward only, as classic BPF requires). */
function assemble(steps: Step[]): BpfInstruction[] {
  const at = new Map<string, number>();
  const code: Array<Exclude<Step, { label: string }>> = [];
  for (const step of steps) {
    if ("label" in step) at.set(step.label, code.length);
    else code.push(step);
  }
  return code.map((ins, pc) => {
    const offset = (target: string | number | undefined) => {
      if (typeof target !== "string") return target ?? 0;
      const to = at.get(target);
      if (to === undefined || to <= pc) throw new Error(`seccomp filter: no forward label ${target}`);
      if (to - pc - 1 > 255) throw new Error("seccomp filter too long for 8-bit jumps");
      return to - pc - 1;
    };
    return { code: ins.code, jt: offset(ins.jt), jf: offset(ins.jf), k: ins.k };
  });
}

/**
 * The filter as instructions: wrong ABI -> kill; a denied call, or clone asking for a new namespace ->
 * EPERM; clone3 -> ENOSYS (its flags sit behind a pointer a filter cannot read, and glibc falls back to
 * clone on ENOSYS); anything else -> allowed.
 */
export function seccompProgram(arch: FilterArch, littleEndian = true): BpfInstruction[] {
  const numbers = [...new Set(deniedSyscalls(arch).values())].sort((a, b) => a - b);
  const { clone, clone3 } = CLONE_SYSCALLS[arch];
  return assemble([
    { code: LD_W_ABS, k: DATA_ARCH },
    { code: JEQ_K, k: AUDIT_ARCH[arch], jt: "native", jf: "kill" },
    { label: "native" },
    { code: LD_W_ABS, k: DATA_NR },
    ...(arch === "x64" ? [{ code: JGE_K, k: X32_SYSCALL_BIT, jt: "kill" }] : []),
    { code: JEQ_K, k: clone, jt: "clone" },
    { code: JEQ_K, k: clone3, jt: "enosys" },
    ...numbers.map((nr) => ({ code: JEQ_K, k: nr, jt: "eperm" })),
    { code: RET_K, k: SECCOMP_RET_ALLOW },
    { label: "clone" },
    { code: LD_W_ABS, k: dataArg0Low(littleEndian) },
    { code: JSET_K, k: CLONE_NEW_NAMESPACES, jt: "eperm" },
    { code: RET_K, k: SECCOMP_RET_ALLOW },
    { label: "kill" },
    { code: RET_K, k: SECCOMP_RET_KILL_PROCESS },
    { label: "enosys" },
    { code: RET_K, k: SECCOMP_RET_ERRNO | ENOSYS },
    { label: "eperm" },
    { code: RET_K, k: SECCOMP_RET_ERRNO | EPERM },
  ]);
}

/** struct sock_filter[] in the host's byte order, as bwrap reads it from its --seccomp fd. */
export function encodeProgram(program: BpfInstruction[], littleEndian = true): Buffer {
  const out = Buffer.alloc(program.length * 8);
  program.forEach((ins, n) => {
    const o = n * 8;
    if (littleEndian) {
      out.writeUInt16LE(ins.code, o);
      out.writeUInt32LE(ins.k >>> 0, o + 4);
    } else {
      out.writeUInt16BE(ins.code, o);
      out.writeUInt32BE(ins.k >>> 0, o + 4);
    }
    out.writeUInt8(ins.jt, o + 2);
    out.writeUInt8(ins.jf, o + 3);
  });
  return out;
}

/** The filter for the machine the agent runs on; undefined where no table exists (the jail runs without). */
export function hostSeccompFilter(arch: string = process.arch, littleEndian = true): Buffer | undefined {
  if (arch !== "x64" && arch !== "arm64") return undefined;
  return encodeProgram(seccompProgram(arch, littleEndian), littleEndian);
}
