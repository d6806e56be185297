/**
 * The smallest guest QEMU can boot the way Firecracker boots Linux (an ELF with a PVH entry note):
 * a few bytes of 32-bit code that print one marker line on the serial port and then either halt for
 * good (a VM that runs and can be paused, snapshotted and restored) or write to isa-debug-exit so QEMU
 * quits with a known code. The accelerator probe boots it: a real boot, without a Linux image.
 */

/** The byte the guest writes to COM1 as soon as it runs. */
export const PROBE_MARKER = "K";
/** I/O port of the `isa-debug-exit` device the exit variant writes to. */
export const PROBE_EXIT_PORT = 0xf4;
/** QEMU's exit status when the guest wrote 1 to isa-debug-exit: (1 << 1) | 1. */
export const PROBE_EXIT_STATUS = 3;

const LOAD_ADDRESS = 0x100000;
const CODE_OFFSET = 0x1000;
/** Xen's ELF note type for the 32-bit PVH entry point; Linux carries the same note. */
const XEN_ELFNOTE_PHYS32_ENTRY = 18;

export function probeGuestCode(variant: "halt" | "exit"): Buffer {
  const marker = PROBE_MARKER.charCodeAt(0);
  // mov dx,0x3f8; mov al,'K'; out dx,al; mov al,'\n'; out dx,al
  const print = [0x66, 0xba, 0xf8, 0x03, 0xb0, marker, 0xee, 0xb0, 0x0a, 0xee];
  const exit = [0xb0, 0x01, 0xe6, PROBE_EXIT_PORT]; // mov al,1; out 0xf4,al
  const halt = [0xf4, 0xeb, 0xfd]; // hlt; jmp back to hlt (interrupts are off at the PVH entry)
  return Buffer.from([...print, ...(variant === "exit" ? exit : []), ...halt]);
}

/** An ELF64 (EM_X86_64) image: one PT_LOAD at 1 MiB and a PT_NOTE with the PVH entry. */
export function buildProbeGuestElf(variant: "halt" | "exit"): Buffer {
  const code = probeGuestCode(variant);
  const ehdrSize = 64;
  const phdrSize = 56;
  const noteOffset = ehdrSize + 2 * phdrSize;
  const note = Buffer.alloc(12 + 4 + 8);
  note.writeUInt32LE(4, 0); // namesz
  note.writeUInt32LE(8, 4); // descsz: a 64-bit address, as in Linux
  note.writeUInt32LE(XEN_ELFNOTE_PHYS32_ENTRY, 8);
  note.write("Xen\0", 12, "latin1");
  note.writeBigUInt64LE(BigInt(LOAD_ADDRESS), 16);
  const file = Buffer.alloc(CODE_OFFSET + code.length);
  // ELF header
  file.write("\x7fELF", 0, "latin1");
  file[4] = 2; // ELFCLASS64
  file[5] = 1; // little endian
  file[6] = 1; // EV_CURRENT
  file.writeUInt16LE(2, 16); // ET_EXEC
  file.writeUInt16LE(62, 18); // EM_X86_64
  file.writeUInt32LE(1, 20);
  file.writeBigUInt64LE(BigInt(LOAD_ADDRESS), 24); // e_entry
  file.writeBigUInt64LE(BigInt(ehdrSize), 32); // e_phoff
  file.writeUInt16LE(ehdrSize, 52);
  file.writeUInt16LE(phdrSize, 54);
  file.writeUInt16LE(2, 56); // e_phnum
  file.writeUInt16LE(64, 58); // e_shentsize (no sections)
  // PT_LOAD
  let p = ehdrSize;
  file.writeUInt32LE(1, p);
  file.writeUInt32LE(5, p + 4); // R+X
  file.writeBigUInt64LE(BigInt(CODE_OFFSET), p + 8);
  file.writeBigUInt64LE(BigInt(LOAD_ADDRESS), p + 16);
  file.writeBigUInt64LE(BigInt(LOAD_ADDRESS), p + 24);
  file.writeBigUInt64LE(BigInt(code.length), p + 32);
  file.writeBigUInt64LE(BigInt(code.length), p + 40);
  file.writeBigUInt64LE(0x1000n, p + 48);
  // PT_NOTE
  p += phdrSize;
  file.writeUInt32LE(4, p);
  file.writeUInt32LE(4, p + 4);
  file.writeBigUInt64LE(BigInt(noteOffset), p + 8);
  file.writeBigUInt64LE(BigInt(note.length), p + 32);
  file.writeBigUInt64LE(BigInt(note.length), p + 40);
  file.writeBigUInt64LE(4n, p + 48);
  note.copy(file, noteOffset);
  code.copy(file, CODE_OFFSET);
  return file;
}
