/**
 * The tarball of bake sources the stack copies to the builder. pulumi-command's CopyToRemote accepts
 * only path-based sources (a FileAsset or a FileArchive of a path), so the files are packed here into
 * one .tgz and sent as a FileAsset; the bake script unpacks it first.
 *
 * Deterministic: the same files give the same bytes on every machine (sorted entries, mtime 0, no
 * owners, modes normalised to 0644/0755, a gzip header without time or name), so the asset's hash
 * changes only when a file does.
 */
import { createHash } from "node:crypto";
import { chmod, copyFile, mkdir, mkdtemp, readFile, rename, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import * as tar from "tar";
import { bakeSourceFiles } from "../guest-images/bake/sources.ts";

export interface BakeSourcesTarball {
  /** Absolute path of the .tgz (content-addressed: the name carries its sha256). */
  readonly file: string;
  readonly sha256: string;
  /** Repository-relative paths inside, sorted. */
  readonly files: readonly string[];
}

/**
 * Packs `files` (repository-relative) from repoDir into a deterministic .tgz under outDir and returns
 * where it is. A missing file is an error naming it.
 */
export async function packBakeSources(
  repoDir: string,
  files: readonly string[],
  outDir: string,
): Promise<BakeSourcesTarball> {
  const sorted = [...new Set(files)].sort();
  const stage = await mkdtemp(path.join(tmpdir(), "snapfaas-bake-stage-"));
  try {
    for (const rel of sorted) {
      const from = path.join(repoDir, rel);
      const st = await stat(from).catch(() => undefined);
      if (!st?.isFile()) throw new Error(`bake source ${rel} is missing in ${repoDir}`);
      const to = path.join(stage, rel);
      await mkdir(path.dirname(to), { recursive: true });
      await copyFile(from, to);
      // The checkout's umask must not change the bytes; executables stay executable.
      await chmod(to, st.mode & 0o111 ? 0o755 : 0o644);
    }
    await mkdir(outDir, { recursive: true });
    const partial = path.join(outDir, `.sources-${process.pid}-${Date.now()}.tgz`);
    await tar.c(
      {
        file: partial,
        cwd: stage,
        gzip: { level: 9 },
        portable: true,
        mtime: new Date(0),
        noDirRecurse: true,
      },
      sorted,
    );
    const sha256 = createHash("sha256")
      .update(await readFile(partial))
      .digest("hex");
    const file = path.join(outDir, `bake-sources-${sha256.slice(0, 16)}.tgz`);
    await rename(partial, file);
    return { file, sha256, files: sorted };
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
}

/**
 * Where the stack keeps its tarballs: outside the repository, so a bake never packs its own output.
 * One folder per user: another user's folder in a shared /tmp can be neither written nor trusted.
 */
export function defaultBakeSourcesDir(): string {
  return path.join(tmpdir(), `snapfaas-bake-sources-${process.getuid?.() ?? "user"}`);
}

/** The tarball of everything the bake reads (guest-images/bake/sources.ts decides what that is). */
export async function bakeSourcesTarball(
  repoDir: string,
  outDir = defaultBakeSourcesDir(),
): Promise<BakeSourcesTarball> {
  return packBakeSources(repoDir, await bakeSourceFiles(repoDir), outDir);
}
