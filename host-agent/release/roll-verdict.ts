/**
 * What a roll's numbers say, after every event on the new base: keep going, move calls over (warmed),
 * make it current (promote), or drop it (abandon, with the reason an operator reads). Pure: counts and
 * the release's thresholds in, a verdict out.
 */
import type { RolloutPolicy } from "./release.ts";

export type RollPhase = "checking" | "probing" | "warming" | "canary";

/** What the roll has seen of the new base so far. */
export interface CandidateCounts {
  readonly baseVersion: string;
  /** Generic instances the new pool must start before calls move over. */
  readonly genericMin: number;
  readonly startsOk: number;
  readonly startFailures: number;
  readonly lastStartError: string | undefined;
  /** Calls judged on the new base, and how many failed. */
  readonly calls: number;
  readonly errors: number;
}

export type RollVerdict =
  | { readonly verdict: "continue" }
  | { readonly verdict: "warmed" }
  | { readonly verdict: "promote" }
  | { readonly verdict: "abandon"; readonly reason: string };

export function rollVerdict(phase: RollPhase, policy: RolloutPolicy, c: CandidateCounts): RollVerdict {
  if (c.startFailures >= policy.startFailureThreshold) {
    return {
      verdict: "abandon",
      reason: `${c.startFailures} instance starts of base ${c.baseVersion} failed (threshold ${policy.startFailureThreshold}): ${c.lastStartError}`,
    };
  }
  // Enough failures that the rate will pass the threshold whatever the remaining calls do.
  const hopeless = c.errors > policy.errorRateThreshold * policy.minCalls;
  if (c.calls >= policy.minCalls || hopeless) {
    const rate = c.errors / Math.max(1, c.calls);
    if (rate > policy.errorRateThreshold) {
      return {
        verdict: "abandon",
        reason: `${c.errors} of ${c.calls} calls on base ${c.baseVersion} failed (error rate ${rate.toFixed(3)} > threshold ${policy.errorRateThreshold})`,
      };
    }
  }
  if (phase === "warming" && c.startsOk >= c.genericMin) return { verdict: "warmed" };
  if (phase === "canary" && c.calls >= policy.minCalls) return { verdict: "promote" };
  return { verdict: "continue" };
}
