/**
 * How a failed zod parse reads to a person, everywhere in the project: one line per problem, naming the
 * key path and what is allowed there. Every schema parser (stack config, agent environment, base and
 * release manifests, driver config, API bodies) formats its errors here, so the same mistake reads the
 * same way wherever it is made.
 */
import type { z } from "zod";

export type ZodIssue = z.core.$ZodIssue;

export interface IssueFormat {
  /** How a key path is written, e.g. `snapfaas:fleet.instanceType`; default: segments joined with ".". */
  readonly at?: (path: readonly PropertyKey[]) => string;
  /** What the path of a problem with the whole value is called; default "(top level)". */
  readonly root?: string;
}

function defaultAt(path: readonly PropertyKey[]): string {
  return path.map(String).join(".");
}

/** What is wrong at one issue's path, without the path: "is required (a string)", "must be one of ...". */
export function issueProblem(issue: ZodIssue): string {
  if (issue.code === "invalid_type" && / received undefined$/.test(issue.message)) {
    return `is required (a ${issue.expected})`;
  }
  if (issue.code === "invalid_value") {
    return `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}`;
  }
  if (issue.code === "unrecognized_keys") return "unknown key";
  return issue.message;
}

/**
 * One `path: problem` line per problem. An unknown key is named as its own path (one line per key), so
 * the line points at what to delete.
 */
export function describeZodIssues(issues: readonly ZodIssue[], format: IssueFormat = {}): string[] {
  const at = format.at ?? defaultAt;
  const root = format.root ?? "(top level)";
  const where = (path: readonly PropertyKey[]) => (path.length === 0 ? root : at(path));
  return issues.flatMap((issue) =>
    issue.code === "unrecognized_keys"
      ? issue.keys.map((key) => `${where([...issue.path, key])}: unknown key`)
      : [`${where(issue.path)}: ${issueProblem(issue)}`],
  );
}
