/** Test helpers for the QEMU backend: skip lines, the spec check as an extra validator, test netns with a tap. */
import { existsSync } from "node:fs";
import { execa } from "execa";
import type { Context } from "mocha";
import {
  type LinuxGuestImage,
  LinuxImageUnavailable,
  linuxGuestImage,
} from "../../guest-images/linux/local-image.ts";
import type { BodyValidator } from "../../host-agent/sandbox/firecracker/qemu-api-server.ts";
import { findOnPath } from "../../host-agent/sandbox/process/preflight.ts";
import { loadSpec, specPath } from "./spec-schemas.ts";

export const qemuPath = findOnPath("qemu-system-x86_64");

/** Skips unless QEMU is installed (and, with `needRoot`, unless running as root). */
export function requireQemu(ctx: Context, needRoot: boolean): string {
  if (!qemuPath) {
    console.log("      skipped: qemu-system-x86_64 is not installed (apt-get install -y qemu-system-x86)");
    ctx.skip();
  }
  if (needRoot && process.getuid?.() !== 0) {
    console.log("      skipped: needs root (netns, tap, cgroups, per-VM uids); CI runs as root");
    ctx.skip();
  }
  return qemuPath as string;
}

/** The official spec's body check when ../shared has it; the adapter's own schemas run either way. */
export function specValidator(): BodyValidator | undefined {
  if (!existsSync(specPath)) return undefined;
  const spec = loadSpec();
  return (method, path, body) => spec.validateRequest(method, path, body);
}

/** A network namespace holding `tap0` owned by `uid` (what a leased slot gives a VM). */
export async function makeTapNetns(name: string, uid: number): Promise<string> {
  await execa("ip", ["netns", "add", name]);
  await execa("ip", [
    "-n",
    name,
    "tuntap",
    "add",
    "dev",
    "tap0",
    "mode",
    "tap",
    "user",
    String(uid),
    "group",
    String(uid),
  ]);
  return `/var/run/netns/${name}`;
}

export async function removeNetns(name: string): Promise<void> {
  await execa("ip", ["netns", "del", name], { reject: false });
}

/** The cached Linux guest image, or a one-line skip when this machine has none (`npm run guest:linux`). */
export async function linuxImageOrSkip(
  ctx: Context,
  options?: Parameters<typeof linuxGuestImage>[0],
): Promise<LinuxGuestImage> {
  try {
    return await linuxGuestImage(options);
  } catch (err) {
    if (!(err instanceof LinuxImageUnavailable)) throw err;
    console.log(`      skipped: ${err.message}`);
    ctx.skip();
  }
}
