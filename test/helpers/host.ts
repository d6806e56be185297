/** What this machine can do, for tests that need root, bubblewrap or cgroups: they skip with one clear line. */
import type { Context } from "mocha";
import { findOnPath } from "../../host-agent/sandbox/process/preflight.ts";

export const isRoot = process.getuid?.() === 0;
export const hasBwrap = findOnPath("bwrap") !== undefined;

/** Skips the current suite or test (with one line saying why) unless running as root with bubblewrap. */
export function requireJailHost(ctx: Context): void {
  if (!hasBwrap) {
    console.log("      skipped: bubblewrap is not installed (apt-get install -y bubblewrap)");
    ctx.skip();
  }
  if (!isRoot) {
    console.log("      skipped: needs root (cgroups, per-instance uids); CI runs as root");
    ctx.skip();
  }
}
