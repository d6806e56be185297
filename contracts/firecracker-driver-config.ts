/**
 * The Firecracker driver's config file (FAAS_FIRECRACKER_CONFIG): written by a host's boot script
 * (components/user-data.ts), by the bake for its jailed snapshot (guest-images/bake/) and by the local
 * microVM start, read by the driver (host-agent/sandbox/firecracker/). One schema, with the defaults a
 * writer may leave out.
 */
import { isIPv4 } from "node:net";
import { z } from "zod";
import { describeZodIssues } from "./zod-errors.ts";

/** Firecracker token bucket, in the units of the bucket it fills (bytes or operations). */
export const tokenBucketSchema = z.object({
  size: z.int().min(0),
  refillTimeMs: z.int().min(0),
  oneTimeBurst: z.int().min(0).optional(),
});

export const rateLimiterSchema = z
  .object({ bandwidth: tokenBucketSchema.optional(), ops: tokenBucketSchema.optional() })
  .refine((r) => r.bandwidth !== undefined || r.ops !== undefined, {
    message: "give at least one of bandwidth or ops",
  });

/** One cgroup v2 io.max line: the block device (whole disk, "major:minor") and its budgets. */
export const ioLimitSchema = z.object({
  device: z.string().regex(/^\d+:\d+$/, "a whole-disk block device as major:minor, e.g. 259:0"),
  rbps: z.int().positive().optional(),
  wbps: z.int().positive().optional(),
  riops: z.int().positive().optional(),
  wiops: z.int().positive().optional(),
});

/** Limits every microVM gets, from the agent config; per-instance numbers come from SandboxLimits. */
export const firecrackerLimitsSchema = z.object({
  /** vCPUs of the baked machine (Firecracker accepts 1 or an even number up to 32). */
  vcpus: z
    .int()
    .min(1)
    .max(32)
    .refine((n) => n === 1 || n % 2 === 0, { message: "Firecracker accepts 1 or an even vCPU count" })
    .default(1),
  /** Guest memory of the baked machine; fixed by the snapshot, so restores all get this much. */
  memMiB: z.int().min(32).default(256),
  /** cgroup cpu.max period; the quota is the period times SandboxLimits.cpuPercent / 100. */
  cpuPeriodUs: z.int().min(1_000).max(1_000_000).default(100_000),
  /** Added to the guest memory for memory.max: the VMM's own pages and the page cache it touches. */
  vmmOverheadMiB: z.int().min(0).default(32),
  io: z.array(ioLimitSchema).default([]),
  codeDisk: rateLimiterSchema.optional(),
  rootDisk: rateLimiterSchema.optional(),
  networkRx: rateLimiterSchema.optional(),
  networkTx: rateLimiterSchema.optional(),
});

export type TokenBucketConfig = z.infer<typeof tokenBucketSchema>;
export type RateLimiterConfig = z.infer<typeof rateLimiterSchema>;
export type FirecrackerLimits = z.infer<typeof firecrackerLimitsSchema>;

/** sha256 of a pinned binary, from the release's SHA256SUMS. */
export const binarySha256Schema = z
  .string()
  .regex(/^[0-9a-f]{64}$/, "a sha256 in lowercase hex (64 characters)");

const ipv4 = z.string().refine((s) => isIPv4(s), { message: "an IPv4 address" });
const absolutePath = z.string().startsWith("/", { message: "an absolute path" });
const namePrefix = z
  .string()
  .regex(/^[a-z][a-z0-9]{0,7}$/, "1-8 lowercase letters/digits, starting with a letter");

/** Network slot layout: what is identical in every slot (tap, guest IP) and where host-side addresses come from. */
export const networkSlotsConfigSchema = z.object({
  /** netns names are `<prefix>-<index>`; the reclaim pass deletes every netns with this prefix. */
  netnsPrefix: namePrefix.default("fcslot"),
  /** Host ends of the veth pairs are `<prefix>-<index>`. */
  vethPrefix: namePrefix.default("fcv"),
  /** Host-side /30 subnets are carved from this /16: slot i gets base + 4i (host .1, clone address .2). */
  hostSubnetBase: ipv4.default("10.200.0.0"),
  /** The tap the snapshot was baked with; same name, address and MAC in every slot. */
  tapName: z
    .string()
    .regex(/^[a-z][a-z0-9]{0,14}$/)
    .default("tap0"),
  tapAddress: ipv4.default("172.16.0.1"),
  guestAddress: ipv4.default("172.16.0.2"),
  /** Prefix length of the tap/guest link (a /30 holds exactly the tap and the guest). */
  linkPrefixLength: z.int().min(24).max(30).default(30),
  /** Fixed tap MAC: the guest's ARP cache from bake time stays valid in every slot. */
  tapMac: z
    .string()
    .regex(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/)
    .default("02:fa:a5:00:00:01"),
  /** Guest NIC MAC set at bake time (restored with the snapshot). */
  guestMac: z
    .string()
    .regex(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/)
    .default("06:00:ac:10:00:02"),
  /** Firecracker's iface_id of the guest NIC, as baked. */
  ifaceId: z.string().min(1).default("eth0"),
  /** Slots built ahead of time. */
  poolSize: z.int().min(0).max(16_000).default(8),
  /** Hard cap on slots (and so on concurrent VMs); at most 16384 /30s fit in the /16. */
  maxSlots: z.int().min(1).max(16_384).default(1_024),
  /**
   * Guests' way out (off by default: a guest reaches nothing but the host's calls into it). On: the
   * host masquerades guest traffic out of `uplink`, and DNS sent to the guest's gateway (its
   * /etc/resolv.conf, OSv's --nameserver) is forwarded to `dnsResolver`. Link-local addresses other than
   * the resolver (the instance metadata service) stay unreachable either way.
   */
  egress: z
    .object({
      enabled: z.boolean().default(false),
      uplink: z
        .string()
        .regex(/^[A-Za-z0-9_.-]{1,15}$/, "a network interface name")
        .default("eth0"),
      /** The VPC resolver on AWS (reachable from any instance, answered for the ENI's address). */
      dnsResolver: ipv4.default("169.254.169.253"),
    })
    .default({ enabled: false, uplink: "eth0", dnsResolver: "169.254.169.253" }),
});

/**
 * What the host pins for the driver's preflight (the doctor) beyond the binaries' paths: the sha256 of
 * the firecracker and jailer binaries, which the boot script takes from the release's SHA256SUMS after
 * verifying the tarball. Without them preflight refuses the binaries.
 */
export const driverDoctorConfigSchema = z.strictObject({
  firecrackerSha256: binarySha256Schema.optional(),
  jailerSha256: binarySha256Schema.optional(),
  /** Where snapshots and jails live, for the free-space check. */
  snapshotDir: absolutePath.optional(),
  minFreeDiskGiB: z.number().min(0).optional(),
});

/** The QEMU backend (vmm: "qemu"): the Firecracker API served by an adapter that drives QEMU over QMP. */
export const qemuConfigSchema = z.object({
  path: absolutePath.default("/usr/bin/qemu-system-x86_64"),
  /** "auto" boots a probe guest under KVM once and falls back to TCG when it does not run. */
  accelerator: z.enum(["tcg", "kvm", "auto"]).default("auto"),
  /** Host TSC for TCG guests (tsc_early_khz); read from /proc/cpuinfo when absent. */
  tscKhz: z.int().min(1_000).optional(),
  /** Budget of one snapshot create or load (TCG is 30-60x slower than KVM). */
  migrationTimeoutMs: z.int().min(100).default(120_000),
  /** How long the "auto" probe guest may take under KVM before TCG is chosen. */
  probeTimeoutMs: z.int().min(100).default(10_000),
});

export const firecrackerDriverConfigSchema = z.object({
  /**
   * Which VMM runs the microVMs: Firecracker under its jailer (production), or QEMU behind the same
   * API (hosts without Firecracker, or without working KVM: the TCG test lane).
   */
  vmm: z.enum(["firecracker", "qemu"]).default("firecracker"),
  qemu: qemuConfigSchema.default(qemuConfigSchema.parse({})),
  firecrackerPath: absolutePath.default("/usr/local/bin/firecracker"),
  jailerPath: absolutePath.default("/usr/local/bin/jailer"),
  /** Must exist; the jailer puts jails at <chrootBase>/<exec file name>/<id>/root. */
  chrootBase: absolutePath.default("/srv/jailer"),
  /** Each VM runs as its own uid and gid (same number) taken from [first, first + count). */
  idRange: z
    .object({ first: z.int().min(1_000), count: z.int().min(1).max(1_000_000) })
    .default({ first: 900_000, count: 10_000 }),
  cgroupRoot: absolutePath.default("/sys/fs/cgroup"),
  /** Relative cgroup under which the jailer makes one cgroup per VM. */
  parentCgroup: z
    .string()
    .regex(/^[A-Za-z0-9_-]+(\/[A-Za-z0-9_-]+)*$/, "a relative cgroup path without dots")
    .default("snapfaas"),
  daemonize: z.boolean().default(true),
  newPidNs: z.boolean().default(true),
  /** Guest runtime's HTTP port inside the VM. */
  guestPort: z.int().min(1).max(65_535).default(8123),
  /** How long a restored guest may take to answer /_faas/health and /_faas/init. */
  guestReadyTimeoutMs: z.int().min(10).default(5_000),
  /** How long to wait for the API socket after the jailer started Firecracker. */
  apiSocketTimeoutMs: z.int().min(10).default(2_000),
  network: networkSlotsConfigSchema.default(networkSlotsConfigSchema.parse({})),
  limits: firecrackerLimitsSchema.default(firecrackerLimitsSchema.parse({})),
  doctor: driverDoctorConfigSchema.default({}),
});

export type QemuConfig = z.infer<typeof qemuConfigSchema>;
export type NetworkSlotsConfig = z.infer<typeof networkSlotsConfigSchema>;
export type FirecrackerDriverConfig = z.infer<typeof firecrackerDriverConfigSchema>;
/** The file's shape before defaults: what a writer of the config (the host's boot script) produces. */
export type FirecrackerDriverConfigInput = z.input<typeof firecrackerDriverConfigSchema>;

/** Parses the driver config; errors name the key path and what is allowed there. */
export function parseFirecrackerDriverConfig(input: unknown): FirecrackerDriverConfig {
  const result = firecrackerDriverConfigSchema.safeParse(input);
  if (result.success) return result.data;
  const lines = describeZodIssues(result.error.issues, { root: "(root)" }).map((line) => `  ${line}`);
  throw new Error(`invalid firecracker driver config:\n${lines.join("\n")}`);
}
