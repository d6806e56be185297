/**
 * The Firecracker call sequences snapfaas uses, on top of the API client: boot (for the bake), pause,
 * snapshot, restore, re-apply limits, swap the code disk, resume, shut down. The order here is the
 * documented one; the strict fake in the tests refuses any other.
 */

import { DRIVE_CODE, DRIVE_ROOT } from "../../../contracts/base-layout.ts";
import type { FirecrackerApiClient } from "./api-client.ts";
import type { RateLimiter } from "./api-types.ts";
import {
  bootSourceBody,
  codeDriveBody,
  ctrlAltDelBody,
  drivePatchBody,
  entropyBody,
  instanceStartBody,
  machineConfigBody,
  networkInterfaceBody,
  networkPatchBody,
  rootDriveBody,
  snapshotCreateBody,
  snapshotLoadBody,
  vmStateBody,
} from "./request-bodies.ts";
import type { VmmProcess } from "./vmm-process.ts";

/** Rate limiters a VM runs with; re-sent after every restore because the config may have changed since the bake. */
export interface VmRateLimiters {
  readonly rootDisk?: RateLimiter;
  readonly codeDisk?: RateLimiter;
  readonly networkRx?: RateLimiter;
  readonly networkTx?: RateLimiter;
}

export interface BootPlan {
  readonly bootArgs: string;
  readonly vcpus: number;
  readonly memMiB: number;
  readonly ifaceId: string;
  readonly tapName: string;
  readonly guestMac?: string;
  /** Track dirty pages so Diff snapshots can be taken later. */
  readonly trackDirtyPages?: boolean;
  readonly limiters: VmRateLimiters;
}

/** Configures a fresh Firecracker and starts the guest (bake path). */
export async function bootVm(
  api: FirecrackerApiClient,
  plan: BootPlan,
  kernelJailPath: string,
): Promise<void> {
  await api.putBootSource(bootSourceBody(kernelJailPath, plan.bootArgs));
  await api.putMachineConfig(machineConfigBody(plan.vcpus, plan.memMiB, plan.trackDirtyPages ?? false));
  await api.putDrive(rootDriveBody(plan.limiters.rootDisk));
  await api.putDrive(codeDriveBody(plan.limiters.codeDisk));
  await api.putNetworkInterface(
    networkInterfaceBody(
      plan.ifaceId,
      plan.tapName,
      plan.guestMac,
      plan.limiters.networkRx,
      plan.limiters.networkTx,
    ),
  );
  // virtio-rng gives every clone a host entropy source in addition to the seed sent at init.
  await api.putEntropy(entropyBody());
  await api.action(instanceStartBody());
}

export async function pauseVm(api: FirecrackerApiClient): Promise<void> {
  await api.patchVm(vmStateBody("Paused"));
}

export async function resumeVm(api: FirecrackerApiClient): Promise<void> {
  await api.patchVm(vmStateBody("Resumed"));
}

/** Writes vmstate + memory to the base paths inside the jail. The VM must be paused. */
export async function createSnapshot(
  api: FirecrackerApiClient,
  type: "Full" | "Diff" = "Full",
): Promise<void> {
  await api.createSnapshot(snapshotCreateBody(type));
}

/** Restores the base snapshot into a fresh Firecracker, left paused, NIC moved onto this slot's tap. */
export async function loadSnapshot(
  api: FirecrackerApiClient,
  ifaceId: string,
  tapName: string,
): Promise<void> {
  await api.loadSnapshot(snapshotLoadBody(ifaceId, tapName));
}

/** Limiter state is in the snapshot, but the agent's config wins: send it again after every restore. */
export async function reapplyRateLimiters(
  api: FirecrackerApiClient,
  ifaceId: string,
  limiters: VmRateLimiters,
): Promise<void> {
  if (limiters.rootDisk) await api.patchDrive(drivePatchBody(DRIVE_ROOT, undefined, limiters.rootDisk));
  if (limiters.networkRx || limiters.networkTx) {
    await api.patchNetworkInterface(networkPatchBody(ifaceId, limiters.networkRx, limiters.networkTx));
  }
}

/**
 * Points the code drive at a function's disk. Done while paused so the guest never runs against a
 * half-swapped device; resumed even when the patch fails, so the caller gets a consistent VM to destroy.
 */
export async function swapCodeDisk(
  api: FirecrackerApiClient,
  codeDiskJailPath: string,
  rateLimiter: RateLimiter | undefined,
  alreadyPaused = false,
): Promise<void> {
  if (!alreadyPaused) await pauseVm(api);
  try {
    await api.patchDrive(drivePatchBody(DRIVE_CODE, codeDiskJailPath, rateLimiter));
  } finally {
    await resumeVm(api);
  }
}

/**
 * Asks the guest to shut down (Ctrl+Alt+Del; with `reboot=k` Firecracker then exits) and kills the
 * process if it is still there after `graceMs`.
 */
export async function shutdownVm(api: FirecrackerApiClient, vmm: VmmProcess, graceMs: number): Promise<void> {
  try {
    await api.action(ctrlAltDelBody());
  } catch {
    // Already gone or not running: killing below is the fallback either way.
  }
  const timer = new Promise<"timeout">((resolve) => {
    const t = setTimeout(() => resolve("timeout"), graceMs);
    t.unref();
  });
  if ((await Promise.race([vmm.exited.then(() => "exited" as const), timer])) === "timeout") await vmm.kill();
}
