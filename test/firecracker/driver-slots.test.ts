import assert from "node:assert/strict";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { execa, type ResultPromise } from "execa";
import { parseFirecrackerDriverConfig } from "../../contracts/firecracker-driver-config.ts";
import { execaRunner } from "../../host-agent/sandbox/command-runner.ts";
import { FirecrackerApiClient } from "../../host-agent/sandbox/firecracker/api-client.ts";
import { FirecrackerDriver } from "../../host-agent/sandbox/firecracker/firecracker-driver.ts";
import { NetworkSlotPool } from "../../host-agent/sandbox/firecracker/network-slots.ts";
import { bootVm, createSnapshot, pauseVm } from "../../host-agent/sandbox/firecracker/vm-lifecycle.ts";
import type { SpawnVmm } from "../../host-agent/sandbox/firecracker/vmm-process.ts";
import { FakeFirecracker } from "./fake-firecracker.ts";
import { isRoot, makeTempDir, removeDir, writeBakeInputs } from "./helpers.ts";
import { skipWithoutSpec } from "./spec-schemas.ts";

/**
 * Stand-in guest runtime as a process inside the slot's netns, on the guest IP (held on the netns
 * loopback: without a VM the tap has no carrier). Prints each /_faas/init body as a JSON line.
 */
const GUEST_CODE = `
const http = require("node:http");
http.createServer((q, s) => {
  let body = "";
  q.on("data", (c) => (body += c));
  q.on("end", () => {
    if (q.url === "/_faas/health") return s.end("{}");
    if (q.url === "/_faas/init") { console.log(JSON.stringify({ init: JSON.parse(body), from: q.socket.remoteAddress })); s.statusCode = 204; return s.end(); }
    s.statusCode = 404; s.end();
  });
}).listen(Number(process.argv[2]), process.argv[1], () => console.log("listening"));
`;

describe("FirecrackerDriver with real network slots (fake VMM, stand-in guest in the netns)", function () {
  this.timeout(60_000);
  let dir: string;
  let driver: FirecrackerDriver | undefined;
  const fakes: FakeFirecracker[] = [];
  const guests: ResultPromise[] = [];
  const initLines: string[] = [];

  before(async function () {
    skipWithoutSpec(this);
    if (!isRoot() || (await execa("nft", ["--version"], { reject: false })).exitCode !== 0) {
      console.log("    skipped: needs root, iproute2 and nftables");
      this.skip();
    }
    dir = await makeTempDir("driver-slots");
  });

  after(async () => {
    await driver?.close();
    for (const f of fakes) await f.exit("test over");
    for (const g of guests) {
      g.kill("SIGKILL");
      await g.catch(() => undefined);
    }
    await removeDir(dir);
  });

  it("hands out instances whose endpoint reaches the guest through the slot's NAT, and frees the slots", async () => {
    const bakeRoot = join(dir, "bake");
    await writeBakeInputs(bakeRoot);
    await mkdir(join(bakeRoot, "run"));
    const bakeFc = await FakeFirecracker.start({
      socketPath: join(bakeRoot, "run", "api.sock"),
      rootDir: bakeRoot,
    });
    const api = new FirecrackerApiClient({ socketPath: join(bakeRoot, "run", "api.sock") });
    await bootVm(
      api,
      { bootArgs: "", vcpus: 1, memMiB: 128, ifaceId: "eth0", tapName: "tap0", limiters: {} },
      "/base/kernel.elf",
    );
    await pauseVm(api);
    await createSnapshot(api);
    await api.close();
    await bakeFc.exit("bake done");

    const config = parseFirecrackerDriverConfig({
      chrootBase: join(dir, "jails"),
      cgroupRoot: join(dir, "cgroup"),
      guestReadyTimeoutMs: 10_000,
      network: {
        netnsPrefix: "fcdrv",
        vethPrefix: "fcdv",
        hostSubnetBase: "10.202.0.0",
        poolSize: 2,
        maxSlots: 4,
      },
    });
    const slots = new NetworkSlotPool(config.network, execaRunner);
    const spawnVmm: SpawnVmm = async (req) => {
      const netnsPath = req.jailerArgv[req.jailerArgv.indexOf("--netns") + 1]!;
      const netns = netnsPath.split("/").at(-1)!;
      await mkdir(join(req.jailRoot, "run"), { recursive: true });
      let guest: ResultPromise | undefined;
      const fake = await FakeFirecracker.start({
        socketPath: req.apiSocketPath,
        rootDir: req.jailRoot,
        onGuestRunning: async (running) => {
          if (running && !guest) {
            await execa("ip", [
              "-n",
              netns,
              "addr",
              "replace",
              `${config.network.guestAddress}/32`,
              "dev",
              "lo",
            ]);
            guest = execa("ip", [
              "netns",
              "exec",
              netns,
              process.execPath,
              "-e",
              GUEST_CODE,
              config.network.guestAddress,
              String(config.guestPort),
            ]);
            guests.push(guest);
            // Killed on purpose at the end: its rejection is expected, not an error.
            guest.catch(() => undefined);
            // Whole lines only: a chunk may end mid-line.
            let pending = "";
            guest.stdout?.on("data", (c: Buffer) => {
              const lines = (pending + c.toString()).split("\n");
              pending = lines.pop() ?? "";
              initLines.push(...lines.filter((l) => l.includes("init")));
            });
            await new Promise<void>((resolve) => guest!.stdout?.once("data", () => resolve()));
          } else if (guest) {
            // A paused VM runs no guest code: stop the stand-in likewise.
            guest.kill(running ? "SIGCONT" : "SIGSTOP");
          }
        },
      });
      fakes.push(fake);
      void fake.exited.then(() => guest?.kill("SIGKILL"));
      return {
        pid: undefined,
        apiSocketPath: req.apiSocketPath,
        exited: fake.exited.then((e) => ({ code: null, signal: null, description: e.reason })),
        kill: () => fake.exit("killed"),
      };
    };
    driver = new FirecrackerDriver(config, { spawnVmm, slots, preflight: async () => [] });
    await driver.init();
    const limits = { memoryMiB: 128, cpuPercent: 100, pids: 64, tmpMiB: 16, openFiles: 256, fileSizeMiB: 16 };
    const base = { version: "v1", driver: "firecracker" as const, dir: join(bakeRoot, "base") };
    const [a, b] = await Promise.all([
      driver.start({ id: "vm-n1", base, limits }),
      driver.start({ id: "vm-n2", base, limits }),
    ]);
    assert.deepEqual(
      [a!.endpoint, b!.endpoint].map((e) => (e.kind === "tcp" ? `${e.host}:${e.port}` : "")).sort(),
      ["10.202.0.2:8123", "10.202.0.6:8123"],
    );
    // The stand-in answers /_faas/init before its log line reaches our pipe: wait for both lines.
    const deadline = Date.now() + 5_000;
    while (initLines.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    const inits = initLines.map((l) => JSON.parse(l) as { init: { instanceId: string }; from: string });
    assert.deepEqual(inits.map((i) => i.init.instanceId).sort(), ["vm-n1", "vm-n2"]);
    assert.ok(
      inits.every((i) => /^10\.202\.0\.(1|5)$/.test(i.from)),
      "init came from the host veth through the NAT",
    );
    await a!.destroy("done");
    await b!.destroy("done");
    await driver.close();
    driver = undefined;
    const { stdout } = await execa("ip", ["netns", "list"]);
    assert.doesNotMatch(stdout, /fcdrv-/);
    const links = await execa("ip", ["-o", "link", "show"]);
    assert.doesNotMatch(links.stdout, /fcdv-/);
  });
});
