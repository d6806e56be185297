/**
 * Builds tar.gz archives byte by byte, so tests can make the hostile ones no archiver would: "../"
 * paths, absolute paths, devices, hard links, setuid bits.
 */
import { gzipSync } from "node:zlib";

export interface TarEntry {
  name: string;
  /** "0" file, "1" hard link, "2" symlink, "3" char device, "4" block device, "5" directory, "6" FIFO. */
  type?: "0" | "1" | "2" | "3" | "4" | "5" | "6";
  data?: string | Buffer;
  mode?: number;
  linkname?: string;
  /** Size to write in the header, when it should lie about the data. */
  declaredSize?: number;
}

function octal(n: number, width: number): string {
  return `${n.toString(8).padStart(width - 1, "0")}\0`;
}

function header(e: TarEntry, size: number): Buffer {
  const h = Buffer.alloc(512);
  h.write(e.name, 0, 100, "utf8");
  h.write(octal(e.mode ?? (e.type === "5" ? 0o755 : 0o644), 8), 100);
  h.write(octal(0, 8), 108);
  h.write(octal(0, 8), 116);
  h.write(octal(e.declaredSize ?? size, 12), 124);
  h.write(octal(0, 12), 136);
  h.write("        ", 148);
  h.write(e.type ?? "0", 156);
  if (e.linkname) h.write(e.linkname, 157, 100, "utf8");
  h.write("ustar\0", 257);
  h.write("00", 263);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148);
  return h;
}

export function tarGz(entries: TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const data = typeof e.data === "string" ? Buffer.from(e.data) : (e.data ?? Buffer.alloc(0));
    const hasData = (e.type ?? "0") === "0";
    parts.push(header(e, hasData ? data.length : 0));
    if (hasData && data.length > 0) {
      parts.push(data, Buffer.alloc((512 - (data.length % 512)) % 512));
    }
  }
  parts.push(Buffer.alloc(1024));
  return gzipSync(Buffer.concat(parts));
}

export const HELLO_MODULE = `class HelloWorldService {
  helloWorld() { console.log("Hello world - request received!"); return "Hello world!"; }
}
module.exports = { HelloWorldService };
`;

export function helloBundle(extra: TarEntry[] = []): Buffer {
  return tarGz([{ name: "index.js", data: HELLO_MODULE }, ...extra]);
}
