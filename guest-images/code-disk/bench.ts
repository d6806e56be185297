import { cp, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import type { CodeDiskFormat } from "../../contracts/code-disk.ts";
import { buildCodeDisk } from "./build.ts";

export interface CodeDiskBuildTiming {
  readonly format: CodeDiskFormat;
  readonly iterations: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly imageBytes: number;
}

/** Writes a small function (the seed's hello-world class plus a package.json) into dir. */
export async function writeSmallFunction(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, "package.json"), '{"name":"hello-world","main":"hello.js"}\n');
  await writeFile(
    path.join(dir, "hello.js"),
    'export class HelloWorldService {\n  helloWorld() {\n    return "Hello world!";\n  }\n}\n',
  );
}

/**
 * Times buildCodeDisk for a small function (srcDir, or the seed's hello-world written here),
 * `iterations` builds in a row: what the bench suite reports as "code disk build". Everything it
 * writes is under a temp dir it removes.
 */
export async function timeCodeDiskBuild(
  format: CodeDiskFormat,
  iterations = 20,
  srcDir?: string,
): Promise<CodeDiskBuildTiming> {
  const work = await mkdtemp(path.join(tmpdir(), "code-disk-bench-"));
  try {
    const src = srcDir ?? path.join(work, "src");
    if (!srcDir) await writeSmallFunction(src);
    const samples: number[] = [];
    let imageBytes = 0;
    for (let i = 0; i < iterations; i++) {
      const started = performance.now();
      const disk = await buildCodeDisk(src, path.join(work, `code-${i}.img`), { format });
      samples.push(performance.now() - started);
      imageBytes = disk.bytes;
    }
    samples.sort((a, b) => a - b);
    const at = (q: number) => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))] ?? 0;
    return { format, iterations, p50Ms: at(0.5), p99Ms: at(0.99), imageBytes };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** The baseline for code disk builds: a plain recursive copy of the same folder (p50/p99, ms). */
export async function timeFolderCopy(
  srcDir: string,
  iterations = 20,
): Promise<{ p50Ms: number; p99Ms: number }> {
  const work = await mkdtemp(path.join(tmpdir(), "code-disk-bench-copy-"));
  try {
    const samples: number[] = [];
    for (let i = 0; i < iterations; i++) {
      const started = performance.now();
      await cp(srcDir, path.join(work, `copy-${i}`), { recursive: true });
      samples.push(performance.now() - started);
    }
    samples.sort((a, b) => a - b);
    const at = (q: number) => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))] ?? 0;
    return { p50Ms: at(0.5), p99Ms: at(0.99) };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
