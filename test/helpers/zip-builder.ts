import yazl from "yazl";

export interface ZipEntry {
  name: string;
  data?: string;
  /** Unix mode including the file type bits (0o120777 for a symlink whose data is its target). */
  mode?: number;
  dir?: boolean;
}

export function zip(entries: ZipEntry[]): Promise<Buffer> {
  const z = new yazl.ZipFile();
  for (const e of entries) {
    if (e.dir) z.addEmptyDirectory(e.name, { mode: e.mode ?? 0o40755 });
    else z.addBuffer(Buffer.from(e.data ?? ""), e.name, { mode: e.mode ?? 0o100644 });
  }
  z.end();
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    z.outputStream.on("data", (c: Buffer) => chunks.push(c));
    z.outputStream.on("end", () => resolve(Buffer.concat(chunks)));
    z.outputStream.on("error", reject);
  });
}
