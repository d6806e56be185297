/**
 * Follows a release published somewhere else: every interval, fetch it and begin a roll when it changed.
 * The fetch is injected: a local file (FAAS_RELEASE_FILE) here; on AWS the release parameter in SSM that
 * the Pulumi stack publishes (a fetch that reads the parameter's value, e.g. with the AWS SDK's
 * GetParameter, returns the same JSON). A release that fails or rolls back is not retried until the
 * published value changes again.
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import type { Clock, TimerHandle } from "../clock.ts";
import type { Logger } from "../log.ts";
import { parseRelease, type Release } from "./release.ts";

/** Returns the published release (raw JSON-shaped value), or undefined when none is published. */
export type ReleaseFetch = () => Promise<unknown>;

export interface ReleasePollerDeps {
  readonly fetch: ReleaseFetch;
  /** Begins the roll (Rollout.begin); its rejection is logged and the value is not retried. */
  readonly apply: (release: Release) => Promise<unknown>;
  readonly clock: Clock;
  readonly log: Logger;
  readonly intervalMs: number;
  /** Folder a relative baseDir is resolved against. */
  readonly relativeTo?: string;
  /** Errors after which the same value is tried again next poll (another roll was in flight). */
  readonly retryLater?: (err: unknown) => boolean;
}

export class ReleasePoller {
  private timer: TimerHandle | undefined;
  private lastSeen: string | undefined;
  private stopped = false;
  private running: Promise<unknown> | undefined;

  constructor(private readonly deps: ReleasePollerDeps) {}

  /** Polls now, then every interval. */
  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = this.deps.clock.setTimeout(() => {
      this.timer = undefined;
      this.running = this.pollOnce().finally(() => {
        this.running = undefined;
        this.schedule(this.deps.intervalMs);
      });
    }, ms);
  }

  /** One poll: fetch, and apply when the published value differs from the last one seen. */
  async pollOnce(): Promise<"unchanged" | "applied" | "rejected" | "none" | "fetch-failed"> {
    let value: unknown;
    try {
      value = await this.deps.fetch();
    } catch (err) {
      this.deps.log.warn({ err: (err as Error).message }, "could not fetch the published release");
      return "fetch-failed";
    }
    if (value === undefined) return "none";
    const key = JSON.stringify(value);
    if (key === this.lastSeen) return "unchanged";
    this.lastSeen = key;
    try {
      const release = parseRelease(value, this.deps.relativeTo);
      await this.deps.apply(release);
      this.deps.log.info({ baseVersion: release.baseVersion }, "published release applied");
      return "applied";
    } catch (err) {
      if (this.deps.retryLater?.(err)) {
        this.lastSeen = undefined;
        this.deps.log.info({ err: (err as Error).message }, "published release waits for the next poll");
        return "unchanged";
      }
      this.deps.log.error({ err: (err as Error).message }, "published release rejected");
      return "rejected";
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) this.deps.clock.clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }
}

/** A fetch reading a release file (absent file: nothing published). */
export function fileReleaseFetch(file: string): ReleaseFetch {
  return async () => {
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
    return JSON.parse(text) as unknown;
  };
}

export function releaseFileFolder(file: string): string {
  return path.dirname(path.resolve(file));
}
