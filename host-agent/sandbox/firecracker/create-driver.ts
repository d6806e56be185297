/** Wires the firecracker driver with its production dependencies: the jailer, real slots, the doctor. */
import type { DoctorConfig } from "../../doctor/checks.ts";
import { hostFs } from "../../doctor/host-fs.ts";
import { type CommandRunner, execaRunner } from "./command-runner.ts";
import { doctorConfigOf, parseFirecrackerDriverConfig } from "./config.ts";
import { FirecrackerDriver } from "./firecracker-driver.ts";
import { jailerSpawner } from "./jailer-spawner.ts";
import { NetworkSlotPool } from "./network-slots.ts";
import { firecrackerPreflight } from "./preflight.ts";

export function createFirecrackerDriver(
  rawConfig: unknown,
  options: { doctor?: Partial<DoctorConfig>; run?: CommandRunner } = {},
): FirecrackerDriver {
  const config = parseFirecrackerDriverConfig(rawConfig);
  const run = options.run ?? execaRunner;
  // The doctor checks the same binaries the driver will run, against the hashes the host pinned.
  const doctor = doctorConfigOf(config, options.doctor);
  return new FirecrackerDriver(config, {
    spawnVmm: jailerSpawner({ jailerPath: config.jailerPath }),
    slots: new NetworkSlotPool(config.network, run),
    preflight: () => firecrackerPreflight({ fs: hostFs, exec: run, config: doctor }),
  });
}
