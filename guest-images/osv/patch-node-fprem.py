#!/usr/bin/env python3
"""Rewrites V8's `push rax; popf` flag transfer in a node binary to `sahf`, for OSv's ring 0.

V8's double modulus (the `%` builtins, the interpreter's Mod handlers, typed-array and string
builtins) loops on x87 `fprem` and moves the FPU condition bits into EFLAGS. Its embedded builtins,
built once for any x86-64 CPU, do it without `sahf`:

    fnstsw %ax ; shr $8,%eax ; and $0xff,%eax ; push %rax ; popf ; jp loop

The word popped holds only the FPU bits, so IF (bit 9) is 0. In ring 3 the CPU ignores IF in popf;
OSv runs the application in ring 0, where that popf really disables interrupts: no timer, no
preemption, and the next page fault asserts `ef->rflags & processor::rflags_if`. `sahf` loads the
same bits (C0, C2, C3 of the status word's high byte into CF, PF, ZF) from AH and never touches IF;
V8's own JIT emits exactly `fnstsw %ax ; sahf` when the CPU has LAHF/SAHF in 64-bit mode (every
x86-64 host Firecracker runs on). After the loop the code only reads the FPU stack, never rax.

Usage: patch-node-fprem.py IN OUT. Every occurrence of the exact 12-byte sequence is rewritten
(sahf and a 9-byte nop keep every offset); none found is an error (another V8 may have changed it).
"""

import sys

FPREM_FLAGS = bytes.fromhex("dfe0" "c1e808" "25ff000000" "50" "9d")
SAHF_FLAGS = bytes.fromhex("dfe0" "9e" "660f1f840000000000")
assert len(FPREM_FLAGS) == len(SAHF_FLAGS)


def main() -> int:
    if len(sys.argv) != 3:
        print(f"usage: {sys.argv[0]} IN OUT", file=sys.stderr)
        return 2
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, "rb") as f:
        data = f.read()
    count = data.count(FPREM_FLAGS)
    if count == 0:
        print(f"{src}: no `fnstsw; shr; and; push; popf` sequence found: this V8 differs, check it by hand", file=sys.stderr)
        return 1
    with open(dst, "wb") as f:
        f.write(data.replace(FPREM_FLAGS, SAHF_FLAGS))
    print(f"rewrote {count} push/popf flag transfers to sahf in {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
