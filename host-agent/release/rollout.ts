/**
 * The base-image roll. Holds one Pool per base version behind the InstanceSource the HTTP planes use:
 * the current pool serves; during a roll a new pool from the new base starts next to it, takes new calls
 * (all at once or a canary share) and, once judged healthy, becomes current while the old pool drains
 * (calls in flight finish on the instance they hold, then the pool closes). A new base whose starts or
 * calls fail past the release's thresholds is dropped and the old pool keeps serving. User code is never
 * touched: every pool attaches the same code folders from the registry.
 */
import type { LoadResponse } from "../../contracts/guest-protocol.ts";
import type { TimerHandle } from "../clock.ts";
import { someOf } from "../errors.ts";
import type { InstanceSource, PoolPicture, StartHealth } from "../pool/instance-source.ts";
import { type FunctionCode, PoolBusyError } from "../pool/lease.ts";
import type { PoolLease } from "../pool/pool-lease.ts";
import type { BaseImage } from "../sandbox/driver.ts";
import type { BaseChecker, BaseProbe } from "./base-check.ts";
import { BasePool, type BasePoolDeps } from "./base-pool.ts";
import { type Release, sameRelease } from "./release.ts";
import { type RollPhase, rollVerdict } from "./roll-verdict.ts";

export type RolloutState = "stable" | "rolling" | "completed" | "rolled-back";
export type { RollPhase } from "./roll-verdict.ts";

/** A roll cannot start now (another is in flight, or there is nothing to roll back to). */
export class RolloutConflictError extends Error {
  override readonly name = "RolloutConflictError";
}

/** The new base cannot serve functions already deployed (their native addons): nothing was rolled. */
export class RollBlockedError extends Error {
  override readonly name = "RollBlockedError";
}

export interface RolloutDeps extends BasePoolDeps {
  /** In [0, 1): picks which calls the canary serves. */
  readonly random: () => number;
  readonly checkBase: BaseChecker;
  readonly probeBase: BaseProbe;
  /**
   * What the deployed functions would lose on `base`, one phrase per function (their native addons
   * built for another Node): a roll with any is refused before anything starts.
   */
  readonly functionsBlockingBase?: (base: BaseImage) => Promise<string[]>;
  /** How long the new pool may take to start its generic instances before the roll is abandoned. */
  readonly warmupTimeoutMs: number;
  /** Called after every change of the current/previous release (the agent persists them). */
  readonly onReleaseChange?: (current: Release, previous: Release | undefined) => void;
}

interface Roll {
  readonly release: Release;
  readonly kind: "release" | "rollback";
  readonly startedAt: number;
  phase: RollPhase;
  slot: BasePool | undefined;
  base: BaseImage | undefined;
  done: boolean;
  /** Calls served on any pool while this roll ran. */
  callsDuring: number;
  failedDuring: number;
  warmupTimer: TimerHandle | undefined;
  readonly settled: Promise<void>;
  readonly settle: () => void;
}

export interface RollSummary {
  readonly kind: "release" | "rollback";
  readonly from: string;
  readonly to: string;
  readonly outcome: "completed" | "rolled-back";
  readonly reason?: string;
  readonly startedAt: string;
  readonly endedAt: string;
  /** Calls answered (on either base) while the roll ran, and how many of those failed. */
  readonly callsDuring: number;
  readonly failedDuring: number;
}

export interface RolloutStatus {
  readonly state: RolloutState;
  readonly phase?: RollPhase;
  readonly current: Release & { readonly runtimeBuild?: string };
  readonly previous?: Release;
  readonly candidate?: Release;
  readonly reason?: string;
  readonly progress?: {
    readonly canaryPercent: number;
    readonly calls: number;
    readonly errors: number;
    readonly startFailures: number;
    readonly callsDuring: number;
  };
  readonly lastRoll?: RollSummary;
}

export class Rollout implements InstanceSource {
  private current: BasePool;
  private previous: Release | undefined;
  private roll: Roll | undefined;
  private state: RolloutState = "stable";
  private reason: string | undefined;
  private lastRoll: RollSummary | undefined;
  private readonly draining = new Set<BasePool>();
  private closed = false;

  constructor(
    private readonly deps: RolloutDeps,
    initial: { release: Release; base: BaseImage; previous?: Release },
  ) {
    this.current = this.newSlot(initial.release, initial.base);
    this.previous = initial.previous;
  }

  /** Starts the current pool's generic instances. */
  start(): void {
    this.current.pool.start();
  }

  get currentBase(): BaseImage {
    return this.current.base;
  }

  get currentRelease(): Release {
    return this.current.release;
  }

  status(): RolloutStatus {
    const roll = this.roll;
    const runtimeBuild = (this.current.base as { runtimeBuild?: string }).runtimeBuild;
    return {
      state: this.state,
      ...(roll ? { phase: roll.phase, candidate: roll.release } : {}),
      current: { ...this.current.release, ...(runtimeBuild ? { runtimeBuild } : {}) },
      ...(this.previous ? { previous: this.previous } : {}),
      ...(this.reason ? { reason: this.reason } : {}),
      ...(roll
        ? {
            progress: {
              canaryPercent: roll.release.rollout.canaryPercent,
              calls: roll.slot?.calls ?? 0,
              errors: roll.slot?.errors ?? 0,
              startFailures: roll.slot?.startFailures ?? 0,
              callsDuring: roll.callsDuring,
            },
          }
        : {}),
      ...(this.lastRoll ? { lastRoll: this.lastRoll } : {}),
    };
  }

  /** Resolves when no roll is in flight. */
  async settled(): Promise<RolloutStatus> {
    while (this.roll) await this.roll.settled;
    return this.status();
  }

  /**
   * Begins a roll to `release`. The base folder is checked first (ReleaseError, nothing used); the rest
   * (probe, warm-up, canary, retirement of the old pool) runs in the background: see settled().
   */
  async begin(release: Release, kind: "release" | "rollback" = "release"): Promise<RolloutStatus> {
    if (this.closed) throw new RolloutConflictError("the agent is shutting down");
    if (this.roll) {
      throw new RolloutConflictError(
        `a roll to base ${this.roll.release.baseVersion} is in progress (${this.roll.phase}); wait for it or roll back`,
      );
    }
    if (sameRelease(release, this.current.release)) return this.status();
    let settle!: () => void;
    const settled = new Promise<void>((r) => {
      settle = r;
    });
    const roll: Roll = {
      release,
      kind,
      startedAt: this.deps.clock.now(),
      phase: "checking",
      slot: undefined,
      base: undefined,
      done: false,
      callsDuring: 0,
      failedDuring: 0,
      warmupTimer: undefined,
      settled,
      settle,
    };
    this.roll = roll;
    try {
      roll.base = await this.deps.checkBase(release);
      const blocking = (await this.deps.functionsBlockingBase?.(roll.base)) ?? [];
      if (blocking.length > 0) {
        throw new RollBlockedError(
          `base ${release.baseVersion} cannot serve ${blocking.length} deployed function${blocking.length === 1 ? "" : "s"}: ${someOf(blocking)}. Redeploy ${blocking.length === 1 ? "it" : "them"} with addons built for the new base (or without), then release again`,
        );
      }
    } catch (err) {
      // Rejected before anything was used: the state stays what it was.
      this.roll = undefined;
      settle();
      throw err;
    }
    this.state = "rolling";
    this.reason = undefined;
    this.deps.log.info(
      { from: this.current.release.baseVersion, to: release.baseVersion, kind, rollout: release.rollout },
      "base roll started",
    );
    void this.run(roll, roll.base);
    return this.status();
  }

  /**
   * During a roll: abandon it (the old pool never stopped serving). After a completed roll (or a
   * completed rollback): roll to the previous release again, through the same checks.
   */
  async rollback(reason = "manual rollback"): Promise<RolloutStatus> {
    const roll = this.roll;
    if (roll && roll.phase !== "checking") {
      this.abandon(roll, reason);
      return this.status();
    }
    if (roll) throw new RolloutConflictError("a release is being checked; try again in a moment");
    // After a roll that was abandoned the current base never changed: rolling "back" would go one
    // release further back than the operator has seen, so it must be asked for by name.
    if (this.lastRoll?.kind === "release" && this.lastRoll.outcome === "rolled-back") {
      throw new RolloutConflictError(
        `the roll to base ${this.lastRoll.to} was already rolled back (${this.lastRoll.reason}); base ${this.current.release.baseVersion} serves${this.previous ? `. To go to base ${this.previous.baseVersion}, release it` : ""}`,
      );
    }
    if (!this.previous) {
      throw new RolloutConflictError(
        `nothing to roll back to: base ${this.current.release.baseVersion} is the only release this agent has run`,
      );
    }
    return this.begin(this.previous, "rollback");
  }

  private async run(roll: Roll, base: BaseImage): Promise<void> {
    roll.phase = "probing";
    try {
      await this.deps.probeBase(base);
    } catch (err) {
      this.abandon(
        roll,
        `an instance of base ${base.version} failed its start check: ${(err as Error).message}`,
      );
      return;
    }
    if (roll.done) return;
    const slot = this.newSlot(roll.release, base);
    roll.slot = slot;
    roll.phase = "warming";
    slot.pool.start();
    if (slot.config.genericMin === 0) this.warmed(roll);
    else {
      roll.warmupTimer = this.deps.clock.setTimeout(() => {
        roll.warmupTimer = undefined;
        this.abandon(
          roll,
          `the new pool started ${slot.startsOk} of ${slot.config.genericMin} instances within ${this.deps.warmupTimeoutMs} ms`,
        );
      }, this.deps.warmupTimeoutMs);
      this.judge(roll);
    }
  }

  /** The new pool has its generic instances: move calls over. */
  private warmed(roll: Roll): void {
    if (roll.warmupTimer) this.deps.clock.clearTimeout(roll.warmupTimer);
    roll.warmupTimer = undefined;
    if (roll.release.rollout.canaryPercent >= 100) {
      this.promote(roll);
      return;
    }
    roll.phase = "canary";
    this.deps.log.info(
      { to: roll.release.baseVersion, canaryPercent: roll.release.rollout.canaryPercent },
      "canary serving",
    );
  }

  /** Acts on the roll's verdict after every event on the new base. */
  private judge(roll: Roll): void {
    const slot = roll.slot;
    if (roll.done || !slot) return;
    const v = rollVerdict(roll.phase, roll.release.rollout, {
      baseVersion: slot.base.version,
      genericMin: slot.config.genericMin,
      startsOk: slot.startsOk,
      startFailures: slot.startFailures,
      lastStartError: slot.lastStartError,
      calls: slot.calls,
      errors: slot.errors,
    });
    if (v.verdict === "abandon") this.abandon(roll, v.reason);
    else if (v.verdict === "warmed") this.warmed(roll);
    else if (v.verdict === "promote") this.promote(roll);
  }

  /** The new pool becomes current; the old one drains. */
  private promote(roll: Roll): void {
    const slot = roll.slot!;
    const old = this.current;
    this.current = slot;
    this.previous = old.release;
    this.drain(old, `replaced by base ${slot.base.version}`);
    const outcome = roll.kind === "rollback" ? "rolled-back" : "completed";
    this.finish(roll, outcome, roll.kind === "rollback" ? "manual rollback" : undefined, old.release);
    this.deps.log.info(
      { from: old.release.baseVersion, to: slot.release.baseVersion, calls: slot.calls, errors: slot.errors },
      "base roll completed: the old pool drains",
    );
    this.deps.onReleaseChange?.(this.current.release, this.previous);
  }

  /** Drops the new base; the current pool never stopped serving. */
  private abandon(roll: Roll, reason: string): void {
    if (roll.done) return;
    if (roll.slot) this.drain(roll.slot, "its roll was abandoned");
    this.finish(roll, "rolled-back", reason, this.current.release);
    this.deps.log.warn(
      { from: roll.release.baseVersion, back_to: this.current.release.baseVersion, reason },
      "base roll rolled back",
    );
  }

  private finish(
    roll: Roll,
    outcome: "completed" | "rolled-back",
    reason: string | undefined,
    from: Release,
  ) {
    roll.done = true;
    if (roll.warmupTimer) this.deps.clock.clearTimeout(roll.warmupTimer);
    this.state = outcome;
    this.reason = reason;
    this.deps.metrics.baseRolls.inc({ kind: roll.kind, outcome });
    this.lastRoll = {
      kind: roll.kind,
      from: from.baseVersion,
      to: roll.release.baseVersion,
      outcome,
      ...(reason ? { reason } : {}),
      startedAt: new Date(roll.startedAt).toISOString(),
      endedAt: new Date(this.deps.clock.now()).toISOString(),
      callsDuring: roll.callsDuring,
      failedDuring: roll.failedDuring,
    };
    if (this.roll === roll) this.roll = undefined;
    roll.settle();
  }

  private newSlot(release: Release, base: BaseImage): BasePool {
    const slot: BasePool = new BasePool(release, base, this.deps, {
      startSettled: () => {
        if (this.roll?.slot === slot) this.judge(this.roll);
      },
      closed: () => this.draining.delete(slot),
    });
    return slot;
  }

  /** Stops routing to `slot`; it closes once every lease it handed out is back. */
  private drain(slot: BasePool, why: string): void {
    if (slot.draining) return;
    this.draining.add(slot);
    slot.drain(why);
  }

  private async acquireFrom(slot: BasePool, fn: FunctionCode, deadline: number): Promise<PoolLease> {
    const lease = await slot.acquire(fn, deadline);
    lease.onEnd((healthy) => this.ended(slot, healthy));
    return lease;
  }

  /** A lease of `slot` ended: the roll counts the call, judges, and a draining pool may close. */
  private ended(slot: BasePool, healthy: boolean): void {
    slot.leases--;
    const roll = this.roll;
    if (roll) {
      roll.callsDuring++;
      if (!healthy) roll.failedDuring++;
      if (roll.slot === slot) {
        slot.calls++;
        if (!healthy) slot.errors++;
        this.judge(roll);
      }
    }
    slot.closeIfDrained();
  }

  async acquire(fn: FunctionCode, deadline: number): Promise<PoolLease> {
    if (this.closed) throw new PoolBusyError("the agent is shutting down", 5);
    const roll = this.roll;
    const slot = roll?.slot;
    if (
      roll &&
      slot &&
      roll.phase === "canary" &&
      this.deps.random() * 100 < roll.release.rollout.canaryPercent
    ) {
      try {
        return await this.acquireFrom(slot, fn, deadline);
      } catch (err) {
        // Running out of time is not the new base's fault, and its deadline is spent anyway.
        if (err instanceof PoolBusyError) throw err;
        slot.calls++;
        slot.errors++;
        this.deps.log.warn(
          { fn: fn.name, base: slot.base.version, err: (err as Error).message },
          "canary could not serve a call: it goes to the current base",
        );
        this.judge(roll);
        if (this.closed) throw err;
        return this.acquireFrom(this.current, fn, deadline);
      }
    }
    return this.acquireFrom(this.current, fn, deadline);
  }

  async prespecialize(fn: FunctionCode, deadline: number): Promise<LoadResponse> {
    const slot = this.current;
    const loaded = await slot.using(() => slot.pool.prespecialize(fn, deadline));
    // Warm the new base too, so the canary does not meet this code cold; its failures count against it.
    const roll = this.roll;
    const next = roll?.slot;
    if (roll && next && !next.draining) {
      void next
        .using(() => next.pool.prespecialize(fn, deadline))
        .catch((err: Error) => {
          if (err instanceof PoolBusyError || roll.slot !== next) return;
          next.calls++;
          next.errors++;
          this.deps.log.warn(
            { fn: fn.name, base: next.base.version, err: err.message },
            "new base could not load a deploy",
          );
          this.judge(roll);
        });
    }
    return loaded;
  }

  retireFunction(name: string, keepHash?: string): number {
    let n = 0;
    for (const slot of this.liveSlots()) n += slot.pool.retireFunction(name, keepHash);
    return n;
  }

  private liveSlots(): BasePool[] {
    const slots = [this.current, ...this.draining];
    if (this.roll?.slot && !slots.includes(this.roll.slot)) slots.push(this.roll.slot);
    return slots.filter((s) => !s.closed);
  }

  /** The serving (current) pool's starts: a candidate's failures are the roll's business, not health's. */
  startHealth(): StartHealth {
    return this.current.pool.startHealth();
  }

  snapshot(): PoolPicture {
    const others = this.liveSlots().filter((s) => s !== this.current);
    const pictures = others.map((s) => ({ slot: s, picture: s.pool.snapshot() }));
    // The current pool last: its numbers are the ones left in the instance gauges.
    const current = this.current.pool.snapshot();
    const functions: Record<string, { idle: number; busy: number }> = {};
    for (const p of [current, ...pictures.map((x) => x.picture)]) {
      for (const [name, f] of Object.entries(p.functions)) {
        const sum = functions[name] ?? { idle: 0, busy: 0 };
        sum.idle += f.idle;
        sum.busy += f.busy;
        functions[name] = sum;
      }
    }
    const role = (s: BasePool) => (s === this.roll?.slot ? "candidate" : "draining");
    return {
      ...current,
      functions,
      release: { state: this.state, ...(this.roll ? { phase: this.roll.phase } : {}) },
      pools: [
        { role: "current", leases: this.current.leases, ...current },
        ...pictures.map((x) => ({ role: role(x.slot), leases: x.slot.leases, ...x.picture })),
      ],
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    const roll = this.roll;
    if (roll) {
      if (roll.warmupTimer) this.deps.clock.clearTimeout(roll.warmupTimer);
      roll.done = true;
      this.roll = undefined;
      roll.settle();
    }
    const slots = [this.current, ...this.draining, ...(roll?.slot ? [roll.slot] : [])];
    await Promise.all(slots.map((s) => s.shutdown()));
    this.draining.clear();
  }
}
