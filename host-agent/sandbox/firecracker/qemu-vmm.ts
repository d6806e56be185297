/**
 * The Firecracker API subset the driver uses, carried out by QEMU. Pre-boot calls only collect the
 * machine (QEMU needs its whole device list on its command line); InstanceStart or a snapshot load
 * then starts QEMU, and every later call is a QMP sequence: pause/resume = stop/cont, a drive's new
 * path = blockdev-add + blockdev-reopen, snapshot/create = a migration of the device state to the
 * vmstate file with the RAM left in the shared memory file (x-ignore-shared), snapshot/load = a new
 * QEMU waiting for that stream, its RAM the memory file mapped private (copy-on-write).
 * Paths in requests are jail paths; `hostPath` maps them under the jail root.
 */
import { chmod, chown, copyFile, open, rm, stat, writeFile } from "node:fs/promises";
import type { RateLimiter } from "./api-types.ts";
import {
  type Accelerator,
  buildQemuArgv,
  driveFileNodeName,
  driveNodeName,
  type QemuDrivePlan,
  type QemuMachine,
  type QemuMachinePlan,
  type QemuNicPlan,
} from "./qemu-argv.ts";
import { QmpClient } from "./qemu-qmp.ts";

/** The Firecracker API release this adapter speaks: what a base baked on it records as its Firecracker version. */
export const QEMU_ADAPTER_API_VERSION = "1.16.1";

export type AdapterVmState = "Not started" | "Running" | "Paused";

/** A started QEMU, as the adapter sees it (the spawner starts it in the slot's netns, cgroup and uid). */
export interface QemuProcess {
  readonly pid: number | undefined;
  /** Resolves once with why it ended. */
  readonly exited: Promise<string>;
  kill(): Promise<void>;
}

export type LaunchQemu = (argv: string[]) => Promise<QemuProcess>;

export interface QemuVmmOptions {
  readonly id: string;
  readonly accelerator: Accelerator;
  /** The machine of a cold boot (default microvm); a restore takes the one its vmstate records. */
  readonly machine?: QemuMachine;
  readonly tscKhz?: number;
  /** Jail path -> host path. */
  readonly hostPath: (jailPath: string) => string;
  /** Host path of the QMP socket (inside the jail's private run folder). */
  readonly qmpSocketPath: string;
  /** Host path of the guest memory file of a cold boot (the bake copies it to mem_file_path). */
  readonly bootMemoryPath: string;
  readonly runAs?: { readonly uid: number; readonly gid: number };
  readonly launch: LaunchQemu;
  /** Migration (snapshot create/load) budget; TCG guests are slow. */
  readonly migrationTimeoutMs?: number;
  readonly qmpConnectTimeoutMs?: number;
}

/** An API answer: 204, 200 with JSON, or 400 with Firecracker's fault_message. */
export type AdapterAnswer =
  | { readonly status: 204 }
  | { readonly status: 200; readonly json: unknown }
  | { readonly status: 400; readonly fault: string; readonly exitAfter?: boolean };

interface DriveState {
  jailPath: string;
  readOnly: boolean;
  root: boolean;
  rateLimiter?: RateLimiter;
  /** Generation of the file node under the drive (0 = the one on the command line). */
  fileGeneration: number;
}

interface NicState {
  tapName: string;
  mac?: string;
  rx?: RateLimiter;
  tx?: RateLimiter;
}

/** Written at the start of every vmstate: what a restore must rebuild before QEMU's stream can load. */
export interface VmstateHeader {
  readonly format: "snapfaas-qemu-vmstate";
  readonly version: 1;
  readonly accelerator: Accelerator;
  /** Absent in vmstates written before the pc machine existed: microvm. */
  readonly machine?: QemuMachine;
  readonly vcpus: number;
  readonly memMiB: number;
  /** RAM is not in the stream (x-ignore-shared): the restore must map the memory file. */
  readonly ramInMemoryFile: boolean;
  readonly drives: { id: string; jailPath: string; readOnly: boolean }[];
  readonly nics: { id: string; tapName: string; mac?: string }[];
  readonly entropy: boolean;
}

const HEADER_MAGIC = "snapfaas-qemu-vmstate";
const MAX_HEADER = 64 * 1024;

/** The header line plus its newline; QEMU's migration stream follows it. */
export function encodeVmstateHeader(header: VmstateHeader): Buffer {
  return Buffer.from(`${JSON.stringify(header)}\n`, "utf8");
}

export function decodeVmstateHeader(head: Buffer): { header: VmstateHeader; streamOffset: number } {
  const newline = head.indexOf(0x0a);
  if (newline < 0) throw new Error("not a QEMU-backend vmstate (no header line)");
  let header: VmstateHeader;
  try {
    header = JSON.parse(head.subarray(0, newline).toString("utf8")) as VmstateHeader;
  } catch {
    throw new Error("not a QEMU-backend vmstate (header is not JSON)");
  }
  if (header.format !== HEADER_MAGIC || header.version !== 1) {
    throw new Error(
      `not a QEMU-backend vmstate (format ${String(header.format)} v${String(header.version)})`,
    );
  }
  return { header, streamOffset: newline + 1 };
}

/** The exec: migration URIs run through /bin/sh; paths are single-quoted and may not contain a quote. */
export function shellQuote(path: string): string {
  if (path.includes("'") || path.includes("\n"))
    throw new Error(`path not usable in a migration command: ${path}`);
  return `'${path}'`;
}

const PRE_BOOT = "The requested operation is not supported after starting the microVM.";
const NOT_BOOTED = "The requested operation is not supported before starting the microVM.";

export class QemuVmm {
  state: AdapterVmState = "Not started";
  /** Rate limiters as last set, by device ("drive:<id>", "net:<id>:rx"/"tx", "entropy"): recorded, not enforced. */
  readonly rateLimiters = new Map<string, RateLimiter>();
  private bootSource: { kernelJailPath: string; bootArgs: string } | undefined;
  private machine = { vcpus: 1, memMiB: 128 };
  private machineKind: QemuMachine;
  private readonly drives = new Map<string, DriveState>();
  private readonly nics = new Map<string, NicState>();
  private entropy = false;
  private configured = false;
  private ramInMemoryFile = false;
  private qemu: QemuProcess | undefined;
  private qmp: QmpClient | undefined;
  private memoryHostPath: string | undefined;
  private readonly listeners = new Set<(reason: string) => void>();
  private exitReason: string | undefined;

  constructor(private readonly options: QemuVmmOptions) {
    this.machineKind = options.machine ?? "microvm";
  }

  /** QEMU's host pid once it runs. */
  get pid(): number | undefined {
    return this.qemu?.pid;
  }

  /** Called once when QEMU ends (after it was started). */
  onQemuExit(listener: (reason: string) => void): void {
    if (this.exitReason !== undefined) listener(this.exitReason);
    else this.listeners.add(listener);
  }

  async kill(): Promise<void> {
    await this.qmp?.close().catch(() => undefined);
    await this.qemu?.kill();
  }

  /** Handles one validated request. */
  async handle(route: string, id: string | undefined, body: Record<string, unknown>): Promise<AdapterAnswer> {
    switch (route) {
      case "GET /":
        return {
          status: 200,
          json: { app_name: "snapfaas-qemu", id: this.options.id, state: this.state, vmm_version: "qemu" },
        };
      case "GET /version":
        return { status: 200, json: { firecracker_version: QEMU_ADAPTER_API_VERSION } };
      case "GET /machine-config":
        return { status: 200, json: { vcpu_count: this.machine.vcpus, mem_size_mib: this.machine.memMiB } };
      case "PUT /boot-source":
        return this.preBoot(() => {
          this.bootSource = {
            kernelJailPath: String(body["kernel_image_path"]),
            bootArgs: String(body["boot_args"] ?? ""),
          };
          if (body["initrd_path"] !== undefined) return "initrd_path is not supported by the QEMU backend";
          return undefined;
        });
      case "PUT /machine-config":
        return this.preBoot(() => {
          this.machine = { vcpus: Number(body["vcpu_count"]), memMiB: Number(body["mem_size_mib"]) };
          return undefined;
        });
      case "PUT /drives/{drive_id}":
        return this.preBoot(() => {
          if (id !== body["drive_id"]) return "The id from the path does not match the id from the body!";
          if (body["path_on_host"] === undefined)
            return "path_on_host is required by the QEMU backend (no vhost-user)";
          this.drives.set(String(id), {
            jailPath: String(body["path_on_host"]),
            readOnly: body["is_read_only"] === true,
            root: body["is_root_device"] === true,
            fileGeneration: 0,
          });
          if (body["rate_limiter"]) this.rateLimiters.set(`drive:${id}`, body["rate_limiter"] as RateLimiter);
          return undefined;
        });
      case "PUT /network-interfaces/{iface_id}":
        return this.preBoot(() => {
          if (id !== body["iface_id"]) return "The id from the path does not match the id from the body!";
          const nic: NicState = { tapName: String(body["host_dev_name"]) };
          if (typeof body["guest_mac"] === "string") nic.mac = body["guest_mac"];
          this.nics.set(String(id), nic);
          this.recordNicLimiters(String(id), body);
          return undefined;
        });
      case "PUT /entropy":
        return this.preBoot(() => {
          this.entropy = true;
          if (body["rate_limiter"]) this.rateLimiters.set("entropy", body["rate_limiter"] as RateLimiter);
          return undefined;
        });
      case "PUT /actions":
        return this.action(String(body["action_type"]));
      case "PATCH /vm":
        return this.patchVm(body["state"] === "Paused" ? "Paused" : "Running");
      case "PATCH /drives/{drive_id}":
        return this.patchDrive(String(id), body);
      case "PATCH /network-interfaces/{iface_id}": {
        if (this.state === "Not started") return fault(NOT_BOOTED);
        if (!this.nics.has(String(id))) return fault(`Invalid network interface ID: ${id}`);
        this.recordNicLimiters(String(id), body);
        return { status: 204 };
      }
      case "PUT /snapshot/create":
        return this.createSnapshot(body);
      case "PUT /snapshot/load":
        return this.loadSnapshot(body);
      default:
        return fault(`Invalid request method and/or path: ${route}.`);
    }
  }

  private preBoot(apply: () => string | undefined): AdapterAnswer {
    if (this.state !== "Not started") return fault(PRE_BOOT);
    const problem = apply();
    if (problem) return fault(problem);
    this.configured = true;
    return { status: 204 };
  }

  private recordNicLimiters(id: string, body: Record<string, unknown>): void {
    if (body["rx_rate_limiter"])
      this.rateLimiters.set(`net:${id}:rx`, body["rx_rate_limiter"] as RateLimiter);
    if (body["tx_rate_limiter"])
      this.rateLimiters.set(`net:${id}:tx`, body["tx_rate_limiter"] as RateLimiter);
  }

  private async action(action: string): Promise<AdapterAnswer> {
    if (action === "FlushMetrics") return { status: 204 };
    if (action === "SendCtrlAltDel") {
      if (this.state !== "Running") return fault(NOT_BOOTED);
      // microvm has no i8042 to send Ctrl+Alt+Del to: the ACPI power button is its orderly shutdown (pc's too).
      return this.qmpAnswer(() => this.qmp!.execute("system_powerdown"));
    }
    if (this.state !== "Not started") return fault(PRE_BOOT);
    if (!this.bootSource) return fault("Cannot start microvm without kernel configuration.");
    const kernelHostPath = this.options.hostPath(this.bootSource.kernelJailPath);
    if (!(await exists(kernelHostPath))) return fault("Cannot open kernel image: No such file or directory");
    for (const [driveId, d] of this.drives) {
      if (!(await exists(this.options.hostPath(d.jailPath))))
        return fault(`Unable to open the block device ${driveId} backing file: No such file or directory`);
    }
    await rm(this.options.bootMemoryPath, { force: true });
    this.ramInMemoryFile = true;
    this.memoryHostPath = this.options.bootMemoryPath;
    try {
      await this.startQemu({
        ...this.commonPlan(),
        memoryFile: { hostPath: this.options.bootMemoryPath, shared: true },
        boot: { kind: "kernel", kernelHostPath, cmdline: this.bootSource.bootArgs },
      });
      await this.qmp!.execute("cont");
    } catch (err) {
      await this.kill();
      return fault(`Failed to start the microVM: ${message(err)}`, true);
    }
    this.state = "Running";
    return { status: 204 };
  }

  private commonPlan(): Omit<QemuMachinePlan, "memoryFile" | "boot"> {
    const drives: QemuDrivePlan[] = [...this.drives].map(([id, d]) => ({
      id,
      hostPath: this.options.hostPath(d.jailPath),
      readOnly: d.readOnly,
    }));
    const nics: QemuNicPlan[] = [...this.nics].map(([id, n]) => ({
      id,
      tapName: n.tapName,
      ...(n.mac ? { mac: n.mac } : {}),
    }));
    return {
      name: this.options.id,
      accelerator: this.options.accelerator,
      machine: this.machineKind,
      ...(this.options.tscKhz !== undefined ? { tscKhz: this.options.tscKhz } : {}),
      vcpus: this.machine.vcpus,
      memMiB: this.machine.memMiB,
      drives,
      nics,
      entropy: this.entropy,
      qmpSocketPath: this.options.qmpSocketPath,
      ...(this.options.runAs ? { runAs: this.options.runAs } : {}),
    };
  }

  private async startQemu(plan: QemuMachinePlan): Promise<void> {
    await rm(this.options.qmpSocketPath, { force: true });
    const qemu = await this.options.launch(buildQemuArgv(plan));
    this.qemu = qemu;
    void qemu.exited.then((reason) => {
      this.exitReason = reason;
      for (const listener of this.listeners) listener(reason);
      this.listeners.clear();
    });
    const connecting = QmpClient.connect(
      this.options.qmpSocketPath,
      this.options.qmpConnectTimeoutMs ?? 10_000,
    );
    const died = qemu.exited.then((reason) => {
      throw new Error(`QEMU exited during start: ${reason}`);
    });
    this.qmp = await Promise.race([connecting, died]);
  }

  private async patchVm(wanted: "Paused" | "Running"): Promise<AdapterAnswer> {
    if (this.state === "Not started") return fault(NOT_BOOTED);
    if (wanted === this.state) return { status: 204 };
    const answer = await this.qmpAnswer(() => this.qmp!.execute(wanted === "Paused" ? "stop" : "cont"));
    if (answer.status === 204) this.state = wanted;
    return answer;
  }

  private async patchDrive(driveId: string, body: Record<string, unknown>): Promise<AdapterAnswer> {
    if (this.state === "Not started") return fault(NOT_BOOTED);
    const drive = this.drives.get(driveId);
    if (!drive) return fault(`Invalid block device ID: ${driveId}`);
    if (body["path_on_host"] !== undefined) {
      const jailPath = String(body["path_on_host"]);
      const hostPath = this.options.hostPath(jailPath);
      if (!(await exists(hostPath)))
        return fault("Unable to patch the block device: No such file or directory");
      // Firecracker tells the guest the new capacity; QEMU cannot for a read-only virtio-blk, and the
      // guest would keep reading the old size. Refused by name instead (pad the baked placeholder).
      const [newSize, oldSize] = await Promise.all([
        sizeOf(hostPath),
        sizeOf(this.options.hostPath(drive.jailPath)),
      ]);
      if (oldSize !== undefined && newSize !== undefined && newSize > oldSize) {
        return fault(
          `Unable to patch the block device: the new disk (${newSize} bytes) is larger than the one the guest sees (${oldSize} bytes); the QEMU backend cannot grow a drive, so pad the baked placeholder to the largest code disk`,
        );
      }
      const oldNode = driveFileNodeName(driveId, drive.fileGeneration);
      const newNode = driveFileNodeName(driveId, drive.fileGeneration + 1);
      const answer = await this.qmpAnswer(async () => {
        await this.qmp!.execute("blockdev-add", {
          driver: "file",
          filename: hostPath,
          "node-name": newNode,
          "read-only": drive.readOnly,
        });
        await this.qmp!.execute("blockdev-reopen", {
          options: [
            {
              driver: "raw",
              "node-name": driveNodeName(driveId),
              file: newNode,
              "read-only": drive.readOnly,
            },
          ],
        });
        await this.qmp!.execute("blockdev-del", { "node-name": oldNode });
      });
      if (answer.status !== 204) return answer;
      drive.jailPath = jailPath;
      drive.fileGeneration += 1;
    }
    if (body["rate_limiter"] !== undefined)
      this.rateLimiters.set(`drive:${driveId}`, body["rate_limiter"] as RateLimiter);
    return { status: 204 };
  }

  private async createSnapshot(body: Record<string, unknown>): Promise<AdapterAnswer> {
    if (this.state !== "Paused") return fault("Cannot save microVM state: the microVM is not paused.");
    if (body["snapshot_type"] === "Diff")
      return fault("Diff snapshots are not supported by the QEMU backend.");
    const vmstatePath = this.options.hostPath(String(body["snapshot_path"]));
    const memPath = this.options.hostPath(String(body["mem_file_path"]));
    const header: VmstateHeader = {
      format: HEADER_MAGIC,
      version: 1,
      accelerator: this.options.accelerator,
      machine: this.machineKind,
      vcpus: this.machine.vcpus,
      memMiB: this.machine.memMiB,
      ramInMemoryFile: this.ramInMemoryFile,
      drives: [...this.drives].map(([id, d]) => ({ id, jailPath: d.jailPath, readOnly: d.readOnly })),
      nics: [...this.nics].map(([id, n]) => ({ id, tapName: n.tapName, ...(n.mac ? { mac: n.mac } : {}) })),
      entropy: this.entropy,
    };
    try {
      const uri = `exec:cat >> ${shellQuote(vmstatePath)}`;
      await writeFile(vmstatePath, encodeVmstateHeader(header), { mode: 0o600 });
      // QEMU runs the migration command as the VM's uid: it appends to a file that uid owns.
      if (this.options.runAs) await chown(vmstatePath, this.options.runAs.uid, this.options.runAs.gid);
      await this.qmp!.execute("migrate-set-capabilities", {
        capabilities: [{ capability: "x-ignore-shared", state: this.ramInMemoryFile }],
      });
      await this.qmp!.execute("migrate", { uri });
      await this.waitMigration("snapshot");
      // The bake's RAM file is the memory; a copy, so a VM resumed after the snapshot cannot change it.
      await copyFile(this.memoryHostPath!, memPath);
      if (this.options.runAs) await chown(memPath, this.options.runAs.uid, this.options.runAs.gid);
      await chmod(memPath, 0o600);
    } catch (err) {
      await rm(vmstatePath, { force: true });
      return fault(`Cannot save the microVM state: ${message(err)}`);
    }
    return { status: 204 };
  }

  private async waitMigration(what: string): Promise<void> {
    const deadline = performance.now() + (this.options.migrationTimeoutMs ?? 120_000);
    for (;;) {
      const info = await this.qmp!.execute<{ status?: string; "error-desc"?: string }>("query-migrate");
      if (info.status === "completed") return;
      if (info.status === "failed" || info.status === "cancelled")
        throw new Error(`${what} migration ${info.status}: ${info["error-desc"] ?? "no detail"}`);
      if (performance.now() > deadline)
        throw new Error(`${what} migration did not complete in time (${info.status})`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  private async loadSnapshot(body: Record<string, unknown>): Promise<AdapterAnswer> {
    if (this.state !== "Not started" || this.configured) {
      return fault("Loading a microVM snapshot not allowed after configuring boot-specific resources.");
    }
    const failure = await this.tryLoad(body);
    if (failure !== undefined) {
      // Firecracker exits after a failed load; so does the adapter (the spawner sees the exit).
      await this.kill();
      return fault(failure, true);
    }
    return { status: 204 };
  }

  private async tryLoad(body: Record<string, unknown>): Promise<string | undefined> {
    const backend = body["mem_backend"] as { backend_type: string; backend_path: string };
    if (backend.backend_type !== "File")
      return "Load snapshot error: the QEMU backend restores File memory backends only";
    const vmstatePath = this.options.hostPath(String(body["snapshot_path"]));
    const memPath = this.options.hostPath(backend.backend_path);
    let decoded: { header: VmstateHeader; streamOffset: number };
    try {
      decoded = decodeVmstateHeader(await readHead(vmstatePath));
    } catch (err) {
      return `Load snapshot error: Failed to restore from snapshot: ${message(err)}`;
    }
    const { header, streamOffset } = decoded;
    if (header.accelerator !== this.options.accelerator)
      return `Load snapshot error: the snapshot was taken under ${header.accelerator}, this VMM runs ${this.options.accelerator}`;
    if (!(await exists(memPath)))
      return "Load snapshot error: Failed to open memory backing file: No such file or directory (os error 2)";
    // Disk paths are baked into the vmstate: they must exist again, at the same jail paths.
    for (const d of header.drives) {
      if (!(await exists(this.options.hostPath(d.jailPath))))
        return `Load snapshot error: Failed to restore block device ${d.id}: No such file or directory (os error 2)`;
    }
    const nics = new Map(header.nics.map((n) => [n.id, { ...n }]));
    const overrides =
      (body["network_overrides"] as { iface_id: string; host_dev_name: string }[] | undefined) ?? [];
    for (const o of overrides) {
      const nic = nics.get(o.iface_id);
      if (!nic) return `Load snapshot error: network override for unknown interface ${o.iface_id}`;
      nic.tapName = o.host_dev_name;
    }
    this.machine = { vcpus: header.vcpus, memMiB: header.memMiB };
    this.machineKind = header.machine ?? "microvm";
    for (const d of header.drives)
      this.drives.set(d.id, { jailPath: d.jailPath, readOnly: d.readOnly, root: false, fileGeneration: 0 });
    for (const n of nics.values())
      this.nics.set(n.id, { tapName: n.tapName, ...(n.mac ? { mac: n.mac } : {}) });
    this.entropy = header.entropy;
    this.memoryHostPath = memPath;
    // A clone's RAM is private; snapshotting a clone again puts its RAM into the stream.
    this.ramInMemoryFile = false;
    try {
      await this.startQemu({
        ...this.commonPlan(),
        memoryFile: { hostPath: memPath, shared: false },
        boot: { kind: "incoming" },
      });
      await this.qmp!.execute("migrate-set-capabilities", {
        capabilities: [{ capability: "x-ignore-shared", state: header.ramInMemoryFile }],
      });
      await this.qmp!.execute("migrate-incoming", {
        uri: `exec:tail -c +${streamOffset + 1} ${shellQuote(vmstatePath)}`,
      });
      await this.waitMigration("restore");
      if (body["resume_vm"] === true) await this.qmp!.execute("cont");
    } catch (err) {
      return `Load snapshot error: Failed to restore from snapshot: ${message(err)}`;
    }
    this.state = body["resume_vm"] === true ? "Running" : "Paused";
    return undefined;
  }

  private async qmpAnswer(run: () => Promise<unknown>): Promise<AdapterAnswer> {
    try {
      await run();
      return { status: 204 };
    } catch (err) {
      return fault(message(err));
    }
  }
}

function fault(text: string, exitAfter = false): AdapterAnswer {
  return exitAfter ? { status: 400, fault: text, exitAfter } : { status: 400, fault: text };
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function sizeOf(path: string): Promise<number | undefined> {
  return stat(path).then(
    (st) => st.size,
    () => undefined,
  );
}

async function readHead(path: string): Promise<Buffer> {
  const handle = await open(path, "r");
  try {
    const buffer = Buffer.alloc(MAX_HEADER);
    const { bytesRead } = await handle.read(buffer, 0, MAX_HEADER, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}
