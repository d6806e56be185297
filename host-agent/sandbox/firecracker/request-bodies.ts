/**
 * Every request body the driver sends, built in one place so the tests can validate each of them
 * against the official spec.
 */

import { baseFiles, DRIVE_CODE, DRIVE_ROOT } from "../../../contracts/base-layout.ts";
import type {
  BootSource,
  Drive,
  EntropyDevice,
  InstanceActionInfo,
  MachineConfiguration,
  NetworkInterface,
  PartialDrive,
  PartialNetworkInterface,
  RateLimiter,
  SnapshotCreateParams,
  SnapshotLoadParams,
  Vm,
} from "./api-types.ts";

export function bootSourceBody(kernelPath: string, bootArgs: string): BootSource {
  return { kernel_image_path: kernelPath, boot_args: bootArgs };
}

export function machineConfigBody(
  vcpus: number,
  memMiB: number,
  trackDirtyPages = false,
): MachineConfiguration {
  return { vcpu_count: vcpus, mem_size_mib: memMiB, smt: false, track_dirty_pages: trackDirtyPages };
}

export function rootDriveBody(rateLimiter?: RateLimiter): Drive {
  return withLimiter(
    {
      drive_id: DRIVE_ROOT,
      path_on_host: baseFiles.rootDisk.jailPath,
      is_root_device: true,
      is_read_only: true,
    },
    rateLimiter,
  );
}

/** The code drive at bake time: an empty placeholder, read-only, swapped after each restore. */
export function codeDriveBody(rateLimiter?: RateLimiter): Drive {
  return withLimiter(
    {
      drive_id: DRIVE_CODE,
      path_on_host: baseFiles.codePlaceholder.jailPath,
      is_root_device: false,
      is_read_only: true,
    },
    rateLimiter,
  );
}

export function networkInterfaceBody(
  ifaceId: string,
  tapName: string,
  guestMac: string | undefined,
  rx?: RateLimiter,
  tx?: RateLimiter,
): NetworkInterface {
  const body: NetworkInterface = { iface_id: ifaceId, host_dev_name: tapName };
  if (guestMac) body.guest_mac = guestMac;
  if (rx) body.rx_rate_limiter = rx;
  if (tx) body.tx_rate_limiter = tx;
  return body;
}

export function entropyBody(rateLimiter?: RateLimiter): EntropyDevice {
  return rateLimiter ? { rate_limiter: rateLimiter } : {};
}

export function instanceStartBody(): InstanceActionInfo {
  return { action_type: "InstanceStart" };
}

export function ctrlAltDelBody(): InstanceActionInfo {
  return { action_type: "SendCtrlAltDel" };
}

export function vmStateBody(state: Vm["state"]): Vm {
  return { state };
}

export function snapshotCreateBody(type: "Full" | "Diff" = "Full"): SnapshotCreateParams {
  return {
    snapshot_path: baseFiles.vmstate.jailPath,
    mem_file_path: baseFiles.memory.jailPath,
    snapshot_type: type,
  };
}

/**
 * Restore paused, memory mapped from the file (not copied), the NIC re-pointed at this slot's tap, and
 * kvmclock advanced by the wall time since the snapshot (clock_realtime; host kernel >= 5.16): without
 * it a clone's clock resumes at bake time. The runtime also steps the clock at init (Linux guests).
 */
export function snapshotLoadBody(ifaceId: string, tapName: string): SnapshotLoadParams {
  return {
    snapshot_path: baseFiles.vmstate.jailPath,
    mem_backend: { backend_type: "File", backend_path: baseFiles.memory.jailPath },
    resume_vm: false,
    network_overrides: [{ iface_id: ifaceId, host_dev_name: tapName }],
    clock_realtime: true,
  };
}

export function drivePatchBody(
  driveId: string,
  pathOnHost?: string,
  rateLimiter?: RateLimiter,
): PartialDrive {
  const body: PartialDrive = { drive_id: driveId };
  if (pathOnHost !== undefined) body.path_on_host = pathOnHost;
  if (rateLimiter) body.rate_limiter = rateLimiter;
  return body;
}

export function networkPatchBody(
  ifaceId: string,
  rx?: RateLimiter,
  tx?: RateLimiter,
): PartialNetworkInterface {
  const body: PartialNetworkInterface = { iface_id: ifaceId };
  if (rx) body.rx_rate_limiter = rx;
  if (tx) body.tx_rate_limiter = tx;
  return body;
}

function withLimiter(drive: Drive, rateLimiter: RateLimiter | undefined): Drive {
  return rateLimiter ? { ...drive, rate_limiter: rateLimiter } : drive;
}
