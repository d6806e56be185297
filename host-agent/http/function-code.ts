/**
 * What a call or a deploy asks the pool for: the function's code and the settings it is loaded with, from
 * its registry record. One home, so the data plane's calls and the control plane's deploys ask for the
 * same version of a function.
 */
import type { FunctionRecord } from "../../contracts/registry-layout.ts";
import type { FunctionCode } from "../pool/lease.ts";
import type { FunctionSettings } from "../registry/registry.ts";

export function functionCodeOf(
  record: FunctionRecord,
  settings: FunctionSettings,
  /** The folder for the process sandbox, the function's code disk image for microVMs. */
  hostPath: string,
): FunctionCode {
  return {
    name: record.name,
    codeHash: record.codeHash,
    entry: record.entry,
    hostPath,
    settings: settings.load,
    settingsHash: settings.hash,
    ...(settings.egress ? { egress: true } : {}),
    concurrency: settings.concurrency,
  };
}
