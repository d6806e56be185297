/**
 * Which accelerator QEMU uses on this host. `/dev/kvm` existing proves little (nested or broken
 * virtualisation can hang every guest), so "auto" boots the probe guest under KVM with a timeout and
 * uses KVM only when that guest ran to its exit; TCG otherwise. The TSC rate TCG guests need is in
 * host-tsc.ts.
 */
import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Accelerator } from "./qemu-argv.ts";
import { buildProbeGuestElf, PROBE_EXIT_PORT, PROBE_EXIT_STATUS, PROBE_MARKER } from "./qemu-probe-guest.ts";

export type AcceleratorChoice = Accelerator | "auto";

export interface AcceleratorDecision {
  readonly accelerator: Accelerator;
  /** One phrase: configured, or what the probe saw. */
  readonly why: string;
}

export interface ProbeResult {
  readonly ok: boolean;
  readonly detail: string;
}

/** Boots the exit variant of the probe guest under `accelerator`; ok when it printed its marker and exited. */
export async function probeAccelerator(
  qemuPath: string,
  accelerator: Accelerator,
  timeoutMs = 10_000,
): Promise<ProbeResult> {
  const dir = await mkdtemp(join(tmpdir(), "snapfaas-qemu-probe-"));
  try {
    const kernel = join(dir, "probe.elf");
    await writeFile(kernel, buildProbeGuestElf("exit"));
    const child = spawn(
      qemuPath,
      [
        ...["-M", "microvm", "-accel", accelerator, "-m", "16M", "-nodefaults", "-no-user-config"],
        ...["-display", "none", "-no-reboot", "-serial", "stdio", "-kernel", kernel],
        ...["-device", `isa-debug-exit,iobase=0x${PROBE_EXIT_PORT.toString(16)},iosize=4`],
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let output = "";
    child.stdout.on("data", (d: Buffer) => {
      output = `${output}${d.toString("latin1")}`.slice(-512);
    });
    child.stderr.on("data", (d: Buffer) => {
      output = `${output}${d.toString("latin1")}`.slice(-512);
    });
    const result = await new Promise<ProbeResult>((resolve) => {
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        resolve({
          ok: false,
          detail: `the probe guest did not finish within ${timeoutMs} ms under ${accelerator}`,
        });
      }, timeoutMs);
      child.once("error", (err) => {
        clearTimeout(timer);
        resolve({ ok: false, detail: `cannot run ${qemuPath}: ${err.message}` });
      });
      child.once("close", (code) => {
        clearTimeout(timer);
        if (code === PROBE_EXIT_STATUS && output.includes(PROBE_MARKER))
          resolve({ ok: true, detail: `the probe guest ran under ${accelerator}` });
        else
          resolve({
            ok: false,
            detail: `the probe guest failed under ${accelerator} (exit ${code}): ${output.trim().slice(-200)}`,
          });
      });
    });
    if (child.exitCode === null && child.signalCode === null) {
      await new Promise((resolve) => child.once("close", resolve));
    }
    return result;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Resolves the configured choice; "auto" runs the KVM probe (injected in tests). */
export async function decideAccelerator(
  choice: AcceleratorChoice,
  probeKvm: () => Promise<ProbeResult>,
): Promise<AcceleratorDecision> {
  if (choice !== "auto") return { accelerator: choice, why: "configured" };
  const probe = await probeKvm();
  return probe.ok
    ? { accelerator: "kvm", why: `auto: ${probe.detail}` }
    : { accelerator: "tcg", why: `auto: ${probe.detail}, using TCG` };
}
