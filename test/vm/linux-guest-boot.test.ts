/**
 * The Linux guest image as built by the recipe (guest-images/linux/local-image.ts: Debian's 6.1
 * source + Firecracker's config + our fragment, build-rootfs.sh with the runtime bundle), booted for
 * real under QEMU/TCG on `-M microvm` with the recipe's own kernel arguments, no initrd. The host
 * side is the agent's own GuestClient over user-mode networking (hostfwd to 127.0.0.1).
 * TCG is 30-60x slower than KVM: timeouts are generous and nothing here asserts on timing.
 * Needs qemu-system-x86_64 and the cached image (`npm run guest:linux`; .ci/run builds it first).
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { LINUX_KERNEL_PIN } from "../../guest-images/bake/pins.ts";
import { buildCodeDisk } from "../../guest-images/code-disk/build.ts";
import type { LinuxGuestImage } from "../../guest-images/linux/local-image.ts";
import { GuestClient } from "../../host-agent/guest/client.ts";
import { hostTscKhz } from "../../host-agent/sandbox/firecracker/host-tsc.ts";
import { findOnPath } from "../../host-agent/sandbox/process/preflight.ts";
import { linuxImageOrSkip } from "../firecracker/qemu-helpers.ts";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
/** The runtime's port in the guest (init.sh) and the guest's address (the recipe's ip= argument). */
const GUEST = { ip: "172.16.0.2", port: 8123 };
const BOOT_TIMEOUT_MS = 240_000;

async function freePort(): Promise<number> {
  const server = createServer().listen(0, "127.0.0.1");
  await new Promise((r) => server.once("listening", r));
  const { port } = server.address() as { port: number };
  await new Promise((r) => server.close(r));
  return port;
}

/** The hello-world example plus a probe that reports which kernel the guest runs. */
async function buildProbeCodeDisk(dir: string): Promise<string> {
  const src = path.join(dir, "probe-src");
  const code = path.join(dir, "code");
  await mkdir(src, { recursive: true });
  await writeFile(
    path.join(src, "index.ts"),
    `export { HelloWorldService } from ${JSON.stringify(path.join(REPO, "examples/hello-world/index.ts"))};
import { readFileSync } from "node:fs";
export class GuestProbe {
  kernel(): string { return readFileSync("/proc/version", "utf8"); }
  mounts(): string { return readFileSync("/proc/mounts", "utf8"); }
}
`,
  );
  await build({
    entryPoints: [path.join(src, "index.ts")],
    bundle: true,
    platform: "node",
    format: "cjs",
    outfile: path.join(code, "index.js"),
    logLevel: "silent",
  });
  return (await buildCodeDisk(code, path.join(dir, "code.img"), { format: "squashfs" })).file;
}

describe("Linux guest image booted under QEMU/TCG (microvm)", function () {
  this.timeout(BOOT_TIMEOUT_MS + 60_000);
  let dir: string | undefined;
  let image: LinuxGuestImage;
  let qemu: ChildProcess | undefined;
  let exited: Promise<void> | undefined;
  let client: GuestClient | undefined;
  let bootedInMs = 0;
  const consoleOut: string[] = [];
  const consoleTail = () => consoleOut.join("").split("\n").slice(-25).join("\n");

  before(async function () {
    this.timeout(BOOT_TIMEOUT_MS + 240_000);
    if (!findOnPath("qemu-system-x86_64")) {
      console.log("      skipped: qemu-system-x86_64 is not installed (apt-get install -y qemu-system-x86)");
      this.skip();
    }
    // The kernel must be cached (minutes to build); the rootfs follows the runtime's source (seconds).
    image = await linuxImageOrSkip(this, { build: "rootfs" });
    dir = await mkdtemp(path.join(tmpdir(), "faas-linux-vm-"));
    const codeDisk = await buildProbeCodeDisk(dir);
    const port = await freePort();
    const tscKhz = hostTscKhz();
    assert.ok(
      tscKhz !== undefined,
      "cannot tell the host's TSC rate: neither dmesg nor /proc/cpuinfo says it",
    );
    const args = [
      "-accel",
      "tcg",
      "-M",
      "microvm",
      "-m",
      "256",
      "-smp",
      "1",
      "-display",
      "none",
      "-no-reboot",
      "-kernel",
      image.kernel,
      // TCG only: microvm has no HPET or PM timer to calibrate the TSC against when the PIT check fails.
      "-append",
      `${image.bootArgs} tsc_early_khz=${tscKhz} tsc=reliable`,
      "-drive",
      `id=root,file=${image.rootfs},format=raw,if=none,readonly=on`,
      "-device",
      "virtio-blk-device,drive=root",
      "-drive",
      `id=code,file=${codeDisk},format=raw,if=none,readonly=on`,
      "-device",
      "virtio-blk-device,drive=code",
      "-netdev",
      `user,id=n0,net=172.16.0.0/24,host=172.16.0.1,hostfwd=tcp:127.0.0.1:${port}-${GUEST.ip}:${GUEST.port}`,
      "-device",
      "virtio-net-device,netdev=n0,mac=06:00:ac:10:00:02",
      "-object",
      "rng-random,id=rng0,filename=/dev/urandom",
      "-device",
      "virtio-rng-device,rng=rng0",
      "-serial",
      "stdio",
      "-monitor",
      "none",
    ];
    const started = Date.now();
    const vm = spawn("qemu-system-x86_64", args, { stdio: ["ignore", "pipe", "pipe"] });
    qemu = vm;
    vm.stdout!.on("data", (b: Buffer) => consoleOut.push(b.toString()));
    vm.stderr!.on("data", (b: Buffer) => consoleOut.push(b.toString()));
    exited = new Promise((r) => vm.once("exit", () => r()));
    let gone = false;
    void exited.then(() => {
      gone = true;
    });
    // init.sh starts the runtime with --require-control-secret: the first init sets the secret.
    const guest = new GuestClient({
      kind: "tcp",
      host: "127.0.0.1",
      port,
      controlSecret: randomBytes(24).toString("hex"),
    });
    client = guest;
    const deadline = started + BOOT_TIMEOUT_MS;
    for (;;) {
      if (gone)
        assert.fail(`QEMU exited (code ${vm.exitCode}) before the runtime answered:\n${consoleTail()}`);
      if (Date.now() > deadline)
        assert.fail(`no /_faas/health answer within ${BOOT_TIMEOUT_MS} ms; console:\n${consoleTail()}`);
      try {
        await guest.health(AbortSignal.timeout(5_000));
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    bootedInMs = Date.now() - started;
  });

  after(async () => {
    await client?.close();
    if (qemu?.pid !== undefined && qemu.exitCode === null && qemu.signalCode === null) {
      process.kill(qemu.pid, "SIGKILL");
      await exited;
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("boots the recipe's kernel and rootfs; the runtime answers /_faas/health as the image's build", async () => {
    console.log(`      (first /_faas/health answer ${(bootedInMs / 1000).toFixed(1)} s after QEMU started)`);
    const health = await client!.health(AbortSignal.timeout(30_000));
    assert.equal(health.status, "ok");
    assert.equal(health.runtimeBuild, image.runtimeBuild);
    assert.equal(typeof health.baseVersion, "string");
    assert.equal(health.functionName, null);
    // PID 1 is the runtime: init.sh execs node.
    assert.equal(health.pid, 1);
  });

  it("runs hello-world from a squashfs code disk on /dev/vdb: init, load, call", async () => {
    const g = client!;
    await g.init(
      { instanceId: "tcg-1", unixTimeMs: Date.now(), entropy: randomBytes(32).toString("base64") },
      AbortSignal.timeout(30_000),
    );
    const loaded = await g.load(
      { functionName: "hello-world", entry: "index.js" },
      AbortSignal.timeout(60_000),
    );
    assert.deepEqual([...loaded.classes].sort(), ["GuestProbe", "HelloWorldService"]);
    const call = async (method: string) => {
      const answer = await g.forward({
        method: "POST",
        path: "/hello-world",
        headers: { "content-type": "application/json", "x-faas-request-id": `rid-${method}` },
        body: Buffer.from(JSON.stringify({ jsonrpc: "2.0", method, params: [], id: 1 })),
        signal: AbortSignal.timeout(60_000),
        maxResponseBytes: 1 << 20,
      });
      assert.equal(answer.status, 200, answer.body.toString());
      return (JSON.parse(answer.body.toString()) as { result: string }).result;
    };
    assert.equal(await call("HelloWorldService.helloWorld"), "Hello world!");
    // The recipe's kernel, not some other one: the Debian source's version and the fixed build metadata.
    const kernel = await call("GuestProbe.kernel");
    const release = LINUX_KERNEL_PIN.version.split("-")[0]!;
    assert.match(
      kernel,
      new RegExp(`^Linux version ${release.replaceAll(".", "\\.")} \\(snapfaas@builder\\)`),
    );
    assert.match(kernel, /#1 .*1970/);
    const mounts = await call("GuestProbe.mounts");
    assert.match(mounts, /^\/dev\/root \/ squashfs ro/m);
    assert.match(mounts, /^\/dev\/vdb \/code squashfs ro/m);
  });
});
