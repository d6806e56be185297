/**
 * A small client of the EC2 instance metadata service, IMDSv2 only (the fleet's launch template turns
 * v1 off): PUT /latest/api/token for a session token, then GETs that carry it. The agent needs three
 * items: its instance id, its Auto Scaling group's name (the `aws:autoscaling:groupName` tag, which
 * the group puts on every instance it launches; the launch template exposes instance tags in the
 * metadata) and the target lifecycle state the group is moving it to.
 */
import { request } from "undici";
import type { Clock } from "../clock.ts";

export const DEFAULT_IMDS_URL = "http://169.254.169.254";

/** What the agent reads from instance metadata; the drain watcher and the metric publisher take this. */
export interface InstanceMetadata {
  instanceId(): Promise<string>;
  autoScalingGroupName(): Promise<string>;
  /** e.g. InService, Terminated, Standby, Detached (or Warmed:* with a warm pool). */
  targetLifecycleState(): Promise<string>;
}

/** The metadata service could not be reached or did not answer the item (status: its HTTP status, if any). */
export class ImdsError extends Error {
  override readonly name = "ImdsError";
  constructor(
    message: string,
    readonly path: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

export interface ImdsClientOptions {
  readonly clock: Clock;
  /** Default http://169.254.169.254 (FAAS_IMDS_URL overrides it). */
  readonly baseUrl?: string;
  /** Lifetime asked for each token, seconds (IMDS allows 1 to 21600). */
  readonly tokenTtlSeconds?: number;
  /** Every request, connection included, must finish within this. The service is local: answers take ms. */
  readonly timeoutMs?: number;
}

const TOKEN_PATH = "/latest/api/token";
const TTL_HEADER = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER = "x-aws-ec2-metadata-token";

export class ImdsClient implements InstanceMetadata {
  private readonly baseUrl: string;
  private readonly ttlSeconds: number;
  private readonly timeoutMs: number;
  private token: { value: string; renewAt: number } | undefined;
  private tokenRequest: Promise<string> | undefined;
  private cachedInstanceId: string | undefined;
  private cachedGroupName: string | undefined;

  constructor(private readonly options: ImdsClientOptions) {
    this.baseUrl = (options.baseUrl ?? DEFAULT_IMDS_URL).replace(/\/+$/, "");
    this.ttlSeconds = options.tokenTtlSeconds ?? 21_600;
    this.timeoutMs = options.timeoutMs ?? 2_000;
    if (!Number.isInteger(this.ttlSeconds) || this.ttlSeconds < 1 || this.ttlSeconds > 21_600)
      throw new RangeError("tokenTtlSeconds must be an integer from 1 to 21600");
  }

  /** Never changes for the life of the instance: read once. */
  async instanceId(): Promise<string> {
    this.cachedInstanceId ??= await this.get("/latest/meta-data/instance-id");
    return this.cachedInstanceId;
  }

  /** Fixed while the instance belongs to its group (the tag goes away only when it is detached). */
  async autoScalingGroupName(): Promise<string> {
    this.cachedGroupName ??= await this.get("/latest/meta-data/tags/instance/aws:autoscaling:groupName");
    return this.cachedGroupName;
  }

  /** Read fresh every time: this is what changes when the group schedules the instance for termination. */
  targetLifecycleState(): Promise<string> {
    return this.get("/latest/meta-data/autoscaling/target-lifecycle-state");
  }

  private async get(path: string, retried = false): Promise<string> {
    const token = await this.sessionToken();
    const { status, text } = await this.send("GET", path, { [TOKEN_HEADER]: token });
    // A token the service no longer accepts (it restarted, or the clock was off): get a new one, once.
    if (status === 401 && !retried) {
      this.token = undefined;
      return this.get(path, true);
    }
    if (status !== 200)
      throw new ImdsError(`instance metadata ${path} answered HTTP ${status}`, path, status);
    const value = text.trim();
    if (value === "") throw new ImdsError(`instance metadata ${path} is empty`, path, status);
    return value;
  }

  /** The cached token, renewed a minute (or a tenth of its life, when shorter) before it expires. */
  private sessionToken(): Promise<string> {
    const now = this.options.clock.now();
    if (this.token && now < this.token.renewAt) return Promise.resolve(this.token.value);
    // Calls arriving while a token is being fetched share that fetch.
    this.tokenRequest ??= this.fetchToken().finally(() => {
      this.tokenRequest = undefined;
    });
    return this.tokenRequest;
  }

  private async fetchToken(): Promise<string> {
    const askedAt = this.options.clock.now();
    const { status, text } = await this.send("PUT", TOKEN_PATH, { [TTL_HEADER]: String(this.ttlSeconds) });
    if (status !== 200) {
      throw new ImdsError(`instance metadata token request answered HTTP ${status}`, TOKEN_PATH, status);
    }
    const value = text.trim();
    if (value === "") throw new ImdsError("instance metadata returned an empty token", TOKEN_PATH, status);
    const margin = Math.min(60, this.ttlSeconds / 10) * 1000;
    this.token = { value, renewAt: askedAt + this.ttlSeconds * 1000 - margin };
    return value;
  }

  private async send(
    method: "GET" | "PUT",
    path: string,
    headers: Record<string, string>,
  ): Promise<{ status: number; text: string }> {
    const signal = AbortSignal.timeout(this.timeoutMs);
    try {
      const res = await request(`${this.baseUrl}${path}`, { method, headers, signal });
      return { status: res.statusCode, text: await res.body.text() };
    } catch (err) {
      const why = signal.aborted ? `no answer within ${this.timeoutMs} ms` : (err as Error).message;
      throw new ImdsError(`instance metadata ${method} ${path} failed: ${why}`, path);
    }
  }
}
