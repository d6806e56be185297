/**
 * The host CPU model, as the bake records it in a base's manifest and as the agent compares it at start:
 * a Firecracker snapshot restores safely only on the CPU model it was taken on. One rule for both sides.
 */
import { readFile } from "node:fs/promises";

/** The first "model name" of /proc/cpuinfo text, or "unknown" when it has none. */
export function cpuModelOf(cpuinfo: string): string {
  const match = /^model name\s*:\s*(.+)$/m.exec(cpuinfo);
  return match?.[1]?.trim() || "unknown";
}

/** /proc/cpuinfo's text ("" where it cannot be read); the path is a parameter so tests can fake it. */
export async function readCpuInfo(file = "/proc/cpuinfo"): Promise<string> {
  return readFile(file, "utf8").catch(() => "");
}
