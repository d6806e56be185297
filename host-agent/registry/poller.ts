/**
 * Keeps a host's registry in step with a shared store: every interval, one refresh (a listing, and a
 * read of each record whose etag changed). Functions deployed from elsewhere (the Pulumi FaasFunction,
 * another host) are served here within one interval; replaced and deleted ones retire their instances.
 * A poll that fails is logged and the next one tries again: the registry keeps what it had.
 */
import type { Clock, TimerHandle } from "../clock.ts";
import type { Logger } from "../log.ts";
import type { Registry, RegistryChanges } from "./registry.ts";

export interface RegistryPollerDeps {
  readonly registry: Pick<Registry, "refresh">;
  readonly clock: Clock;
  readonly log: Logger;
  readonly intervalMs: number;
}

export class RegistryPoller {
  private timer: TimerHandle | undefined;
  private stopped = true;
  private running: Promise<unknown> | undefined;
  private failing = false;

  constructor(private readonly deps: RegistryPollerDeps) {}

  /** The first poll one interval from now (the registry was just loaded at start). */
  start(): void {
    this.stopped = false;
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = this.deps.clock.setTimeout(() => {
      this.timer = undefined;
      this.running = this.pollOnce().finally(() => {
        this.running = undefined;
        this.schedule();
      });
    }, this.deps.intervalMs);
  }

  /** One refresh; its failure is logged (once per run of failures), never thrown. */
  async pollOnce(): Promise<RegistryChanges | undefined> {
    try {
      const changes = await this.deps.registry.refresh();
      if (this.failing) this.deps.log.info("registry poll works again");
      this.failing = false;
      return changes;
    } catch (err) {
      if (!this.failing) this.deps.log.error({ err: (err as Error).message }, "registry poll failed");
      this.failing = true;
      return undefined;
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) this.deps.clock.clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
