/**
 * Code disks for microVM bases (review S1-7): the agent builds each function's code disk when it is
 * deployed (the format from the base manifest's guest, the size from its placeholder), caches it by
 * code hash, and hands the driver that disk path on a deploy and on every call; code that cannot go on
 * a code disk is a clear 413/400 and nothing stored changes. Real control and data planes, a real
 * registry and real images; the pool is a recorder (no microVM can run here).
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, stat } from "node:fs/promises";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import pino from "pino";
import { request } from "undici";
import type { Manifest } from "../../contracts/base-manifest.ts";
import { readRofsImage } from "../../guest-images/code-disk/rofs.ts";
import { systemClock } from "../../host-agent/clock.ts";
import { createControlPlane } from "../../host-agent/http/control-plane.ts";
import { createDataPlane } from "../../host-agent/http/data-plane.ts";
import { ServingState } from "../../host-agent/http/serving-state.ts";
import { createMetrics } from "../../host-agent/metrics.ts";
import type { InstanceSource } from "../../host-agent/pool/instance-source.ts";
import { type FunctionCode, PoolBusyError } from "../../host-agent/pool/lease.ts";
import { forceRemove } from "../../host-agent/registry/bundle.ts";
import { codeDisksForBase } from "../../host-agent/registry/code-disks.ts";
import { LocalRegistryBackend } from "../../host-agent/registry/local-backend.ts";
import { Registry } from "../../host-agent/registry/registry.ts";
import { helloBundle } from "../helpers/tar-builder.ts";

const MiB = 1024 * 1024;
const TOKEN = "t".repeat(32);

function vmBase(guest: "osv" | "linux", placeholderBytes: number) {
  const manifest = {
    guest,
    artifacts: [
      { name: "vmlinux", sha256: "0".repeat(64), bytes: 10 },
      { name: "code-empty.img", sha256: "1".repeat(64), bytes: placeholderBytes },
    ],
  } as unknown as Manifest;
  return { version: "b".repeat(64), driver: "firecracker" as const, dir: "/bases/b", manifest };
}

describe("code disks for microVM bases", () => {
  it("take the format from the manifest's guest and the size from its placeholder", () => {
    assert.equal(codeDisksForBase({ version: "p", driver: "process" }, "/x"), undefined, "folders only");
    const osv = codeDisksForBase(vmBase("osv", 64 * MiB), "/x");
    assert.equal(osv?.format, "rofs");
    assert.equal(osv?.sizeBytes, 64 * MiB);
    assert.equal(codeDisksForBase(vmBase("linux", 2 * MiB), "/x")?.format, "squashfs");
    assert.throws(
      () => codeDisksForBase(vmBase("osv", 4096), "/x"),
      /code placeholder is 4096 bytes, not a whole MiB; re-bake it/,
    );
    assert.throws(
      () => codeDisksForBase({ version: "v", driver: "firecracker" }, "/x"),
      /needs its manifest/,
    );
  });

  describe("over the control and data planes", () => {
    let state: string;
    let registry: Registry;
    let admin: Server;
    let data: Server;
    let adminUrl: string;
    let dataUrl: string;
    const prespecialized: FunctionCode[] = [];
    const acquired: FunctionCode[] = [];

    const listen = async (server: Server) => {
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    };

    before(async () => {
      state = await mkdtemp(path.join(tmpdir(), "faas-code-disks-"));
      registry = new Registry(
        new LocalRegistryBackend(state),
        path.join(state, "code"),
        { maxBundleBytes: 8 * MiB, maxUnpackedBytes: 8 * MiB, maxFiles: 100 },
        systemClock,
        { codeDisks: codeDisksForBase(vmBase("osv", MiB), path.join(state, "code-disks")) },
      );
      await registry.init();
      const pool = {
        async prespecialize(fn: FunctionCode) {
          prespecialized.push(fn);
          return { functionName: fn.name, style: "jsonrpc", initMs: 1, classes: ["HelloWorldService"] };
        },
        async acquire(fn: FunctionCode) {
          acquired.push(fn);
          throw new PoolBusyError("recorder pool", 1);
        },
        retireFunction: () => 0,
        snapshot: () => ({ functions: {} }),
        close: async () => {},
      } as unknown as InstanceSource;
      const common = {
        registry,
        pool,
        clock: systemClock,
        log: pino({ level: "silent" }),
        metrics: createMetrics(),
      };
      const timeouts = { headersTimeoutMs: 10_000, requestTimeoutMs: 60_000 };
      admin = createControlPlane({
        ...common,
        adminToken: TOKEN,
        maxBundleBytes: 8 * MiB,
        deployTimeoutMs: 30_000,
        health: () => ({}),
        timeouts,
      });
      data = createDataPlane({
        ...common,
        callTimeoutMs: 5_000,
        maxBodyBytes: MiB,
        timeouts,
        serving: new ServingState(),
      });
      adminUrl = await listen(admin);
      dataUrl = await listen(data);
    });

    after(async () => {
      for (const server of [admin, data]) {
        await new Promise<void>((resolve) => {
          server?.close(() => resolve());
          server?.closeAllConnections();
        });
      }
      await forceRemove(state);
    });

    const put = async (name: string, body: Buffer) => {
      const res = await request(`${adminUrl}/v1/functions/${name}`, {
        method: "PUT",
        headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/gzip" },
        body,
      });
      // biome-ignore lint/suspicious/noExplicitAny: tests read whatever shape the deploy answered.
      return { status: res.statusCode, json: (await res.body.json()) as Record<string, any> };
    };

    it("builds the disk at deploy, verifies the deploy on it, and hands every call the same disk", async () => {
      const deployed = await put("hello", helloBundle());
      assert.equal(deployed.status, 201, JSON.stringify(deployed.json));
      const codeHash = deployed.json.function.codeHash as string;
      const disk = path.join(state, "code-disks", `${codeHash}.1m.rofs`);
      assert.deepEqual(
        prespecialized.map((f) => f.hostPath),
        [disk],
      );
      assert.equal((await stat(disk)).size, MiB, "padded to the placeholder's size");
      const contents = readRofsImage(await readFile(disk));
      const index = contents.get("index.js");
      assert.ok(index?.kind === "file" && /HelloWorldService/.test(index.data.toString()));

      const res = await request(`${dataUrl}/hello`, { method: "POST", body: "{}" });
      await res.body.text();
      assert.equal(res.statusCode, 503, "the recorder pool has no instance");
      assert.deepEqual(
        acquired.map((f) => f.hostPath),
        [disk],
      );
    });

    it("refuses code too large for the disk size with 413, and stores nothing", async () => {
      const before = {
        code: await readdir(path.join(state, "code")),
        disks: await readdir(path.join(state, "code-disks")),
        records: await readdir(path.join(state, "registry")),
      };
      const big = helloBundle([{ name: "blob.bin", data: randomBytes(MiB + MiB / 2) }]);
      const refused = await put("big", big);
      assert.equal(refused.status, 413);
      assert.equal(refused.json.error.code, "invalid_bundle");
      assert.match(
        refused.json.error.message,
        /the code cannot be put on a code disk: code too large for a code disk: its image is \d+ bytes \(1\.5\d* MiB\), over the code disk size of 1048576 bytes/,
      );
      assert.deepEqual(
        {
          code: await readdir(path.join(state, "code")),
          disks: await readdir(path.join(state, "code-disks")),
          records: await readdir(path.join(state, "registry")),
        },
        before,
      );
      assert.equal(registry.get("big"), undefined);
    });
  });
});
