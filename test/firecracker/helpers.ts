/**
 * Shared test helpers: temp dirs that are always removed, a base image produced through the fake, and
 * what a network slot's egress gate holds.
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { EGRESS_GATE, NFT_TABLE } from "../../host-agent/sandbox/firecracker/network-slots.ts";

export async function makeTempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `snapfaas-${prefix}-`));
}

export async function removeDir(dir: string | undefined): Promise<void> {
  if (dir) await rm(dir, { recursive: true, force: true });
}

/** Writes placeholder bake inputs (kernel, root disk, empty code disk) under `<root>/base`. */
export async function writeBakeInputs(root: string): Promise<void> {
  await mkdir(join(root, "base"), { recursive: true });
  await writeFile(join(root, "base", "kernel.elf"), "not a kernel\n");
  await writeFile(join(root, "base", "root.img"), "not a root disk\n");
  await writeFile(join(root, "base", "code-empty.img"), "");
}

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** The rules of a network slot's egress gate, as nft lists them inside the slot's namespace. */
export async function slotEgressGate(netns: string): Promise<string> {
  const listed = await execa("ip", [
    "netns",
    "exec",
    netns,
    "nft",
    "list",
    "chain",
    "ip",
    NFT_TABLE,
    EGRESS_GATE,
  ]);
  return listed.stdout;
}
