/**
 * Reads the host's /proc/cpuinfo for the CPU model rule (contracts/base-manifest.ts cpuModelOf), which
 * the bake records in a base's manifest and the agent compares at start.
 */
import { readFile } from "node:fs/promises";

/** /proc/cpuinfo's text ("" where it cannot be read); the path is a parameter so tests can fake it. */
export async function readCpuInfo(file = "/proc/cpuinfo"): Promise<string> {
  return readFile(file, "utf8").catch(() => "");
}
