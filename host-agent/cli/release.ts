/** The release `faas release` posts, from a base folder or a release file, and how a roll's status reads. */
import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { parseRelease, type Release, ReleaseError } from "../release/release.ts";
import type { RolloutStatus } from "../release/rollout.ts";
import { CliError } from "./admin-client.ts";

/**
 * A release from the command line's argument: a baked base folder (its base.json names the version) or
 * a release JSON file (a relative baseDir is taken from the file's folder). `canaryPercent` overrides
 * the file's.
 */
export async function releaseFromArg(arg: string, opts: { canaryPercent?: number } = {}): Promise<Release> {
  const target = path.resolve(arg);
  const st = await stat(target).catch(() => undefined);
  if (!st) throw new CliError(`${arg} does not exist: give a baked base folder or a release .json file`);
  let raw: Record<string, unknown>;
  let relativeTo: string;
  if (st.isDirectory()) {
    let info: { version?: unknown };
    try {
      info = JSON.parse(await readFile(path.join(target, "base.json"), "utf8")) as typeof info;
    } catch (err) {
      throw new CliError(
        `${arg} is not a baked base folder (no readable base.json): ${(err as Error).message}`,
      );
    }
    raw = { baseVersion: info.version, baseDir: target };
    relativeTo = target;
  } else {
    try {
      raw = JSON.parse(await readFile(target, "utf8")) as Record<string, unknown>;
    } catch (err) {
      throw new CliError(`${arg} is not a JSON release file: ${(err as Error).message}`);
    }
    relativeTo = path.dirname(target);
  }
  if (opts.canaryPercent !== undefined) {
    const rollout = typeof raw.rollout === "object" && raw.rollout !== null ? raw.rollout : {};
    raw = { ...raw, rollout: { ...rollout, canaryPercent: opts.canaryPercent } };
  }
  try {
    return parseRelease(raw, relativeTo);
  } catch (err) {
    if (err instanceof ReleaseError) throw new CliError(`invalid release in ${arg}: ${err.message}`);
    throw err;
  }
}

export function describeStatus(s: RolloutStatus): string {
  const lines = [`state: ${s.state}${s.phase ? ` (${s.phase})` : ""}`];
  lines.push(
    `current: base ${s.current.baseVersion}${s.current.runtimeBuild ? ` (runtime ${s.current.runtimeBuild})` : ""}`,
  );
  if (s.candidate) lines.push(`rolling to: base ${s.candidate.baseVersion}`);
  if (s.previous) lines.push(`previous: base ${s.previous.baseVersion}`);
  if (s.reason) lines.push(`reason: ${s.reason}`);
  if (s.lastRoll) {
    const r = s.lastRoll;
    lines.push(
      `last roll: ${r.kind} ${r.from} -> ${r.to}: ${r.outcome}, ${r.callsDuring} calls during it, ${r.failedDuring} failed`,
    );
  }
  return lines.join("\n");
}
