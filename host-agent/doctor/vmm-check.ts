/**
 * The doctor's VMM line: which VMM the driver would run and, for QEMU, which accelerator. A configured
 * "tcg" is taken as is (no KVM is touched); "kvm" and "auto" boot the probe guest under KVM.
 */
import { z } from "zod";
import type { CommandRunner } from "../sandbox/command-runner.ts";
import {
  type AcceleratorChoice,
  decideAccelerator,
  type ProbeResult,
  probeAccelerator,
} from "../sandbox/firecracker/qemu-accel.ts";

export const vmmDoctorConfigShape = {
  vmm: z.enum(["firecracker", "qemu"]).default("firecracker"),
  qemuPath: z.string().default("/usr/bin/qemu-system-x86_64"),
  accelerator: z.enum(["tcg", "kvm", "auto"]).default("auto"),
};

export interface VmmCheckInput {
  readonly vmm: "firecracker" | "qemu";
  readonly qemuPath: string;
  readonly accelerator: AcceleratorChoice;
}

export interface VmmCheck {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
  readonly fix?: string;
  readonly fatal: boolean;
}

export async function checkVmm(
  exec: CommandRunner,
  input: VmmCheckInput,
  probeKvm: () => Promise<ProbeResult> = () => probeAccelerator(input.qemuPath, "kvm"),
): Promise<VmmCheck> {
  const name = "vmm";
  if (input.vmm === "firecracker")
    return { name, ok: true, detail: "firecracker under the jailer (KVM)", fatal: true };
  let version: string;
  try {
    const { stdout } = await exec(input.qemuPath, ["--version"]);
    version = /version (\S+)/.exec(stdout)?.[1] ?? stdout.split("\n")[0]?.trim() ?? "unknown";
  } catch (err) {
    return {
      name,
      ok: false,
      detail: `qemu at ${input.qemuPath} unavailable: ${(err as Error).message.split("\n")[0]}`,
      fix: "apt-get install qemu-system-x86, or set qemu.path",
      fatal: true,
    };
  }
  const decision = await decideAccelerator(input.accelerator, probeKvm);
  if (input.accelerator === "kvm") {
    const probe = await probeKvm();
    if (!probe.ok) {
      return {
        name,
        ok: false,
        detail: `qemu ${version}, accelerator kvm (configured) does not run guests: ${probe.detail}`,
        fix: 'fix KVM on this host, or set qemu.accelerator to "tcg" or "auto"',
        fatal: true,
      };
    }
  }
  return {
    name,
    ok: true,
    detail: `qemu ${version}, accelerator ${decision.accelerator} (${decision.why})`,
    fatal: true,
  };
}
