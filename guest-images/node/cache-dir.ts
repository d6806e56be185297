/**
 * The one rule for where snapfaas keeps downloads and builds that live outside the repository (pinned Node
 * releases, later other fetched inputs): $SNAPFAAS_CACHE_DIR, else ~/.cache/snapfaas. Kept out of the
 * checkout so a `git clean` or a fresh clone does not throw away 50 MB downloads.
 */
import { homedir } from "node:os";
import path from "node:path";

export function snapfaasCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const chosen = env["SNAPFAAS_CACHE_DIR"];
  if (chosen) return path.resolve(chosen);
  return path.join(env["HOME"] || homedir(), ".cache", "snapfaas");
}
