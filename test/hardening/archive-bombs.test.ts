/** Compression bombs against the bundle unpacker itself (no agent needed): refused fast, event loop free. */
import assert from "node:assert/strict";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import { BundleError, forceRemove, unpackBundle } from "../../host-agent/registry/bundle.ts";
import { HELLO_MODULE, tarGz } from "../helpers/tar-builder.ts";

const LIMITS = { maxBundleBytes: 50 * 1024 * 1024, maxUnpackedBytes: 8 * 1024 * 1024, maxFiles: 100 };

/** A valid tar (one small file, end marker) followed by `zeros` bytes of zeros, gzipped: ~1000:1. */
function gzipBomb(zeros: number): Buffer {
  const tar = gunzipSync(tarGz([{ name: "index.js", data: HELLO_MODULE }]));
  return gzipSync(Buffer.concat([tar, Buffer.alloc(zeros)]), { level: 9 });
}

describe("hardening: compression bombs", function () {
  this.timeout(30_000);
  let dir: string;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "faas-bomb-"));
  });

  after(async () => {
    await forceRemove(dir);
  });

  // protection: bundle.ts inflateTar gunzips in zlib's thread pool with maxOutputLength from the limits
  it("refuses a gzip that inflates far past the unpacked limit with 413, without blocking the event loop", async () => {
    const bomb = gzipBomb(96 * 1024 * 1024);
    assert.ok(bomb.length < 200 * 1024, `the bomb is small (${bomb.length} bytes)`);
    // The worst event-loop gap while the bomb is refused; the best of three, so one pause of a busy
    // machine is not taken for a blocking inflate (which would stall all three).
    const gaps: number[] = [];
    for (let attempt = 0; attempt < 3 && !gaps.some((g) => g < 250); attempt++) {
      let lastTick = performance.now();
      let worstGapMs = 0;
      const ticker = setInterval(() => {
        const now = performance.now();
        worstGapMs = Math.max(worstGapMs, now - lastTick);
        lastTick = now;
      }, 5);
      const t0 = performance.now();
      try {
        await assert.rejects(unpackBundle(bomb, path.join(dir, `a${attempt}`), LIMITS), (err: unknown) => {
          assert.ok(err instanceof BundleError);
          assert.equal(err.status, 413);
          assert.match(err.message, /unpacks to more than 8388608 bytes/);
          return true;
        });
      } finally {
        clearInterval(ticker);
      }
      assert.ok(performance.now() - t0 < 5000, "refused within seconds");
      gaps.push(worstGapMs);
    }
    assert.ok(
      gaps.some((g) => g < 250),
      `the event loop kept turning (worst gaps ${gaps.map((g) => g.toFixed(0)).join(", ")} ms)`,
    );
  });

  // protection: the same bound lets an ordinary archive with trailing padding through
  it("accepts trailing zeros within the limit", async () => {
    const res = await unpackBundle(gzipBomb(1024 * 1024), path.join(dir, "b"), LIMITS);
    assert.equal(res.fileCount, 1);
  });
});
