/**
 * The function registry: names to code. Deploys are validated and unpacked (and, for microVM guests,
 * put on a code disk) before anything stored is touched, then committed in one atomic record write;
 * deploys of one name run one at a time. With a shared store (S3) other writers (the Pulumi
 * FaasFunction, other hosts) add, replace and delete records: refresh() reads what changed, and a record
 * that cannot be used (bad JSON, fails the contract, bundle missing or broken) is skipped and logged,
 * never fatal.
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync, realpathSync } from "node:fs";
import { mkdir, readdir } from "node:fs/promises";
import path from "node:path";
import { applyConfigPatch, type FunctionConfigPatch, publicConfig } from "../../contracts/function-config.ts";
import { EntryError, resolveFunctionEntry } from "../../contracts/function-entry.ts";
import type { LoadSettings } from "../../contracts/guest-protocol.ts";
import type { NativeAddonAbi } from "../../contracts/native-addons.ts";
import {
  FUNCTION_NAME,
  RESERVED_FUNCTION_NAMES,
  RecordFormatError,
} from "../../contracts/registry-layout.ts";
import type { Clock } from "../clock.ts";
import type { Logger } from "../log.ts";
import {
  type FunctionRecord,
  type RegistryBackend,
  StoreAccessError,
  type StoredRecordRef,
} from "./backend.ts";
import {
  BundleError,
  type BundleLimits,
  forceRemove,
  hashBundle,
  sniffFormat,
  unpackBundle,
} from "./bundle.ts";
import type { CodeDisks } from "./code-disks.ts";
import { checkNativeAddons } from "./native-addon-check.ts";

export { FUNCTION_NAME };

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
  if (RESERVED_FUNCTION_NAMES.has(name))
    throw new RegistryError(400, `the function name "${name}" is reserved`);
}

/** A deploy that passed every check but is not stored yet. */
export interface PreparedDeploy {
  readonly record: FunctionRecord;
  readonly codePath: string;
  /** What the driver attaches: the code folder, or its code disk image for microVMs. */
  readonly artifactPath: string;
  /** The bundle to store; undefined for a change of configuration only (the code stays). */
  readonly bytes: Buffer | undefined;
  /** The secrets to store with the record; undefined when they stay as they are. */
  readonly secrets: Record<string, string> | undefined;
}

/** What the host gives every function unless its configuration says otherwise. */
export interface HostFunctionDefaults {
  /** The instance memory the host reserves (the most a function may have), MiB. */
  readonly memoryMiB?: number;
  /** The host's call timeout (the longest a function may have), ms. */
  readonly callTimeoutMs: number;
  /** The host's AWS region, when it has one. */
  readonly region?: string;
}

/** How the pool loads a function and how long its calls may take, from its record and secrets. */
export interface FunctionSettings {
  /** The load call's settings: environment (variables and secrets), version, memory, region, CORS. */
  readonly load: LoadSettings;
  /** Identifies `load`: an instance loaded with other settings is not reused for this function. */
  readonly hash: string;
  readonly timeoutMs: number;
  /** The function's instances get outbound network (their own namespace, NAT to the uplink, DNS). */
  readonly egress: boolean;
  /** Calls one instance serves at once (the function's `concurrency`, default 1). */
  readonly concurrency: number;
}

/** A record as the admin API shows it: the configuration's names, never its values. */
export function publicRecord(record: FunctionRecord): Record<string, unknown> {
  return { ...record, config: publicConfig(record.config) };
}

/** What one refresh changed, by function name. */
export interface RegistryChanges {
  readonly added: string[];
  readonly replaced: string[];
  readonly removed: string[];
  /** Records skipped this time, with why (each also logged once per stored version). */
  readonly skipped: Array<{ readonly name: string; readonly key: string; readonly reason: string }>;
}

export interface RegistryOptions {
  readonly log?: Logger;
  /** Set for microVM drivers: each function's code also goes on a code disk image. */
  readonly codeDisks?: CodeDisks;
  /**
   * What native addons the serving base loads, asked at each deploy (a roll changes the base): a
   * deploy with an addon it cannot load is refused. Undefined: the base does not say, nothing is checked.
   */
  readonly nativeAddons?: () => NativeAddonAbi | undefined;
  /** Called after a refresh added, replaced (with the new record) or removed (undefined) a function. */
  readonly onChange?: (name: string, record: FunctionRecord | undefined) => void;
  /** Defaults and bounds of memory and timeout, and the region (default: 30 s, memory unknown). */
  readonly functionDefaults?: HostFunctionDefaults;
}

/** A record that cannot be served: logged and left out, never fatal. */
class SkippedRecord extends Error {
  constructor(
    message: string,
    /**
     * True when the stored record itself is at fault: it is not read again until it changes. False
     * when it may come good by itself (a bundle not uploaded yet, an access error): read again next poll.
     */
    readonly final: boolean,
    readonly level: "warn" | "error" = "warn",
  ) {
    super(message);
  }
}

export class Registry {
  private readonly records = new Map<string, FunctionRecord>();
  /** The stored version (etag) each known record was last read at, skipped ones included. */
  private readonly seen = new Map<string, string>();
  private readonly locks = new Map<string, Promise<unknown>>();
  private refreshing: Promise<RegistryChanges> | undefined;
  /** Counts this agent's own writes (commits, removes), and the count at each name's last one. */
  private writeSeq = 0;
  private readonly lastWrite = new Map<string, number>();
  /** The last skip logged per name (etag and reason): a record retried every poll is logged once. */
  private readonly lastSkip = new Map<string, string>();
  private onChange: RegistryOptions["onChange"];
  /** Each function's secrets, read from the secret store with its record. Never logged. */
  private readonly secrets = new Map<string, Record<string, string>>();
  /** The settings of each record object, computed once (the data plane asks on every call). */
  private readonly settingsCache = new WeakMap<FunctionRecord, FunctionSettings>();

  constructor(
    private readonly backend: RegistryBackend,
    private readonly codeRoot: string,
    private readonly limits: BundleLimits,
    private readonly clock: Clock,
    private readonly options: RegistryOptions = {},
  ) {
    this.onChange = options.onChange;
  }

  /** Who hears about functions a refresh added, replaced or removed (the pools retire old code). */
  set changeListener(listener: RegistryOptions["onChange"]) {
    this.onChange = listener;
  }

  /**
   * Loads every usable record and makes sure each one's code is unpacked (it is derived from the stored
   * bundle). Records that cannot be used are skipped and logged. Throws only when the store cannot be
   * listed at all.
   */
  async init(): Promise<void> {
    await mkdir(this.codeRoot, { recursive: true });
    // What a crash mid-deploy left: half-unpacked staging folders.
    for (const item of await readdir(this.codeRoot)) {
      if (item.includes(".staging-")) await forceRemove(path.join(this.codeRoot, item));
    }
    await this.refresh();
    // Code no record points to (a deploy that never committed, a function since deleted): derived
    // from stored bundles, so removing it loses nothing. Only at start: nothing runs from it yet.
    const used = new Set([...this.records.values()].map((r) => r.codeHash));
    for (const item of await readdir(this.codeRoot)) {
      if (!used.has(item)) await forceRemove(path.join(this.codeRoot, item));
    }
    await this.options.codeDisks?.prune(used);
  }

  /**
   * Reads what changed in the store since the last look (new, changed and deleted records, by etag) and
   * applies it. One refresh at a time; a call while one runs waits for it and returns its changes.
   */
  refresh(): Promise<RegistryChanges> {
    this.refreshing ??= this.refreshOnce().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  private async refreshOnce(): Promise<RegistryChanges> {
    const changes: RegistryChanges = { added: [], replaced: [], removed: [], skipped: [] };
    const listedAt = this.writeSeq;
    const refs = await this.backend.listRecords();
    // A name this agent wrote after the listing began: the listing may predate the write, so the
    // next refresh judges it.
    const writtenSince = (name: string) => (this.lastWrite.get(name) ?? 0) > listedAt;
    const listed = new Set<string>();
    for (const ref of refs) {
      listed.add(ref.name);
      if (this.seen.get(ref.name) === ref.etag) continue;
      await this.withNameLock(ref.name, async () => {
        if (!writtenSince(ref.name)) await this.adopt(ref, changes);
      });
    }
    for (const name of new Set([...this.seen.keys(), ...this.records.keys(), ...this.lastSkip.keys()])) {
      if (listed.has(name)) continue;
      this.lastSkip.delete(name);
      await this.withNameLock(name, async () => {
        if (writtenSince(name)) return;
        this.seen.delete(name);
        this.secrets.delete(name);
        if (this.records.delete(name)) {
          changes.removed.push(name);
          this.options.log?.info({ fn: name }, "function removed from the registry");
          this.onChange?.(name, undefined);
        }
      });
    }
    return changes;
  }

  /** Reads one changed record and serves it, or leaves its name unserved when it cannot be used. */
  private async adopt(ref: StoredRecordRef, changes: RegistryChanges): Promise<void> {
    const previous = this.records.get(ref.name);
    let record: FunctionRecord | undefined;
    let secrets: Record<string, string> = {};
    try {
      record = await this.backend.readRecord(ref);
      if (record) await this.materialize(record);
      if (record?.config?.secretNames?.length) {
        secrets = await this.backend.getSecrets(record.name);
        const missing = record.config.secretNames.filter((n) => !(n in secrets));
        // Not final: the writer stores the secrets first, so they may still be on their way.
        if (missing.length > 0)
          throw new SkippedRecord(`its secrets ${missing.join(", ")} are not stored`, false);
      }
    } catch (err) {
      const skipped = toSkipped(err);
      const reason = skipped.message;
      changes.skipped.push({ name: ref.name, key: ref.key, reason });
      if (skipped.final) this.seen.set(ref.name, ref.etag);
      else this.seen.delete(ref.name);
      const skipKey = `${ref.etag} ${reason}`;
      if (this.lastSkip.get(ref.name) !== skipKey) {
        this.lastSkip.set(ref.name, skipKey);
        this.options.log?.[skipped.level](
          { record: ref.key, fn: ref.name, reason },
          "registry record skipped",
        );
      }
      // A broken version of a function is not served anywhere: every host reads the same store, so
      // every host reaches the same verdict instead of some serving an older version.
      if (previous && skipped.final) {
        this.records.delete(ref.name);
        changes.removed.push(ref.name);
        this.onChange?.(ref.name, undefined);
      }
      return;
    }
    if (!record) {
      // Deleted between the listing and the read: the next listing will not show it.
      this.seen.delete(ref.name);
      return;
    }
    this.seen.set(ref.name, ref.etag);
    this.lastSkip.delete(ref.name);
    if (previous && sameRecord(previous, record)) return;
    this.secrets.set(record.name, secrets);
    this.records.set(record.name, record);
    (previous ? changes.replaced : changes.added).push(record.name);
    this.options.log?.info(
      { fn: record.name, codeHash: record.codeHash, revision: record.revision },
      previous ? "function replaced from the registry" : "function added from the registry",
    );
    this.onChange?.(record.name, record);
  }

  /** Makes a stored record's code ready here: the bundle unpacked, checked, and on a code disk if needed. */
  private async materialize(record: FunctionRecord): Promise<void> {
    const codePath = this.codePath(record.codeHash);
    if (!existsSync(codePath)) {
      const bytes = await this.backend.getBundle(record.codeHash);
      // Not final: the bundle may still be on its way (or be uploaded again); the record is read again.
      if (!bytes) throw new SkippedRecord(`its bundle ${record.codeHash} is missing from the store`, false);
      if (hashBundle(bytes) !== record.codeHash) {
        throw new SkippedRecord(
          `its bundle's bytes do not hash to the record's codeHash ${record.codeHash}`,
          true,
        );
      }
      await unpackBundle(bytes, codePath, this.limits);
    }
    try {
      resolveFunctionEntry(codePath, confinedFs(codePath));
    } catch (err) {
      if (err instanceof EntryError || err instanceof BundleError) throw new SkippedRecord(err.message, true);
      throw err;
    }
    await this.options.codeDisks?.ensure(record.codeHash, codePath);
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

  /** A function's stored secrets ({} for none). */
  secretsOf(name: string): Readonly<Record<string, string>> {
    return this.secrets.get(name) ?? {};
  }

  /**
   * How a record's function is loaded and called here: its configuration within this host's bounds (a
   * record another writer made may ask for more), its secrets (given for a deploy not committed yet).
   */
  settingsFor(record: FunctionRecord, secrets?: Readonly<Record<string, string>>): FunctionSettings {
    const cached = secrets === undefined ? this.settingsCache.get(record) : undefined;
    if (cached) return cached;
    const host = this.options.functionDefaults ?? { callTimeoutMs: 30_000 };
    const config = record.config;
    const asked = config?.memoryMiB ?? host.memoryMiB;
    const memoryMiB =
      asked === undefined || host.memoryMiB === undefined ? asked : Math.min(asked, host.memoryMiB);
    const env = { ...(config?.env ?? {}), ...(secrets ?? this.secretsOf(record.name)) };
    const egress = config?.egress === true;
    const load: LoadSettings = {
      env,
      functionVersion: String(record.revision),
      ...(memoryMiB !== undefined ? { memoryMiB } : {}),
      ...(host.region ? { region: host.region } : {}),
      ...(config?.cors ? { cors: config.cors } : {}),
    };
    const settings: FunctionSettings = {
      load,
      // Egress is part of the version (an instance loaded without a network must not serve it); left out
      // of the text when off, so the hashes of functions without it stay as they were.
      hash: createHash("sha256")
        .update(JSON.stringify(load) + (egress ? "\negress" : ""))
        .digest("hex")
        .slice(0, 16),
      timeoutMs: Math.min(config?.timeoutMs ?? host.callTimeoutMs, host.callTimeoutMs),
      egress,
      concurrency: Math.max(1, config?.concurrency ?? 1),
    };
    if (secrets === undefined) this.settingsCache.set(record, settings);
    return settings;
  }

  /**
   * The deployed functions whose native addons a base with `abi` cannot load, each with why: what a roll
   * to that base would break.
   */
  async addonProblemsOn(abi: NativeAddonAbi): Promise<Array<{ name: string; problem: string }>> {
    const found: Array<{ name: string; problem: string }> = [];
    // Functions deployed from the same code share its folder: each folder is read once.
    const byCode = new Map<string, string | null>();
    for (const record of this.list()) {
      if (!byCode.has(record.codeHash))
        byCode.set(record.codeHash, await addonProblemOf(this.codePath(record.codeHash), abi));
      const problem = byCode.get(record.codeHash);
      if (problem) found.push({ name: record.name, problem });
    }
    return found;
  }

  codePath(codeHash: string): string {
    return path.join(this.codeRoot, codeHash);
  }

  /** What the driver attaches for a code hash: its code disk image with microVMs, else the folder. */
  artifactPath(codeHash: string): string {
    return this.options.codeDisks?.pathFor(codeHash) ?? this.codePath(codeHash);
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

  /**
   * Checks and unpacks a bundle, with a change of configuration when given (else the previous
   * deployment's stays). Nothing already stored changes.
   */
  async prepare(name: string, bytes: Buffer, patch?: FunctionConfigPatch): Promise<PreparedDeploy> {
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
      entry = resolveFunctionEntry(codePath, confinedFs(codePath)).file;
      const abi = this.options.nativeAddons?.();
      if (abi) await checkNativeAddons(codePath, abi);
    } catch (err) {
      // Nothing stored changes: the folder unpacked for this deploy goes, unless a function uses it.
      if (![...this.records.values()].some((r) => r.codeHash === codeHash)) await forceRemove(codePath);
      if (err instanceof EntryError) throw new BundleError(err.message);
      throw err;
    }
    let artifactPath = codePath;
    if (this.options.codeDisks) {
      try {
        artifactPath = await this.options.codeDisks.ensure(codeHash, codePath);
      } catch (err) {
        // Nothing stored changes: the folder unpacked for this deploy goes too, unless a function uses it.
        if (![...this.records.values()].some((r) => r.codeHash === codeHash)) await forceRemove(codePath);
        throw err;
      }
    }
    const previous = this.records.get(name);
    const configured = patch
      ? applyConfigPatch(previous?.config, this.secretsOf(name), patch)
      : { config: previous?.config, secrets: undefined };
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
      ...(configured.config && Object.keys(configured.config).length > 0
        ? { config: configured.config }
        : {}),
    };
    return { record, codePath, artifactPath, bytes, secrets: configured.secrets };
  }

  /**
   * A change of a deployed function's configuration, same code, next revision: checked (ConfigError),
   * not stored yet. Commit it like a deploy; until then the function runs as before.
   */
  prepareConfig(name: string, patch: FunctionConfigPatch): PreparedDeploy {
    checkFunctionName(name);
    const previous = this.records.get(name);
    if (!previous) throw new RegistryError(404, `no function named ${name}`);
    const { config, secrets } = applyConfigPatch(previous.config, this.secretsOf(name), patch);
    const { config: _old, ...rest } = previous;
    const record: FunctionRecord = {
      ...rest,
      revision: previous.revision + 1,
      ...(Object.keys(config).length > 0 ? { config } : {}),
    };
    return {
      record,
      codePath: this.codePath(record.codeHash),
      artifactPath: this.artifactPath(record.codeHash),
      bytes: undefined,
      secrets,
    };
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

  /** Stores a prepared deploy: bundle and secrets first, then the record (the commit point). */
  async commit(prepared: PreparedDeploy): Promise<FunctionRecord> {
    const name = prepared.record.name;
    if (prepared.bytes) await this.backend.putBundle(prepared.record.codeHash, prepared.bytes);
    this.lastWrite.set(name, ++this.writeSeq);
    if (prepared.secrets) await this.backend.putSecrets(name, prepared.secrets);
    await this.backend.putRecord(prepared.record);
    if (prepared.secrets) this.secrets.set(name, prepared.secrets);
    this.records.set(name, prepared.record);
    return prepared.record;
  }

  /** Drops the unpacked code of a deploy that was not committed, unless some function uses those bytes. */
  async discard(prepared: PreparedDeploy): Promise<void> {
    if (!prepared.bytes) return;
    if ([...this.records.values()].some((r) => r.codeHash === prepared.record.codeHash)) return;
    await forceRemove(prepared.codePath);
    if (prepared.artifactPath !== prepared.codePath) await forceRemove(prepared.artifactPath);
  }

  async remove(name: string): Promise<FunctionRecord> {
    checkFunctionName(name);
    const record = this.records.get(name);
    if (!record) throw new RegistryError(404, `no function named ${name}`);
    this.lastWrite.set(name, ++this.writeSeq);
    await this.backend.deleteRecord(name);
    if (record.config?.secretNames?.length) await this.backend.putSecrets(name, {});
    this.records.delete(name);
    this.secrets.delete(name);
    this.seen.delete(name);
    return record;
  }
}

function sameRecord(a: FunctionRecord, b: FunctionRecord): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** Why a stored record cannot be served, as one line; access errors are not final (read again later). */
function toSkipped(err: unknown): SkippedRecord {
  if (err instanceof SkippedRecord) return err;
  if (err instanceof RecordFormatError) return new SkippedRecord(err.message, true);
  if (err instanceof BundleError) return new SkippedRecord(`its bundle is refused: ${err.message}`, true);
  if (err instanceof StoreAccessError) return new SkippedRecord(err.message, false, "error");
  return new SkippedRecord((err as Error).message ?? String(err), false, "error");
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

/** Why a base with `abi` cannot load the addons in `codeDir` (checkNativeAddons' message), or null. */
async function addonProblemOf(codeDir: string, abi: NativeAddonAbi): Promise<string | null> {
  try {
    await checkNativeAddons(codeDir, abi);
    return null;
  } catch (err) {
    if (!(err instanceof BundleError)) throw err;
    return err.message;
  }
}
