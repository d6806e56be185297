/**
 * The bodies of the Firecracker API subset the QEMU adapter serves, as strict zod schemas (unknown
 * keys are refused, as Firecracker's deny_unknown_fields does). Written from the same spec as
 * api-types.ts; the `satisfies` lines tie each schema to the hand-written type the driver sends, and
 * the adapter's tests additionally validate every body against the official spec.
 */
import { z } from "zod";
import { describeZodIssues } from "../../../contracts/zod-errors.ts";
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

const u64 = z.int().min(0);
const tokenBucket = z.strictObject({ size: u64, refill_time: u64, one_time_burst: u64.optional() });
export const rateLimiterSchema = z.strictObject({
  bandwidth: tokenBucket.optional(),
  ops: tokenBucket.optional(),
}) satisfies z.ZodType<RateLimiter>;

/** Firecracker's id rule for drives and network interfaces (alphanumerics and `_`). */
const deviceId = z.string().regex(/^[A-Za-z0-9_]{1,64}$/, "1-64 letters, digits or '_'");
const mac = z.string().regex(/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/, "a MAC address aa:bb:cc:dd:ee:ff");

export const bootSourceSchema = z.strictObject({
  kernel_image_path: z.string().min(1),
  boot_args: z.string().optional(),
  initrd_path: z.string().optional(),
}) satisfies z.ZodType<BootSource>;

export const machineConfigSchema = z.strictObject({
  vcpu_count: z.int().min(1).max(32),
  mem_size_mib: z.int().min(1),
  smt: z.boolean().optional(),
  track_dirty_pages: z.boolean().optional(),
  huge_pages: z.enum(["None", "Transparent", "2M"]).optional(),
  cpu_template: z.string().optional(),
}) satisfies z.ZodType<MachineConfiguration>;

export const driveSchema = z.strictObject({
  drive_id: deviceId,
  is_root_device: z.boolean(),
  is_read_only: z.boolean().optional(),
  path_on_host: z.string().min(1).optional(),
  partuuid: z.string().optional(),
  cache_type: z.enum(["Unsafe", "Writeback"]).optional(),
  io_engine: z.enum(["Sync", "Async"]).optional(),
  rate_limiter: rateLimiterSchema.optional(),
  socket: z.string().optional(),
}) satisfies z.ZodType<Drive>;

export const partialDriveSchema = z.strictObject({
  drive_id: deviceId,
  path_on_host: z.string().min(1).optional(),
  rate_limiter: rateLimiterSchema.optional(),
}) satisfies z.ZodType<PartialDrive>;

export const networkInterfaceSchema = z.strictObject({
  iface_id: deviceId,
  host_dev_name: z.string().regex(/^[A-Za-z0-9_.-]{1,15}$/, "an interface name of 1-15 characters"),
  guest_mac: mac.optional(),
  mtu: z.int().min(68).max(65_535).optional(),
  rx_rate_limiter: rateLimiterSchema.optional(),
  tx_rate_limiter: rateLimiterSchema.optional(),
}) satisfies z.ZodType<NetworkInterface>;

export const partialNetworkInterfaceSchema = z.strictObject({
  iface_id: deviceId,
  rx_rate_limiter: rateLimiterSchema.optional(),
  tx_rate_limiter: rateLimiterSchema.optional(),
}) satisfies z.ZodType<PartialNetworkInterface>;

export const entropySchema = z.strictObject({
  rate_limiter: rateLimiterSchema.optional(),
}) satisfies z.ZodType<EntropyDevice>;

export const actionSchema = z.strictObject({
  action_type: z.enum(["InstanceStart", "SendCtrlAltDel", "FlushMetrics"]),
}) satisfies z.ZodType<InstanceActionInfo>;

export const vmStateSchema = z.strictObject({ state: z.enum(["Paused", "Resumed"]) }) satisfies z.ZodType<Vm>;

export const snapshotCreateSchema = z.strictObject({
  snapshot_path: z.string().min(1),
  mem_file_path: z.string().min(1),
  snapshot_type: z.enum(["Full", "Diff"]).optional(),
}) satisfies z.ZodType<SnapshotCreateParams>;

export const snapshotLoadSchema = z.strictObject({
  snapshot_path: z.string().min(1),
  mem_backend: z.strictObject({ backend_type: z.enum(["File", "Uffd"]), backend_path: z.string().min(1) }),
  resume_vm: z.boolean().optional(),
  track_dirty_pages: z.boolean().optional(),
  enable_diff_snapshots: z.boolean().optional(),
  network_overrides: z
    .array(z.strictObject({ iface_id: deviceId, host_dev_name: z.string().min(1) }))
    .optional(),
  vsock_override: z.strictObject({ uds_path: z.string() }).optional(),
  clock_realtime: z.boolean().optional(),
}) satisfies z.ZodType<SnapshotLoadParams>;

/** The routes the adapter serves, by `METHOD template`, with the schema of their body (null: no body). */
export const adapterRoutes = {
  "GET /": null,
  "GET /version": null,
  "GET /machine-config": null,
  "PUT /boot-source": bootSourceSchema,
  "PUT /machine-config": machineConfigSchema,
  "PUT /drives/{drive_id}": driveSchema,
  "PATCH /drives/{drive_id}": partialDriveSchema,
  "PUT /network-interfaces/{iface_id}": networkInterfaceSchema,
  "PATCH /network-interfaces/{iface_id}": partialNetworkInterfaceSchema,
  "PUT /entropy": entropySchema,
  "PUT /actions": actionSchema,
  "PATCH /vm": vmStateSchema,
  "PUT /snapshot/create": snapshotCreateSchema,
  "PUT /snapshot/load": snapshotLoadSchema,
} as const satisfies Record<string, z.ZodType | null>;

export type AdapterRoute = keyof typeof adapterRoutes;

/** `METHOD template` of a concrete request, or undefined when the adapter does not serve it. */
export function matchAdapterRoute(
  method: string,
  path: string,
): { route: AdapterRoute; id?: string } | undefined {
  const device = /^\/(drives|network-interfaces)\/([^/]+)$/.exec(path);
  if (device) {
    const template = device[1] === "drives" ? "/drives/{drive_id}" : "/network-interfaces/{iface_id}";
    const route = `${method} ${template}`;
    return route in adapterRoutes
      ? { route: route as AdapterRoute, id: decodeURIComponent(device[2]!) }
      : undefined;
  }
  const route = `${method} ${path}`;
  return route in adapterRoutes ? { route: route as AdapterRoute } : undefined;
}

/** Validates a body for a route; returns a message naming the bad keys, or null when it is valid. */
export function validateAdapterBody(route: AdapterRoute, body: unknown): string | null {
  const schema = adapterRoutes[route];
  if (schema === null) return body === undefined ? null : `${route} takes no body`;
  const result = schema.safeParse(body);
  if (result.success) return null;
  return describeZodIssues(result.error.issues, { root: "(body)" }).join("; ");
}
