/** Wires the firecracker driver with its production dependencies: the VMM spawner, real slots, the doctor. */

import {
  type FirecrackerDriverConfig,
  parseFirecrackerDriverConfig,
} from "../../../contracts/firecracker-driver-config.ts";
import type { DoctorConfig } from "../../doctor/checks.ts";
import { hostFs } from "../../doctor/host-fs.ts";
import { type CommandRunner, execaRunner } from "../command-runner.ts";
import { doctorConfigOf } from "./doctor-config.ts";
import { FirecrackerDriver } from "./firecracker-driver.ts";
import { hostTscKhz } from "./host-tsc.ts";
import { jailerSpawner } from "./jailer-spawner.ts";
import { NetworkSlotPool } from "./network-slots.ts";
import { firecrackerPreflight } from "./preflight.ts";
import { decideAccelerator, probeAccelerator } from "./qemu-accel.ts";
import { qemuSpawner } from "./qemu-spawner.ts";
import type { SpawnVmm } from "./vmm-process.ts";

export function createFirecrackerDriver(
  rawConfig: unknown,
  options: { doctor?: Partial<DoctorConfig>; run?: CommandRunner } = {},
): FirecrackerDriver {
  const config = parseFirecrackerDriverConfig(rawConfig);
  const run = options.run ?? execaRunner;
  // The doctor checks the same binaries and VMM the driver will run, against the hashes the host pinned.
  const doctor = doctorConfigOf(config, options.doctor);
  return new FirecrackerDriver(config, {
    spawnVmm: spawnerFor(config),
    slots: new NetworkSlotPool(config.network, run),
    preflight: () => firecrackerPreflight({ fs: hostFs, exec: run, config: doctor }),
  });
}

/** The jailer + Firecracker, or the QEMU adapter confined the same way (its accelerator decided at the first spawn). */
export function spawnerFor(config: FirecrackerDriverConfig): SpawnVmm {
  if (config.vmm === "firecracker") return jailerSpawner({ jailerPath: config.jailerPath });
  const q = config.qemu;
  const tscKhz = q.tscKhz ?? hostTscKhz();
  return qemuSpawner({
    qemuPath: q.path,
    accelerator: async () =>
      (await decideAccelerator(q.accelerator, () => probeAccelerator(q.path, "kvm", q.probeTimeoutMs)))
        .accelerator,
    ...(tscKhz !== undefined ? { tscKhz } : {}),
    cgroupRoot: config.cgroupRoot,
    migrationTimeoutMs: q.migrationTimeoutMs,
  });
}
