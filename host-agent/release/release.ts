/**
 * A release: the base image the agent should run, where its baked files are, pool overrides and how to
 * roll to it. One zod schema is the source of truth for the file, the CLI, the admin API and the AWS
 * parameter alike; errors name the key path and what is allowed.
 */
import path from "node:path";
import { z } from "zod";
import { issueProblem } from "../../contracts/zod-errors.ts";

export const rolloutSchema = z
  .object({
    /** Share of new calls sent to the new base while it is judged; 100 moves every call at once. */
    canaryPercent: z.number().min(0).max(100).default(100),
    /** Failed calls / calls on the new base above this rolls back. */
    errorRateThreshold: z.number().min(0).max(1).default(0.05),
    /** Calls the new base must serve before its error rate is judged (canary rolls). */
    minCalls: z.number().int().min(1).max(1_000_000).default(20),
    /** Instance start failures of the new base (since the roll began) that roll back. */
    startFailureThreshold: z.number().int().min(1).max(1000).default(3),
  })
  .strict();

export const releasePoolSchema = z
  .object({
    genericMin: z.number().int().min(0).max(1000),
    genericMax: z.number().int().min(0).max(1000),
    maxInstances: z.number().int().min(1).max(10_000),
    maxStarting: z.number().int().min(1).max(256),
    idleTtlMs: z.number().int().min(1000).max(86_400_000),
  })
  .partial()
  .strict();

export const releaseSchema = z
  .object({
    baseVersion: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, "must be 1-128 letters, digits, '.', '_' or '-'"),
    /** A baked base folder (process driver: base.json + root/). */
    baseDir: z.string().min(1, "must name the baked base folder"),
    pool: releasePoolSchema.optional(),
    rollout: rolloutSchema.default(() => rolloutSchema.parse({})),
  })
  .strict();

export type Release = z.infer<typeof releaseSchema>;
export type RolloutPolicy = Release["rollout"];

/** A release that cannot be used; `field` is the key path at fault (e.g. "rollout.canaryPercent"). */
export class ReleaseError extends Error {
  override readonly name = "ReleaseError";
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
  }
}

/**
 * Parses a release from JSON-shaped input. A relative baseDir is resolved against `relativeTo` (the
 * folder of the release file), so a release file can sit next to its base.
 */
export function parseRelease(input: unknown, relativeTo?: string): Release {
  const parsed = releaseSchema.safeParse(input);
  if (!parsed.success) {
    const issues = parsed.error.issues;
    const fieldOf = (i: (typeof issues)[number]) =>
      i.code === "unrecognized_keys"
        ? [...i.path, i.keys[0]].join(".")
        : i.path.length > 0
          ? i.path.join(".")
          : "(release)";
    const first = issues[0]!;
    const more = issues.length > 1 ? ` (also wrong: ${issues.slice(1).map(fieldOf).join(", ")})` : "";
    const message = first.code === "unrecognized_keys" ? "is not a release field" : issueProblem(first);
    throw new ReleaseError(fieldOf(first), `${message}${more}`);
  }
  const release = parsed.data;
  if (relativeTo && !path.isAbsolute(release.baseDir)) {
    return { ...release, baseDir: path.resolve(relativeTo, release.baseDir) };
  }
  return release;
}

/** The same release, compared by content (what a poller uses to notice a change). */
export function sameRelease(a: Release, b: Release): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
