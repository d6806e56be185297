/**
 * The two S3 objects FaasFunction writes for one function, computed from its code archive: the bundle's
 * key (by content hash) and the record's key and JSON body, all from the registry contract the hosts'
 * S3 backend reads (contracts/registry-layout.ts). No Pulumi here, so it is tested directly, and the
 * agent-side rehearsal writes exactly what a `pulumi up` would.
 */
import { stat } from "node:fs/promises";
import { type RegistryObjects, registryObjects } from "../contracts/registry-layout.ts";
import { describeFunctionBundle } from "./function-bundle.ts";

export interface FunctionObjectsInput {
  readonly functionName: string;
  readonly prefix: string;
  readonly revision: number;
}

export async function functionObjects(
  archivePath: string,
  input: FunctionObjectsInput,
): Promise<RegistryObjects> {
  const bundle = await describeFunctionBundle(archivePath);
  // The archive's modification time: stable across `pulumi up` runs for the same build.
  const deployedAt = (await stat(archivePath)).mtime.toISOString();
  return registryObjects({ ...input, bundle, deployedAt });
}
