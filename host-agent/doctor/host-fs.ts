/** The real filesystem behind the doctor's checks. */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, readFile, stat, statfs } from "node:fs/promises";
import type { DoctorFs } from "./checks.ts";

export const hostFs: DoctorFs = {
  stat: (path) => stat(path),
  async openReadWrite(path) {
    const handle = await open(path, "r+");
    await handle.close();
  },
  readFile: (path) => readFile(path, "utf8"),
  async freeBytes(path) {
    const s = await statfs(path);
    return s.bavail * s.bsize;
  },
  sha256(path) {
    return new Promise((resolve, reject) => {
      const hash = createHash("sha256");
      createReadStream(path)
        .on("data", (chunk) => hash.update(chunk))
        .on("error", reject)
        .on("end", () => resolve(hash.digest("hex")));
    });
  },
};
