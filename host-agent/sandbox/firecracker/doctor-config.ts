import type { FirecrackerDriverConfig } from "../../../contracts/firecracker-driver-config.ts";
import { type DoctorConfig, doctorConfigSchema } from "../../doctor/checks.ts";

/** The doctor's config for a driver config: the same binaries, and the hashes the host pinned for them. */
export function doctorConfigOf(
  config: FirecrackerDriverConfig,
  overrides: Partial<DoctorConfig> = {},
): DoctorConfig {
  return doctorConfigSchema.parse({
    ...config.doctor,
    firecrackerPath: config.firecrackerPath,
    jailerPath: config.jailerPath,
    vmm: config.vmm,
    qemuPath: config.qemu.path,
    accelerator: config.qemu.accelerator,
    egress: config.network.egress,
    ...overrides,
  });
}
