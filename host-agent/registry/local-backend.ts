/** The registry on the local disk: one JSON record per function, bundles by content hash. */
import { chmod, mkdir, readdir, readFile, rm, stat } from "node:fs/promises";
import path from "node:path";
import { nameOfRecordKey, parseRecord, RecordFormatError } from "../../contracts/registry-layout.ts";
import { writeFileAtomic } from "./atomic-file.ts";
import { type FunctionRecord, parseSecrets, type RegistryBackend, type StoredRecordRef } from "./backend.ts";

export class LocalRegistryBackend implements RegistryBackend {
  private readonly recordsDir: string;
  private readonly bundlesDir: string;
  /** The secret store: one file per function, 0600 in a 0700 folder, beside (not in) the records. */
  private readonly secretsDir: string;
  private prepared = false;

  constructor(stateDir: string) {
    this.recordsDir = path.join(stateDir, "registry");
    this.bundlesDir = path.join(stateDir, "bundles");
    this.secretsDir = path.join(stateDir, "secrets");
  }

  get location(): string {
    return this.recordsDir;
  }

  async listRecords(): Promise<StoredRecordRef[]> {
    if (!this.prepared) {
      await mkdir(this.recordsDir, { recursive: true });
      await mkdir(this.bundlesDir, { recursive: true });
      await removeTornWrites(this.recordsDir);
      await removeTornWrites(this.bundlesDir);
      this.prepared = true;
    }
    const refs: StoredRecordRef[] = [];
    for (const file of (await readdir(this.recordsDir)).sort()) {
      if (!file.endsWith(".json") || file.startsWith(".")) continue;
      const key = path.join(this.recordsDir, file);
      const name = nameOfRecordKey(`registry/${file}`);
      const st = await stat(key).catch(() => undefined);
      if (!st) continue;
      // A file whose name is no function name still shows up, so that it is reported, not ignored.
      refs.push({ name: name ?? file, key, etag: `${st.size}-${st.mtimeMs}` });
    }
    return refs;
  }

  async readRecord(ref: StoredRecordRef): Promise<FunctionRecord | undefined> {
    let body: Buffer;
    try {
      body = await readFile(ref.key);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
    const record = parseRecord(body, ref.key);
    if (record.name !== ref.name) {
      throw new RecordFormatError(`registry file ${ref.key} holds the record of "${record.name}"`);
    }
    return record;
  }

  async putBundle(codeHash: string, bytes: Buffer): Promise<void> {
    const file = path.join(this.bundlesDir, codeHash);
    try {
      if ((await stat(file)).size === bytes.length) return;
    } catch {
      // Not stored yet.
    }
    await writeFileAtomic(file, bytes, 0o600);
  }

  async getBundle(codeHash: string): Promise<Buffer | undefined> {
    try {
      return await readFile(path.join(this.bundlesDir, codeHash));
    } catch {
      return undefined;
    }
  }

  async putRecord(record: FunctionRecord): Promise<void> {
    await writeFileAtomic(
      path.join(this.recordsDir, `${record.name}.json`),
      `${JSON.stringify(record, null, 2)}\n`,
      0o600,
    );
  }

  async deleteRecord(name: string): Promise<void> {
    await rm(path.join(this.recordsDir, `${name}.json`), { force: true });
  }

  async putSecrets(name: string, secrets: Readonly<Record<string, string>>): Promise<void> {
    const file = path.join(this.secretsDir, `${name}.json`);
    if (Object.keys(secrets).length === 0) {
      await rm(file, { force: true });
      return;
    }
    await mkdir(this.secretsDir, { recursive: true, mode: 0o700 });
    await chmod(this.secretsDir, 0o700);
    await writeFileAtomic(file, JSON.stringify(secrets), 0o600);
  }

  async getSecrets(name: string): Promise<Record<string, string>> {
    const file = path.join(this.secretsDir, `${name}.json`);
    let body: Buffer;
    try {
      body = await readFile(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return {};
      throw err;
    }
    return parseSecrets(body, file);
  }
}

/**
 * Removes the temporary files of atomic writes a crashed agent never renamed into place (".<name>.<pid>.<ms>.tmp"):
 * they are never read, only take space. Runs at start, before anything writes.
 */
async function removeTornWrites(dir: string): Promise<void> {
  for (const file of await readdir(dir)) {
    if (file.startsWith(".") && file.endsWith(".tmp")) await rm(path.join(dir, file), { force: true });
  }
}
