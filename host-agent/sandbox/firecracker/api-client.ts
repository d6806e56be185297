import { Client } from "undici";
import type {
  BootSource,
  Drive,
  EntropyDevice,
  FirecrackerVersion,
  InstanceActionInfo,
  InstanceInfo,
  Logger,
  MachineConfiguration,
  Metrics,
  NetworkInterface,
  PartialDrive,
  PartialNetworkInterface,
  SnapshotCreateParams,
  SnapshotLoadParams,
  Vm,
  Vsock,
} from "./api-types.ts";

export type HttpMethod = "GET" | "PUT" | "PATCH";

/** Firecracker answered a request with an error status; `faultMessage` is its own explanation. */
export class FirecrackerApiError extends Error {
  override readonly name = "FirecrackerApiError";
  constructor(
    readonly status: number,
    readonly faultMessage: string,
    readonly method: HttpMethod,
    readonly path: string,
  ) {
    super(`Firecracker API ${method} ${path} failed with ${status}: ${faultMessage}`);
  }
}

/** The API socket could not be reached or the connection broke mid-request (the VMM is likely gone). */
export class FirecrackerConnectionError extends Error {
  override readonly name = "FirecrackerConnectionError";
  constructor(
    readonly method: HttpMethod,
    readonly path: string,
    options: { cause: unknown },
  ) {
    super(`Firecracker API ${method} ${path}: connection failed (${describe(options.cause)})`, options);
  }
}

function describe(err: unknown): string {
  if (err instanceof Error) return (err as NodeJS.ErrnoException).code ?? err.message;
  return String(err);
}

/** Observer for every request sent: used by tests and debug logging. */
export type ApiRequestObserver = (method: HttpMethod, path: string, body: unknown) => void;

export interface FirecrackerApiClientOptions {
  /** Host path of the API socket (inside the jail's chroot for jailed VMs). */
  readonly socketPath: string;
  /** Per-request deadline; Firecracker answers config calls in well under a millisecond. */
  readonly timeoutMs?: number;
  /**
   * Deadline of snapshot create and load, which write or map the whole guest memory: a Full snapshot
   * of 512 MiB on a baseline gp3 volume (125 MiB/s) alone takes 4-5 s. Default 5 minutes, enough
   * for the largest VM the stack allows (32 GiB) at that rate.
   */
  readonly snapshotTimeoutMs?: number;
  readonly onRequest?: ApiRequestObserver;
}

/** One Firecracker process's API, over its Unix socket. One method per endpoint snapfaas uses. */
export class FirecrackerApiClient {
  readonly socketPath: string;
  private readonly client: Client;
  private readonly timeoutMs: number;
  private readonly snapshotTimeoutMs: number;
  private readonly onRequest: ApiRequestObserver | undefined;

  constructor(options: FirecrackerApiClientOptions) {
    this.socketPath = options.socketPath;
    this.timeoutMs = options.timeoutMs ?? 5_000;
    this.snapshotTimeoutMs = options.snapshotTimeoutMs ?? 300_000;
    this.onRequest = options.onRequest;
    // Firecracker's HTTP server handles one request at a time; keep a single pipelined connection.
    this.client = new Client("http://localhost", { socketPath: options.socketPath, pipelining: 1 });
  }

  async close(): Promise<void> {
    await this.client.destroy();
  }

  describeInstance(): Promise<InstanceInfo> {
    return this.request("GET", "/") as Promise<InstanceInfo>;
  }

  version(): Promise<FirecrackerVersion> {
    return this.request("GET", "/version") as Promise<FirecrackerVersion>;
  }

  async putLogger(body: Logger): Promise<void> {
    await this.request("PUT", "/logger", body);
  }

  async putMetrics(body: Metrics): Promise<void> {
    await this.request("PUT", "/metrics", body);
  }

  async putBootSource(body: BootSource): Promise<void> {
    await this.request("PUT", "/boot-source", body);
  }

  async putMachineConfig(body: MachineConfiguration): Promise<void> {
    await this.request("PUT", "/machine-config", body);
  }

  async putDrive(body: Drive): Promise<void> {
    await this.request("PUT", `/drives/${encodeURIComponent(body.drive_id)}`, body);
  }

  async patchDrive(body: PartialDrive): Promise<void> {
    await this.request("PATCH", `/drives/${encodeURIComponent(body.drive_id)}`, body);
  }

  async putNetworkInterface(body: NetworkInterface): Promise<void> {
    await this.request("PUT", `/network-interfaces/${encodeURIComponent(body.iface_id)}`, body);
  }

  async patchNetworkInterface(body: PartialNetworkInterface): Promise<void> {
    await this.request("PATCH", `/network-interfaces/${encodeURIComponent(body.iface_id)}`, body);
  }

  async putVsock(body: Vsock): Promise<void> {
    await this.request("PUT", "/vsock", body);
  }

  async putEntropy(body: EntropyDevice): Promise<void> {
    await this.request("PUT", "/entropy", body);
  }

  async action(body: InstanceActionInfo): Promise<void> {
    await this.request("PUT", "/actions", body);
  }

  async patchVm(body: Vm): Promise<void> {
    await this.request("PATCH", "/vm", body);
  }

  async createSnapshot(body: SnapshotCreateParams): Promise<void> {
    await this.request("PUT", "/snapshot/create", body, this.snapshotTimeoutMs);
  }

  async loadSnapshot(body: SnapshotLoadParams): Promise<void> {
    await this.request("PUT", "/snapshot/load", body, this.snapshotTimeoutMs);
  }

  private async request(
    method: HttpMethod,
    path: string,
    body?: unknown,
    timeoutMs = this.timeoutMs,
  ): Promise<unknown> {
    this.onRequest?.(method, path, body);
    let response: Awaited<ReturnType<Client["request"]>>;
    try {
      response = await this.client.request({
        method,
        path,
        headers:
          body === undefined
            ? { accept: "application/json" }
            : { "content-type": "application/json", accept: "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
    } catch (err) {
      throw new FirecrackerConnectionError(method, path, { cause: err });
    }
    let text: string;
    try {
      text = await response.body.text();
    } catch (err) {
      throw new FirecrackerConnectionError(method, path, { cause: err });
    }
    if (response.statusCode >= 400) {
      throw new FirecrackerApiError(response.statusCode, faultMessageOf(text), method, path);
    }
    if (text.length === 0) return undefined;
    try {
      return JSON.parse(text);
    } catch {
      throw new FirecrackerApiError(
        response.statusCode,
        `unparseable answer: ${text.slice(0, 200)}`,
        method,
        path,
      );
    }
  }
}

/** Error answers carry `{"fault_message": "..."}`; anything else is reported as received. */
function faultMessageOf(text: string): string {
  try {
    const parsed = JSON.parse(text) as { fault_message?: unknown };
    if (typeof parsed.fault_message === "string") return parsed.fault_message;
  } catch {
    // not JSON: fall through and report the raw text
  }
  return text.length > 0 ? text.slice(0, 500) : "(empty error body)";
}
