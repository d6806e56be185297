/**
 * The function registry: names to code. Deploys are validated and unpacked before anything stored is
 * touched, then committed in one atomic record write; deploys of one name run one at a time.
 */
import { existsSync, readFileSync, realpathSync } from "node:fs";
import { mkdir, readdir } from "node:fs/promises";
import path from "node:path";
import { LoadError, resolveEntry } from "../../guest-images/runtime/loader.ts";
import type { Clock } from "../clock.ts";
import type { FunctionRecord, RegistryBackend } from "./backend.ts";
import {
  BundleError,
  type BundleLimits,
  forceRemove,
  hashBundle,
  sniffFormat,
  unpackBundle,
} from "./bundle.ts";

export const FUNCTION_NAME = /^[a-z][a-z0-9-]{0,62}$/;
/** Names the data plane keeps for itself. */
export const RESERVED_NAMES = new Set(["healthz", "metrics", "v1"]);

export class RegistryError extends Error {
  override readonly name = "RegistryError";
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export function checkFunctionName(name: string): void {
  if (!FUNCTION_NAME.test(name)) {
    throw new RegistryError(
      400,
      `invalid function name ${JSON.stringify(name.slice(0, 80))}: use 1 to 63 characters, lower-case letters, digits and "-", starting with a letter`,
    );
  }
  if (RESERVED_NAMES.has(name)) throw new RegistryError(400, `the function name "${name}" is reserved`);
}

/** A deploy that passed every check but is not stored yet. */
export interface PreparedDeploy {
  readonly record: FunctionRecord;
  readonly codePath: string;
  readonly bytes: Buffer;
}

export class Registry {
  private readonly records = new Map<string, FunctionRecord>();
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(
    private readonly backend: RegistryBackend,
    private readonly codeRoot: string,
    private readonly limits: BundleLimits,
    private readonly clock: Clock,
  ) {}

  /** Loads every record and makes sure each one's code is unpacked (it is derived from the stored bundle). */
  async init(): Promise<void> {
    await mkdir(this.codeRoot, { recursive: true });
    const records = await this.backend.loadRecords();
    // What a crash mid-deploy left: half-unpacked staging folders, and code no record points to (the
    // deploy never committed). Code is derived from stored bundles, so removing it loses nothing.
    const used = new Set(records.map((r) => r.codeHash));
    for (const item of await readdir(this.codeRoot)) {
      if (item.includes(".staging-") || !used.has(item)) await forceRemove(path.join(this.codeRoot, item));
    }
    for (const record of records) {
      this.records.set(record.name, record);
      if (!existsSync(this.codePath(record.codeHash))) {
        const bytes = await this.backend.getBundle(record.codeHash);
        if (!bytes)
          throw new Error(`function ${record.name}: bundle ${record.codeHash} is missing from the store`);
        await unpackBundle(bytes, this.codePath(record.codeHash), this.limits);
      }
    }
  }

  list(): FunctionRecord[] {
    return [...this.records.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  get(name: string): FunctionRecord | undefined {
    return this.records.get(name);
  }

  get size(): number {
    return this.records.size;
  }

  codePath(codeHash: string): string {
    return path.join(this.codeRoot, codeHash);
  }

  /** Runs `work` after every earlier deploy or delete of `name` finished: racing deploys cannot interleave. */
  async withNameLock<T>(name: string, work: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(name) ?? Promise.resolve();
    const run = previous.then(work, work);
    const settled = run.catch(() => undefined);
    this.locks.set(name, settled);
    try {
      return await run;
    } finally {
      if (this.locks.get(name) === settled) this.locks.delete(name);
    }
  }

  /** Checks and unpacks a bundle. Nothing already stored changes. */
  async prepare(name: string, bytes: Buffer): Promise<PreparedDeploy> {
    checkFunctionName(name);
    const format = sniffFormat(bytes);
    const codeHash = hashBundle(bytes);
    const codePath = this.codePath(codeHash);
    let unpackedBytes: number;
    let fileCount: number;
    if (existsSync(codePath)) {
      const same = [...this.records.values()].find((r) => r.codeHash === codeHash);
      unpackedBytes = same?.unpackedBytes ?? 0;
      fileCount = same?.fileCount ?? 0;
      if (!same) ({ unpackedBytes, fileCount } = await this.unpackFresh(bytes, codePath));
    } else {
      ({ unpackedBytes, fileCount } = await this.unpackFresh(bytes, codePath));
    }
    let entry: string;
    try {
      entry = resolveEntry(codePath, confinedFs(codePath));
    } catch (err) {
      if (err instanceof LoadError) throw new BundleError(err.message);
      throw err;
    }
    const previous = this.records.get(name);
    const record: FunctionRecord = {
      name,
      codeHash,
      format,
      bundleBytes: bytes.length,
      unpackedBytes,
      fileCount,
      entry,
      deployedAt: new Date(this.clock.now()).toISOString(),
      revision: (previous?.revision ?? 0) + 1,
    };
    return { record, codePath, bytes };
  }

  private async unpackFresh(bytes: Buffer, codePath: string) {
    try {
      return await unpackBundle(bytes, codePath, this.limits);
    } catch (err) {
      // Another deploy of the same bytes may have won the race to unpack them.
      if (
        (err as NodeJS.ErrnoException).code === "ENOTEMPTY" ||
        (err as NodeJS.ErrnoException).code === "EEXIST"
      ) {
        return { unpackedBytes: 0, fileCount: 0 };
      }
      throw err;
    }
  }

  /** Stores a prepared deploy: bundle first, then the record (the commit point). */
  async commit(prepared: PreparedDeploy): Promise<FunctionRecord> {
    await this.backend.putBundle(prepared.record.codeHash, prepared.bytes);
    await this.backend.putRecord(prepared.record);
    this.records.set(prepared.record.name, prepared.record);
    return prepared.record;
  }

  /** Drops the unpacked code of a deploy that was not committed, unless some function uses those bytes. */
  async discard(prepared: PreparedDeploy): Promise<void> {
    if ([...this.records.values()].some((r) => r.codeHash === prepared.record.codeHash)) return;
    await forceRemove(prepared.codePath);
  }

  async remove(name: string): Promise<FunctionRecord> {
    checkFunctionName(name);
    const record = this.records.get(name);
    if (!record) throw new RegistryError(404, `no function named ${name}`);
    await this.backend.deleteRecord(name);
    this.records.delete(name);
    return record;
  }
}

/** File checks that refuse to follow links out of the code folder (the agent reads package.json on the host). */
function confinedFs(root: string) {
  const realRoot = realpathSync(root);
  const inside = (p: string) => {
    try {
      const real = realpathSync(p);
      return real === realRoot || real.startsWith(`${realRoot}/`);
    } catch {
      return false;
    }
  };
  return {
    exists: (p: string) => inside(p),
    readFile: (p: string) => {
      if (!inside(p)) throw new BundleError(`${path.relative(root, p)} is outside the bundle`);
      return readFileSync(p, "utf8");
    },
  };
}
