/**
 * TEST DOUBLE: a strict stand-in for the Firecracker API on a Unix socket. It is not Firecracker.
 * It enforces the documented call order (pre-boot config only before InstanceStart, snapshot/load only
 * on a fresh process, PATCH of drives/NICs only after boot or load, snapshot/create only while Paused,
 * pause/resume only after boot), validates every body against the official spec, resolves file paths
 * inside `rootDir` like a jailed Firecracker resolves them inside its chroot, and "exits" (closes its
 * socket for good) when a snapshot load fails, as the real process does.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { rm } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { join } from "node:path";
import { loadSpec } from "./spec-schemas.ts";

export type FakeVmState = "Not started" | "Running" | "Paused" | "Exited";

export interface RecordedCall {
  readonly method: string;
  readonly path: string;
  readonly body: unknown;
  readonly status: number;
  readonly fault?: string;
}

interface DriveState {
  path_on_host?: string;
  is_root_device: boolean;
  is_read_only?: boolean;
  rate_limiter?: unknown;
}
interface NicState {
  host_dev_name: string;
  rx_rate_limiter?: unknown;
  tx_rate_limiter?: unknown;
}

/** What the fake writes as "vmstate": enough to restore the same devices, and clearly not a real one. */
interface FakeSnapshotFile {
  fakeFirecrackerSnapshot: 1;
  machine: unknown;
  drives: Record<string, DriveState>;
  nics: Record<string, NicState>;
}

export interface FakeFirecrackerOptions {
  socketPath: string;
  /** Paths in requests are resolved under this directory (the jail root). */
  rootDir: string;
  /** Called when the guest starts running (InstanceStart or resume) and when it stops. */
  onGuestRunning?: (running: boolean) => void | Promise<void>;
  /** Answer /snapshot/load with this fault even when the files are fine (a corrupt snapshot). */
  failLoadWith?: string;
}

export interface FakeExit {
  readonly reason: string;
}

export class FakeFirecracker {
  readonly calls: RecordedCall[] = [];
  state: FakeVmState = "Not started";
  readonly drives = new Map<string, DriveState>();
  readonly nics = new Map<string, NicState>();
  readonly exited: Promise<FakeExit>;
  private resolveExit!: (exit: FakeExit) => void;
  private configured = false;
  private loaded = false;
  private machine: unknown = { vcpu_count: 1, mem_size_mib: 128 };
  private bootSource: unknown;
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private exitedFlag = false;

  private constructor(private readonly options: FakeFirecrackerOptions) {
    this.exited = new Promise((resolve) => {
      this.resolveExit = resolve;
    });
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => this.answer(req, res, 500, String(err), undefined));
    });
    this.server.on("connection", (socket) => {
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
    });
  }

  static async start(options: FakeFirecrackerOptions): Promise<FakeFirecracker> {
    const fake = new FakeFirecracker(options);
    await new Promise<void>((resolve, reject) => {
      fake.server.once("error", reject);
      fake.server.listen(options.socketPath, () => resolve());
    });
    return fake;
  }

  /** Paths of the calls made so far, as "METHOD /path". */
  get callLine(): string[] {
    return this.calls.map((c) => `${c.method} ${c.path}`);
  }

  /** Ends the "process": closes the socket for good, like Firecracker exiting or being killed. */
  async exit(reason: string): Promise<void> {
    if (this.exitedFlag) return;
    this.exitedFlag = true;
    const wasRunning = this.state === "Running";
    this.state = "Exited";
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      for (const socket of this.sockets) socket.destroy();
    });
    await rm(this.options.socketPath, { force: true });
    if (wasRunning) await this.options.onGuestRunning?.(false);
    this.resolveExit({ reason });
  }

  private resolvePath(p: string): string {
    return join(this.options.rootDir, p);
  }

  private async readBody(req: IncomingMessage): Promise<unknown> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    if (chunks.length === 0) return undefined;
    return JSON.parse(Buffer.concat(chunks).toString("utf8"));
  }

  private answer(
    req: IncomingMessage,
    res: ServerResponse,
    status: number,
    fault: string | undefined,
    body: unknown,
    json?: unknown,
  ): void {
    this.calls.push({
      method: req.method ?? "",
      path: req.url ?? "",
      body,
      status,
      ...(fault ? { fault } : {}),
    });
    if (fault !== undefined) {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify({ fault_message: fault }));
    } else if (json !== undefined) {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(json));
    } else {
      res.writeHead(status);
      res.end();
    }
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? "GET";
    const path = req.url ?? "/";
    let body: unknown;
    try {
      body = await this.readBody(req);
    } catch {
      return this.answer(req, res, 400, "The request body is not valid JSON.", undefined);
    }
    const spec = loadSpec();
    if (!spec.matchPath(method, path)) {
      return this.answer(req, res, 400, `Invalid request method and/or path: ${method} ${path}.`, body);
    }
    const invalid = spec.validateRequest(method, path, body);
    if (invalid)
      return this.answer(
        req,
        res,
        400,
        `An error occurred when deserializing the json body of a request: ${invalid}`,
        body,
      );
    const fault = await this.apply(method, path, body as Record<string, unknown>);
    if (typeof fault === "string") return this.answer(req, res, 400, fault, body);
    if (fault && "json" in fault) return this.answer(req, res, 200, undefined, body, fault.json);
    this.answer(req, res, 204, undefined, body);
    if (fault && "exitAfter" in fault) await this.exit(fault.exitAfter);
  }

  private get booted(): boolean {
    return this.state === "Running" || this.state === "Paused";
  }

  /** Returns a fault message, a JSON answer, or nothing for 204. */
  private async apply(
    method: string,
    path: string,
    body: Record<string, unknown>,
  ): Promise<string | { json: unknown } | { exitAfter: string } | undefined> {
    const preBoot = "The requested operation is not supported after starting the microVM.";
    const key = `${method} ${path.replace(/^\/(drives|network-interfaces)\/.*/, "/$1/{id}")}`;
    switch (key) {
      case "GET /":
        return { json: { app_name: "Firecracker", id: "fake", state: this.state, vmm_version: "fake" } };
      case "GET /version":
        return { json: { firecracker_version: "0.0.0-fake" } };
      case "PUT /logger":
      case "PUT /metrics":
        // Allowed on a fresh process and still counts as fresh for snapshot/load.
        return undefined;
      case "PUT /boot-source":
        if (this.booted || this.loaded) return preBoot;
        if (!existsSync(this.resolvePath(String(body["kernel_image_path"]))))
          return "Cannot open kernel image: No such file or directory";
        this.configured = true;
        this.bootSource = body;
        return undefined;
      case "PUT /machine-config":
        if (this.booted || this.loaded) return preBoot;
        this.configured = true;
        this.machine = body;
        return undefined;
      case "PUT /drives/{id}": {
        if (this.booted || this.loaded) return preBoot;
        if (path !== `/drives/${encodeURIComponent(String(body["drive_id"]))}`)
          return "The id from the path does not match the id from the body!";
        if (body["path_on_host"] && !existsSync(this.resolvePath(String(body["path_on_host"]))))
          return "Unable to open the block device backing file: No such file or directory";
        this.configured = true;
        this.drives.set(String(body["drive_id"]), body as unknown as DriveState);
        return undefined;
      }
      case "PUT /network-interfaces/{id}":
        if (this.booted || this.loaded) return preBoot;
        if (path !== `/network-interfaces/${encodeURIComponent(String(body["iface_id"]))}`)
          return "The id from the path does not match the id from the body!";
        this.configured = true;
        this.nics.set(String(body["iface_id"]), body as unknown as NicState);
        return undefined;
      case "PUT /vsock":
      case "PUT /entropy":
        if (this.booted || this.loaded) return preBoot;
        this.configured = true;
        return undefined;
      case "PATCH /drives/{id}": {
        if (!this.booted) return "The requested operation is not supported before starting the microVM.";
        const drive = this.drives.get(String(body["drive_id"]));
        if (!drive) return `Invalid block device ID: ${String(body["drive_id"])}`;
        if (body["path_on_host"] !== undefined) {
          // Stricter than Firecracker (which also allows it while running): snapfaas swaps disks only
          // while the vCPUs are stopped, so the guest never sees a half-swapped device.
          if (this.state !== "Paused")
            return "snapfaas call order: the code disk is swapped only while the VM is paused.";
          if (!existsSync(this.resolvePath(String(body["path_on_host"]))))
            return "Unable to patch the block device: No such file or directory";
          drive.path_on_host = String(body["path_on_host"]);
        }
        if (body["rate_limiter"] !== undefined) drive.rate_limiter = body["rate_limiter"];
        return undefined;
      }
      case "PATCH /network-interfaces/{id}": {
        if (!this.booted) return "The requested operation is not supported before starting the microVM.";
        const nic = this.nics.get(String(body["iface_id"]));
        if (!nic) return `Invalid network interface ID: ${String(body["iface_id"])}`;
        if (body["rx_rate_limiter"] !== undefined) nic.rx_rate_limiter = body["rx_rate_limiter"];
        if (body["tx_rate_limiter"] !== undefined) nic.tx_rate_limiter = body["tx_rate_limiter"];
        return undefined;
      }
      case "PUT /actions": {
        const action = body["action_type"];
        if (action === "InstanceStart") {
          if (this.booted || this.loaded) return preBoot;
          if (this.bootSource === undefined) return "Cannot start microvm without kernel configuration.";
          this.state = "Running";
          await this.options.onGuestRunning?.(true);
          return undefined;
        }
        if (action === "SendCtrlAltDel") {
          if (this.state !== "Running")
            return "The requested operation is not supported before starting the microVM.";
          // The guest reboots; with reboot=k Firecracker exits.
          return { exitAfter: "guest shut down (SendCtrlAltDel)" };
        }
        return undefined;
      }
      case "PATCH /vm": {
        if (!this.booted) return "The requested operation is not supported before starting the microVM.";
        const wanted = body["state"] === "Paused" ? "Paused" : "Running";
        if (wanted !== this.state) {
          this.state = wanted;
          await this.options.onGuestRunning?.(wanted === "Running");
        }
        return undefined;
      }
      case "PUT /snapshot/create": {
        if (this.state !== "Paused") return "Cannot save microVM state: the microVM is not paused.";
        if (
          body["snapshot_type"] === "Diff" &&
          !(this.machine as { track_dirty_pages?: boolean }).track_dirty_pages
        ) {
          return "Diff snapshots are not allowed on uVMs with dirty page tracking disabled.";
        }
        const snapshot: FakeSnapshotFile = {
          fakeFirecrackerSnapshot: 1,
          machine: this.machine,
          drives: Object.fromEntries(this.drives),
          nics: Object.fromEntries(this.nics),
        };
        try {
          writeFileSync(this.resolvePath(String(body["snapshot_path"])), JSON.stringify(snapshot));
          writeFileSync(this.resolvePath(String(body["mem_file_path"])), "fake guest memory\n");
        } catch (err) {
          return `Cannot save the microVM state: ${(err as Error).message}`;
        }
        return undefined;
      }
      case "PUT /snapshot/load":
        return this.load(body);
      default:
        return `Invalid request method and/or path: ${method} ${path}.`;
    }
  }

  private load(body: Record<string, unknown>): string | { exitAfter: string } | undefined {
    if (this.booted || this.loaded || this.configured) {
      // Refused without side effects: the process stays as it was.
      return "Loading a microVM snapshot not allowed after configuring boot-specific resources.";
    }
    const failure = this.tryLoad(body);
    if (failure !== undefined) {
      // A failed load leaves the VMM unusable; the real process exits after answering.
      setImmediate(() => void this.exit(`snapshot load failed: ${failure}`));
      return failure;
    }
    return undefined;
  }

  private tryLoad(body: Record<string, unknown>): string | undefined {
    if (this.options.failLoadWith) return this.options.failLoadWith;
    const backend = body["mem_backend"] as { backend_type: string; backend_path: string } | undefined;
    if (!backend) return "mem_backend is required (mem_file_path is deprecated and unsupported by this fake)";
    if (backend.backend_type !== "File") return "this fake only restores File memory backends";
    const vmstatePath = this.resolvePath(String(body["snapshot_path"]));
    if (!existsSync(vmstatePath))
      return "Load snapshot error: Failed to restore from snapshot: Failed to open snapshot file: No such file or directory (os error 2)";
    if (!existsSync(this.resolvePath(backend.backend_path)))
      return "Load snapshot error: Failed to open memory backing file: No such file or directory (os error 2)";
    let snapshot: FakeSnapshotFile;
    try {
      snapshot = JSON.parse(readFileSync(vmstatePath, "utf8")) as FakeSnapshotFile;
      if (snapshot.fakeFirecrackerSnapshot !== 1) throw new Error("not a fake snapshot");
    } catch {
      return "Load snapshot error: Failed to restore from snapshot: invalid snapshot file";
    }
    // Disk paths are baked into the vmstate: they must exist again, at the same paths, at load time.
    for (const [id, drive] of Object.entries(snapshot.drives)) {
      if (drive.path_on_host && !existsSync(this.resolvePath(drive.path_on_host))) {
        return `Load snapshot error: Failed to restore block device ${id}: No such file or directory (os error 2)`;
      }
    }
    const overrides =
      (body["network_overrides"] as { iface_id: string; host_dev_name: string }[] | undefined) ?? [];
    for (const o of overrides) {
      const nic = snapshot.nics[o.iface_id];
      if (!nic) return `Load snapshot error: network override for unknown interface ${o.iface_id}`;
      nic.host_dev_name = o.host_dev_name;
    }
    this.machine = snapshot.machine;
    for (const [id, drive] of Object.entries(snapshot.drives)) this.drives.set(id, drive);
    for (const [id, nic] of Object.entries(snapshot.nics)) this.nics.set(id, nic);
    this.loaded = true;
    this.state = body["resume_vm"] === true ? "Running" : "Paused";
    if (this.state === "Running") void this.options.onGuestRunning?.(true);
    return undefined;
  }
}
