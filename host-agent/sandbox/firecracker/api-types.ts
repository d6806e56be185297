/**
 * Request and response bodies of the Firecracker HTTP API, written by hand from the official spec
 * (swagger 2.0, `definitions:`). Only what snapfaas sends or reads is modelled; the tests validate
 * every body the driver builds against the spec itself, so a drift shows up as a failing test.
 */

/** A token bucket: `size` tokens refilled over `refill_time` ms; a 0 in either disables it. */
export interface TokenBucket {
  size: number;
  refill_time: number;
  one_time_burst?: number;
}

/** Independent byte and operation budgets for one device. */
export interface RateLimiter {
  bandwidth?: TokenBucket;
  ops?: TokenBucket;
}

export interface BootSource {
  kernel_image_path: string;
  boot_args?: string;
  initrd_path?: string;
}

export interface Drive {
  drive_id: string;
  is_root_device: boolean;
  is_read_only?: boolean;
  path_on_host?: string;
  partuuid?: string;
  cache_type?: "Unsafe" | "Writeback";
  io_engine?: "Sync" | "Async";
  rate_limiter?: RateLimiter;
}

/** Post-boot (and post-load) drive update: a new backing file and/or a new rate limiter. */
export interface PartialDrive {
  drive_id: string;
  path_on_host?: string;
  rate_limiter?: RateLimiter;
}

export interface MachineConfiguration {
  vcpu_count: number;
  mem_size_mib: number;
  smt?: boolean;
  track_dirty_pages?: boolean;
  huge_pages?: "None" | "Transparent" | "2M";
}

export interface NetworkInterface {
  iface_id: string;
  host_dev_name: string;
  guest_mac?: string;
  mtu?: number;
  rx_rate_limiter?: RateLimiter;
  tx_rate_limiter?: RateLimiter;
}

/** Post-boot network update: only the rate limiters can change. */
export interface PartialNetworkInterface {
  iface_id: string;
  rx_rate_limiter?: RateLimiter;
  tx_rate_limiter?: RateLimiter;
}

export interface SnapshotCreateParams {
  snapshot_path: string;
  mem_file_path: string;
  snapshot_type?: "Full" | "Diff";
}

export interface MemoryBackend {
  backend_type: "File" | "Uffd";
  backend_path: string;
}

export interface NetworkOverride {
  iface_id: string;
  host_dev_name: string;
}

export interface SnapshotLoadParams {
  snapshot_path: string;
  mem_backend: MemoryBackend;
  resume_vm?: boolean;
  track_dirty_pages?: boolean;
  network_overrides?: NetworkOverride[];
  vsock_override?: { uds_path: string };
  clock_realtime?: boolean;
}

export interface Vm {
  state: "Paused" | "Resumed";
}

export interface InstanceActionInfo {
  action_type: "InstanceStart" | "SendCtrlAltDel" | "FlushMetrics";
}

export interface Vsock {
  guest_cid: number;
  uds_path: string;
}

export interface EntropyDevice {
  rate_limiter?: RateLimiter;
}

export interface Logger {
  log_path?: string;
  level?: "Error" | "Warning" | "Info" | "Debug" | "Trace" | "Off";
  show_level?: boolean;
  show_log_origin?: boolean;
}

export interface Metrics {
  metrics_path: string;
}

/** The body of every error answer. */
export interface ApiErrorBody {
  fault_message?: string;
}

export interface InstanceInfo {
  app_name: string;
  id: string;
  state: "Not started" | "Running" | "Paused";
  vmm_version: string;
}

export interface FirecrackerVersion {
  firecracker_version: string;
}
