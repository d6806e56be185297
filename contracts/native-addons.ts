/**
 * Whether a native addon (a `.node` file: an ELF shared object) can load on a base. A base describes
 * what it offers (NativeAddonAbi, written by its bake); a deploy's addons are read (readAddon) and each
 * one that cannot work is named with why (addonProblem), before any instance tries. Pure: bytes in,
 * facts out. Only 64-bit little-endian ELF is read (x86_64 and aarch64 Linux, the bases' platforms).
 *
 * An addon's Node ABI, as node checks it at load:
 *   - Node-API addons export napi_register_module_v1: any Node with that Node-API version loads them.
 *   - Context-aware addons export node_register_module_v<NODE_MODULE_VERSION>.
 *   - Older NODE_MODULE addons keep the version in the first field of a static struct `_module`, found
 *     through the symbol table (when the addon is not stripped; else only the load can tell).
 */

export interface NativeAddonAbi {
  /** process.versions.node of the base's Node. */
  readonly nodeVersion: string;
  /** process.versions.modules: the NODE_MODULE_VERSION non-Node-API addons must be built for. */
  readonly nodeModuleVersion: number;
  /** ELF e_machine of the base's platform (62: x86_64, 183: aarch64). */
  readonly machine: number;
  /** Highest GLIBC_x.y symbol version the base's libc defines. */
  readonly glibcVersion: string;
  /** Sonames of the shared libraries the base carries (an addon may link only these). */
  readonly libraries: readonly string[];
}

/** A base's `nativeAddons` as stored (base.json): the ABI when it has every field, else a message. */
export function parseNativeAddonAbi(value: unknown): NativeAddonAbi | string {
  const v = value as Partial<Record<keyof NativeAddonAbi, unknown>> | null;
  if (typeof v !== "object" || v === null) return "must be an object";
  if (typeof v.nodeVersion !== "string") return '"nodeVersion" must be a string';
  if (!Number.isInteger(v.nodeModuleVersion)) return '"nodeModuleVersion" must be an integer';
  if (!Number.isInteger(v.machine)) return '"machine" must be an integer';
  if (typeof v.glibcVersion !== "string") return '"glibcVersion" must be a string';
  if (!Array.isArray(v.libraries) || !v.libraries.every((l) => typeof l === "string"))
    return '"libraries" must be a list of sonames';
  return {
    nodeVersion: v.nodeVersion,
    nodeModuleVersion: v.nodeModuleVersion as number,
    machine: v.machine as number,
    glibcVersion: v.glibcVersion,
    libraries: v.libraries as string[],
  };
}

export interface AddonFacts {
  readonly machine: number;
  /** DT_NEEDED: the libraries the addon links. */
  readonly needed: readonly string[];
  readonly napi: boolean;
  /** The NODE_MODULE_VERSION it was built for, when it says so; null for Node-API or unknown. */
  readonly nodeModuleVersion: number | null;
  /** The highest GLIBC_x.y version it needs from libc, or null. */
  readonly glibcNeeded: string | null;
  /** The GLIBC_x.y versions the file itself defines (a libc does). */
  readonly glibcDefined: string | null;
}

export class AddonFormatError extends Error {
  override readonly name = "AddonFormatError";
}

export const MACHINE_NAMES: Readonly<Record<number, string>> = {
  62: "x86_64",
  183: "aarch64",
  3: "x86",
  40: "arm",
};

const SHT_SYMTAB = 2;
const SHT_DYNAMIC = 6;
const SHT_DYNSYM = 11;
const SHT_GNU_VERDEF = 0x6ffffffd;
const SHT_GNU_VERNEED = 0x6ffffffe;
const DT_NEEDED = 1;

interface Section {
  readonly type: number;
  readonly addr: bigint;
  readonly offset: number;
  readonly size: number;
  readonly link: number;
  readonly info: number;
}

/** Compares "2.34" and "2.4" as versions. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split(".").map(Number);
  const pb = b.split(".").map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

function maxVersion(versions: Iterable<string>): string | null {
  let best: string | null = null;
  for (const v of versions) if (best === null || compareVersions(v, best) > 0) best = v;
  return best;
}

export function readAddon(bytes: Buffer): AddonFacts {
  if (bytes.length < 64 || bytes.readUInt32BE(0) !== 0x7f454c46) {
    throw new AddonFormatError("not an ELF file (a native addon is a shared object built for Linux)");
  }
  if (bytes[4] !== 2 || bytes[5] !== 1) {
    throw new AddonFormatError("not a 64-bit little-endian ELF file (the bases run 64-bit Linux)");
  }
  const u64 = (o: number) => Number(bytes.readBigUInt64LE(o));
  const inside = (o: number, n: number) => o >= 0 && n >= 0 && o + n <= bytes.length;
  const machine = bytes.readUInt16LE(0x12);
  const shoff = u64(0x28);
  const shentsize = bytes.readUInt16LE(0x3a);
  const shnum = bytes.readUInt16LE(0x3c);
  if (shentsize < 64 || !inside(shoff, shnum * shentsize))
    throw new AddonFormatError("damaged ELF section table");
  const sections: Section[] = [];
  for (let i = 0; i < shnum; i++) {
    const o = shoff + i * shentsize;
    sections.push({
      type: bytes.readUInt32LE(o + 4),
      addr: bytes.readBigUInt64LE(o + 16),
      offset: u64(o + 24),
      size: u64(o + 32),
      link: bytes.readUInt32LE(o + 40),
      info: bytes.readUInt32LE(o + 44),
    });
  }
  const str = (tableIndex: number, at: number): string => {
    const t = sections[tableIndex];
    if (!t || !inside(t.offset, t.size) || at >= t.size) return "";
    const start = t.offset + at;
    const end = bytes.indexOf(0, start);
    return bytes.toString("latin1", start, end === -1 || end > t.offset + t.size ? t.offset + t.size : end);
  };
  const needed: string[] = [];
  const symbols: Array<{ name: string; value: bigint; defined: boolean }> = [];
  const glibcNeeds = new Set<string>();
  const glibcDefs = new Set<string>();
  for (const s of sections) {
    if (!inside(s.offset, s.size)) continue;
    if (s.type === SHT_DYNAMIC) {
      for (let o = s.offset; o + 16 <= s.offset + s.size; o += 16) {
        const tag = bytes.readBigInt64LE(o);
        if (tag === 0n) break;
        if (tag === BigInt(DT_NEEDED)) needed.push(str(s.link, u64(o + 8)));
      }
    } else if (s.type === SHT_DYNSYM || s.type === SHT_SYMTAB) {
      for (let o = s.offset; o + 24 <= s.offset + s.size; o += 24) {
        const name = str(s.link, bytes.readUInt32LE(o));
        if (name)
          symbols.push({
            name,
            value: bytes.readBigUInt64LE(o + 8),
            defined: bytes.readUInt16LE(o + 6) !== 0,
          });
      }
    } else if (s.type === SHT_GNU_VERNEED) {
      let o = s.offset;
      for (let n = 0; n < s.info && inside(o, 16); n++) {
        const cnt = bytes.readUInt16LE(o + 2);
        const file = str(s.link, bytes.readUInt32LE(o + 4));
        let a = o + bytes.readUInt32LE(o + 8);
        for (let k = 0; k < cnt && inside(a, 16); k++) {
          const name = str(s.link, bytes.readUInt32LE(a + 8));
          if (file.startsWith("libc.so") && name.startsWith("GLIBC_")) glibcNeeds.add(name.slice(6));
          const next = bytes.readUInt32LE(a + 12);
          if (next === 0) break;
          a += next;
        }
        const next = bytes.readUInt32LE(o + 12);
        if (next === 0) break;
        o += next;
      }
    } else if (s.type === SHT_GNU_VERDEF) {
      let o = s.offset;
      for (let n = 0; n < s.info && inside(o, 20); n++) {
        const aux = o + bytes.readUInt32LE(o + 12);
        if (inside(aux, 8)) {
          const name = str(s.link, bytes.readUInt32LE(aux));
          if (/^GLIBC_\d+(\.\d+)*$/.test(name)) glibcDefs.add(name.slice(6));
        }
        const next = bytes.readUInt32LE(o + 16);
        if (next === 0) break;
        o += next;
      }
    }
  }
  const defined = symbols.filter((s) => s.defined);
  const napi = defined.some((s) => s.name === "napi_register_module_v1");
  let nodeModuleVersion: number | null = null;
  for (const s of defined) {
    const m = /^node_register_module_v(\d+)$/.exec(s.name);
    if (m) nodeModuleVersion = Number(m[1]);
  }
  if (nodeModuleVersion === null && !napi) {
    // NODE_MODULE(...): `static node::node_module _module = { NODE_MODULE_VERSION, ... }`.
    const mod = defined.find((s) => s.name === "_module" || s.name === "_ZL7_module");
    const home =
      mod &&
      sections.find(
        (sec) => sec.addr !== 0n && mod.value >= sec.addr && mod.value < sec.addr + BigInt(sec.size),
      );
    if (mod && home && home.type !== 8 /* SHT_NOBITS */) {
      const at = home.offset + Number(mod.value - home.addr);
      if (inside(at, 4)) nodeModuleVersion = bytes.readInt32LE(at);
    }
  }
  return {
    machine,
    needed,
    napi,
    nodeModuleVersion,
    glibcNeeded: maxVersion(glibcNeeds),
    glibcDefined: maxVersion(glibcDefs),
  };
}

/** Why the addon `file` cannot load on the base described by `abi`, or null when nothing says it cannot. */
export function addonProblem(file: string, facts: AddonFacts, abi: NativeAddonAbi): string | null {
  const arch = (m: number) => MACHINE_NAMES[m] ?? `machine ${m}`;
  if (facts.machine !== abi.machine) {
    return `${file} is built for ${arch(facts.machine)}; this base runs ${arch(abi.machine)}: install the ${arch(abi.machine)} build of the package (npm install on an ${arch(abi.machine)} Linux machine)`;
  }
  const musl = facts.needed.find((n) => n.includes("musl"));
  if (musl) {
    return `${file} is built for musl libc (it links ${musl}); this base has glibc ${abi.glibcVersion}: install the package's glibc (linux-gnu) build`;
  }
  if (!facts.napi && facts.nodeModuleVersion !== null && facts.nodeModuleVersion !== abi.nodeModuleVersion) {
    return `${file} is built for NODE_MODULE_VERSION ${facts.nodeModuleVersion}; this base runs Node ${abi.nodeVersion} (NODE_MODULE_VERSION ${abi.nodeModuleVersion}): rebuild it with Node ${abi.nodeVersion.split(".")[0]} (npm rebuild), or use a Node-API build of the package`;
  }
  const missing = facts.needed.filter((n) => !abi.libraries.includes(n));
  if (missing.length > 0) {
    return `${file} links ${missing.join(", ")}, which this base does not carry; the base has: ${abi.libraries.join(", ")}`;
  }
  if (facts.glibcNeeded !== null && compareVersions(facts.glibcNeeded, abi.glibcVersion) > 0) {
    return `${file} needs glibc ${facts.glibcNeeded}; this base has glibc ${abi.glibcVersion}: build it on a system with glibc ${abi.glibcVersion} or older`;
  }
  return null;
}
