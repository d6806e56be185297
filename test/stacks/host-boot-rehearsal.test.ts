/**
 * Rehearses a fleet host's boot for every shipped AWS stack: the boot script the stack renders runs
 * here as root, then the agent it starts runs here with the env and config files the script wrote,
 * and must pass its own preflight and serve /healthz.
 *
 * Real: the stack files through the stack config parser, the renderer, bash running the script (tar,
 * sha256sum, jq, install, awk), the agent bundle made exactly as HostAgentRelease makes it, the
 * agent's preflight (the doctor) on this machine's /dev/kvm, /dev/net/tun, kernel and disk, and the
 * base image check.
 * Stand-ins (test/helpers/boot-stand-ins.ts): systemctl, dnf, modprobe, sysctl, useradd, ip, nft, the
 * aws CLI and curl, which serve a local S3/SSM/download folder; Firecracker and the jailer (shell
 * scripts printing `Firecracker v1.16.1` / `Jailer v1.16.1`, shipped in a tarball with a matching
 * SHA256SUMS); AWS's APIs for the agent (a local S3 answering "no functions" and a fake IMDS);
 * Node 24 (this machine's node runs the bundle).
 * Staged: the script and the agent run in a private mount namespace where /sys/fs/cgroup is a cgroup2
 * mount listing the controllers an AL2023 host has, because this machine may use cgroup v1.
 * The script writes only under $SNAPFAAS_ROOT (a scratch folder here, empty on a host).
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, statfsSync } from "node:fs";
import { appendFile, chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bundleNodeEntry, bundleObjectKey } from "../../components/bundle.ts";
import { HOST_NODE } from "../../components/host-node.ts";
import { fleetHostUserDataInput } from "../../components/kvm-host-fleet.ts";
import { buildReleaseManifest } from "../../components/release-manifest.ts";
import { AGENT_UNIT, HOST_PATHS, renderHostUserData } from "../../components/user-data.ts";
import { CODE_DISK_SIZE_BYTES } from "../../contracts/code-disk.ts";
import { firecrackerReleaseUrls } from "../../contracts/firecracker-release.ts";
import { bakeBaseImage } from "../../guest-images/bake/pipeline.ts";
import { buildCodeDisk } from "../../guest-images/code-disk/build.ts";
import { sha256Text } from "../../guest-images/hash.ts";
import { shippedAwsStacks } from "../helpers/aws-stacks.ts";
import {
  STAND_IN_UPLINK,
  type StandInWorld,
  ssmParameterFile,
  standInEnv,
  writeStandIns,
} from "../helpers/boot-stand-ins.ts";
import { freePorts } from "../helpers/child-agent.ts";
import { FakeImds } from "../helpers/fake-imds.ts";
import { isRoot } from "../helpers/host.ts";

const REPO = join(import.meta.dirname, "..", "..");
const _STACKS_DIR = join(REPO, "stacks");
/** The controllers the doctor requires, as an AL2023 host lists them. */
const AL2023_CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma misc\n";

const stacks = shippedAwsStacks();

/** What keeps this rehearsal from running here, or undefined. */
function missing(): string | undefined {
  if (!isRoot) return "needs root (the boot script and the agent's preflight run as root)";
  if (spawnSync("unshare", ["--version"]).status !== 0) return "needs unshare (util-linux)";
  // The bake of the base's code placeholder runs mksquashfs; the boot script reads its manifest with jq.
  for (const [tool, pkg] of [
    ["mksquashfs", "squashfs-tools"],
    ["jq", "jq"],
  ] as const) {
    if (spawnSync(tool, ["--help"]).error) return `needs ${tool} (apt-get install -y ${pkg})`;
  }
  for (const dev of ["/dev/kvm", "/dev/net/tun"]) {
    if (spawnSync("test", ["-c", dev]).status !== 0) return `needs ${dev} (the preflight opens it)`;
  }
  const free = statfsSync(tmpdir());
  if (free.bavail * free.bsize < 21 * 1024 ** 3)
    return "needs 21 GiB free in the temp dir (the preflight's disk check)";
  return undefined;
}

/** argv that runs `cmd` in a private mount namespace with an AL2023-like cgroup2 at /sys/fs/cgroup. */
function inHostView(controllersFile: string, cmd: string[]): string[] {
  const setup = [
    "set -e",
    "umount -l /sys/fs/cgroup 2>/dev/null || true",
    "mount -t cgroup2 none /sys/fs/cgroup",
    'mount --bind "$1" /sys/fs/cgroup/cgroup.controllers',
    "shift",
    'exec "$@"',
  ].join("\n");
  return [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "--",
    "bash",
    "-c",
    setup,
    "host-view",
    controllersFile,
    ...cmd,
  ];
}

/** A local S3 that holds no functions, and accepts metric data: all the agent asks of AWS at start. */
async function startFakeAws(): Promise<{ url: string; requests: string[]; close(): Promise<void> }> {
  const requests: string[] = [];
  const server: Server = createServer((req, res) => {
    req.resume();
    requests.push(`${req.method} ${req.url}`);
    if (req.method === "GET") {
      res.writeHead(200, { "content-type": "application/xml" });
      res.end(
        '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>',
      );
      return;
    }
    res.writeHead(200, { "content-type": "application/x-amz-json-1.0" });
    res.end("{}");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** The Firecracker release as GitHub ships it: tarball, its .sha256.txt, SHA256SUMS inside. */
async function publishFirecrackerRelease(
  world: StandInWorld,
  version: string,
  scratch: string,
  options: { tamperAfterSums?: "firecracker" } = {},
) {
  const urls = firecrackerReleaseUrls(version);
  const dir = join(scratch, "release", urls.dir);
  await mkdir(dir, { recursive: true });
  const binaries = {
    firecracker: `firecracker-v${version}-x86_64`,
    jailer: `jailer-v${version}-x86_64`,
  };
  await writeFile(join(dir, binaries.firecracker), `#!/bin/sh\necho "Firecracker v${version}"\n`, {
    mode: 0o755,
  });
  await writeFile(join(dir, binaries.jailer), `#!/bin/sh\necho "Jailer v${version}"\n`, { mode: 0o755 });
  const sums = spawnSync("sha256sum", [binaries.firecracker, binaries.jailer], {
    cwd: dir,
    encoding: "utf8",
  });
  assert.equal(sums.status, 0, sums.stderr);
  await writeFile(join(dir, "SHA256SUMS"), sums.stdout);
  // A release whose binary changed after its SHA256SUMS was written (the tarball's own hash still matches).
  if (options.tamperAfterSums) await appendFile(join(dir, binaries[options.tamperAfterSums]), "# changed\n");
  const tarball = join(world.world, "downloads", urls.tarball.split("/").at(-1)!);
  const tar = spawnSync("tar", ["-czf", tarball, "-C", join(scratch, "release"), urls.dir]);
  assert.equal(tar.status, 0, String(tar.stderr));
  const tarSha = createHash("sha256")
    .update(await readFile(tarball))
    .digest("hex");
  await writeFile(
    join(world.world, "downloads", urls.checksum.split("/").at(-1)!),
    `${tarSha}  ${urls.tarball.split("/").at(-1)}\n`,
  );
  const hashes = Object.fromEntries(
    sums.stdout
      .trim()
      .split("\n")
      .map((line) => line.split(/\s+/))
      .map(([sha, name]) => [name === binaries.firecracker ? "firecracker" : "jailer", sha]),
  );
  return { tarSha, hashes: hashes as { firecracker: string; jailer: string } };
}

interface AgentRun {
  readonly child: ChildProcess;
  readonly stdout: string[];
  readonly stderr: string[];
  readonly exited: Promise<number | null>;
}

function startAgent(argv: string[], env: Record<string, string>): AgentRun {
  const child = spawn(argv[0]!, argv.slice(1), { env, stdio: ["ignore", "pipe", "pipe"] });
  const stdout: string[] = [];
  const stderr: string[] = [];
  child.stdout!.setEncoding("utf8").on("data", (c: string) => stdout.push(c));
  child.stderr!.setEncoding("utf8").on("data", (c: string) => stderr.push(c));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { child, stdout, stderr, exited };
}

/** Resolves with the agent's "agent listening" log record, or rejects with what it printed when it exits first. */
async function listening(run: AgentRun, timeoutMs: number): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  let exitCode: number | null | undefined;
  void run.exited.then((code) => {
    exitCode = code;
  });
  while (Date.now() < deadline) {
    for (const line of run.stdout.join("").split("\n")) {
      if (!line.includes('"agent listening"')) continue;
      return JSON.parse(line) as Record<string, unknown>;
    }
    if (exitCode !== undefined) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(
    `the agent did not reach "agent listening" (exit ${exitCode}):\n${run.stderr.join("")}\n${run.stdout.join("").slice(-2000)}`,
  );
}

function envFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split("\n").filter(Boolean)) {
    const m = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(line);
    assert.ok(m, `EnvironmentFile line is KEY=value: ${line}`);
    env[m[1]!] = m[2]!;
  }
  return env;
}

type AwsStack = (typeof stacks)[number];

/**
 * What `pulumi up` would have put in S3 and SSM for this stack (a base image, the agent bundle, the
 * manifest) and on GitHub (the Firecracker release), and the boot script the stack renders.
 */
async function prepareHost(
  { stack, region, config }: AwsStack,
  scratch: string,
  agentBundle: { text: string; sha256: string },
  options: { tamperAfterSums?: "firecracker" } = {},
) {
  const root = join(scratch, "root");
  await mkdir(root);
  const world = await writeStandIns(scratch);
  const controllers = join(scratch, "cgroup.controllers");
  await writeFile(controllers, AL2023_CONTROLLERS);
  const bucket = `snapfaas-${stack}-artifacts`;
  const s3 = join(world.world, "s3", bucket);

  // What `pulumi up` would have put in S3 and SSM: a base image, the agent bundle, the manifest.
  const base = await bakeBaseImage(join(s3, "images"), {
    driver: "firecracker",
    guest: "linux",
    inputs: { rehearsal: sha256Text(`rehearsal ${stack}`) },
    kernelArgs: "console=ttyS0",
    firecrackerVersion: config.versions.firecracker,
    // The machine the release asks for: the agent refuses a base whose snapshot fixes another one.
    machine: { vcpus: config.vm.vcpus, memMiB: config.vm.memoryMiB },
    async build(dir) {
      for (const name of ["root.img", "vmstate", "memory", "kernel.elf"])
        await writeFile(join(dir, name), `${name} of the rehearsal base\n`);
      // The placeholder is what the agent sizes every code disk by, so it is built as the bake builds it.
      const empty = await mkdtemp(join(tmpdir(), "rehearsal-empty-code-"));
      await buildCodeDisk(empty, join(dir, "code-empty.img"), {
        format: "squashfs",
        sizeBytes: CODE_DISK_SIZE_BYTES,
      });
      await rm(empty, { recursive: true });
    },
  });
  const agentKey = bundleObjectKey("host-agent", agentBundle.sha256);
  await mkdir(join(s3, "releases", "host-agent"), { recursive: true });
  await writeFile(join(s3, agentKey), agentBundle.text);
  const manifest = buildReleaseManifest({
    agentVersion: config.versions.agent,
    baseImageVersion: base.manifest.version,
    firecrackerVersion: config.versions.firecracker,
    agent: { key: agentKey, sha256: agentBundle.sha256 },
    guestRuntime: { key: "releases/guest-runtime/unused.mjs", sha256: "0".repeat(64) },
    config: { pool: config.pool, vm: config.vm, limits: config.limits },
  });
  const parameterName = `/snapfaas/${stack}/snapfaas/release`;
  await writeFile(ssmParameterFile(world.world, `${parameterName}:3`), JSON.stringify(manifest));
  const release = await publishFirecrackerRelease(world, config.versions.firecracker, scratch, options);

  const script = renderHostUserData(
    fleetHostUserDataInput({
      region,
      firecrackerVersion: config.versions.firecracker,
      ...(config.versions.firecrackerTarballSha256 === undefined
        ? {}
        : { firecrackerTarballSha256: release.tarSha }),
      releaseParameterName: parameterName,
      releaseParameterVersion: 3,
      releaseVersion: manifest.releaseVersion,
      bucketName: bucket,
      registryPrefix: "functions/",
      maxVmsPerHost: config.pool.maxInstances,
      drainTimeoutSeconds: config.fleet.drainTimeoutSeconds,
      lifecycleHookName: `snapfaas-fleet-drain`,
      adminAccess: config.network.adminAccess,
      functionEgress: config.network.functionEgress,
    }),
  );
  const scriptFile = join(scratch, "user-data.sh");
  await writeFile(scriptFile, script);

  return { root, world, controllers, scriptFile, parameterName, release, base, manifest, bucket };
}

/** The boot script, as cloud-init runs it (root, no arguments), but into the scratch root. */
function runBoot(host: Awaited<ReturnType<typeof prepareHost>>, scratch: string) {
  const argv = inHostView(host.controllers, ["bash", host.scriptFile]);
  return spawnSync(argv[0]!, argv.slice(1), {
    env: { ...standInEnv(host.world), SNAPFAAS_ROOT: host.root, TMPDIR: scratch, HOME: scratch },
    encoding: "utf8",
    timeout: 60_000,
  });
}

describe("host boot rehearsal: each AWS stack's boot script, then its agent, on this machine", function () {
  this.timeout(120_000);
  let agentBundle: Awaited<ReturnType<typeof bundleNodeEntry>>;

  before(async function () {
    const why = missing();
    if (why) {
      console.log(`      skipped: ${why}`);
      this.skip();
    }
    // Exactly what HostAgentRelease uploads.
    agentBundle = await bundleNodeEntry(join(REPO, "host-agent", "main.ts"));
  });

  it("covers the AWS stacks", () => {
    assert.ok(stacks.length >= 2, `AWS stacks: ${stacks.map((s) => s.file).join(", ")}`);
  });

  for (const { file, stack, region, config } of stacks) {
    it(`${file}: the script installs and starts the agent, which passes preflight and serves /healthz; a tampered jailer fails preflight`, async () => {
      const scratch = await mkdtemp(join(tmpdir(), `snapfaas-boot-${stack}-`));
      const running: AgentRun[] = [];
      const imds = await new FakeImds().start();
      const fakeAws = await startFakeAws();
      try {
        const host = await prepareHost({ file, stack, region, config }, scratch, agentBundle);
        const { root, world, parameterName, release, base, controllers, bucket } = host;
        const etcBefore = existsSync(HOST_PATHS.agentEnv);
        // 1. The boot script, as cloud-init runs it, but into the scratch root.
        const boot = runBoot(host, scratch);
        assert.equal(boot.status, 0, `boot script failed:\n${boot.stdout}\n${boot.stderr}`);
        const calls = await readFile(world.callsFile, "utf8");
        assert.match(calls, new RegExp(`^dnf install -y -q nftables jq ${HOST_NODE.dnfPackage}$`, "m"));
        assert.match(calls, new RegExp(`^aws ssm get-parameter --name ${parameterName}:3 `, "m"));
        assert.match(calls, new RegExp(`^systemctl enable --now ${AGENT_UNIT}$`, "m"));
        assert.match(await readFile(join(root, HOST_PATHS.log), "utf8"), /agent started for release/);
        assert.equal(existsSync(HOST_PATHS.agentEnv), etcBefore, "nothing written outside the scratch root");
        // Function egress, where the stack offers it, leaves by the default route the script found.
        const driverConfig = JSON.parse(await readFile(join(root, HOST_PATHS.firecrackerConfig), "utf8"));
        assert.deepEqual(
          driverConfig.network.egress,
          config.network.functionEgress
            ? { enabled: true, uplink: STAND_IN_UPLINK, dnsResolver: "169.254.169.253" }
            : { enabled: false },
        );

        // 2. What systemd would start: the unit's ExecStart with its EnvironmentFile.
        const unit = await readFile(join(root, HOST_PATHS.unit), "utf8");
        const execStart = /^ExecStart=(\S+) (\S+)$/m.exec(unit);
        const environmentFile = /^EnvironmentFile=(\S+)$/m.exec(unit)?.[1];
        assert.ok(execStart && environmentFile, unit);
        assert.equal(execStart[1], HOST_NODE.binary);
        assert.equal(execStart[2], join(root, HOST_PATHS.agentBundle));
        assert.equal(readFileSync(execStart[2]!, "utf8"), agentBundle.text, "the bundle the release names");
        const agentEnv = envFile(await readFile(environmentFile, "utf8"));
        const [dataPort, adminPort] = await freePorts(2);
        const env = {
          ...standInEnv(world),
          ...agentEnv,
          // Changed for this machine only: free ports instead of 8080/8081, and AWS's APIs local.
          PORT: String(dataPort),
          ADMIN_PORT: String(adminPort),
          FAAS_IMDS_URL: imds.url,
          AWS_ENDPOINT_URL: fakeAws.url,
          AWS_ACCESS_KEY_ID: "AKIDREHEARSAL",
          AWS_SECRET_ACCESS_KEY: "rehearsal-secret",
          AWS_EC2_METADATA_DISABLED: "true",
        };
        // Node 24 is what the host runs; this machine's node runs the same bundle.
        const agentArgv = inHostView(controllers, [process.execPath, execStart[2]!]);

        const first = startAgent(agentArgv, env);
        running.push(first);
        const ready = await listening(first, 30_000);
        assert.equal(ready.base, base.manifest.version, "the base image the script downloaded");
        // Past preflight the agent serves /healthz; it stays 503 because the stand-in Firecracker cannot
        // restore a VM, and a host is healthy only once one of its base has restored and initialised.
        const health = await fetch(`http://127.0.0.1:${dataPort}/healthz`);
        const body = (await health.json()) as { status: string; reason?: string };
        assert.equal(health.status, 503);
        assert.ok(["starting", "failing"].includes(body.status), JSON.stringify(body));
        assert.match(body.reason ?? "", new RegExp(`base ${base.manifest.version}`));
        assert.ok(
          fakeAws.requests.some((r) => r.startsWith(`GET /${bucket}`)),
          `the agent listed its S3 registry: ${fakeAws.requests.join(", ")}`,
        );
        assert.doesNotMatch(first.stderr.join(""), /faas: (firecracker|jailer):/);
        first.child.kill("SIGTERM");
        assert.equal(await first.exited, 0, first.stderr.join(""));

        // 3. A jailer that is not the one SHA256SUMS listed: the agent stops at preflight, one line.
        await appendFile(join(root, HOST_PATHS.jailer), "# tampered\n");
        await chmod(join(root, HOST_PATHS.jailer), 0o755);
        const second = startAgent(agentArgv, env);
        running.push(second);
        assert.equal(await second.exited, 3, second.stderr.join(""));
        const problems = second.stderr
          .join("")
          .split("\n")
          .filter((l) => l.startsWith("faas: "));
        assert.equal(problems.length, 1, problems.join("\n"));
        assert.match(
          problems[0]!,
          new RegExp(
            `^faas: jailer: sha256 [0-9a-f]{64} does not match the pinned ${release.hashes.jailer}\\. Fix: install release v${config.versions.firecracker} `,
          ),
        );
      } finally {
        for (const run of running) {
          if (run.child.exitCode === null && run.child.signalCode === null) {
            run.child.kill("SIGKILL");
            await run.exited;
          }
        }
        await fakeAws.close();
        await imds.close();
        await rm(scratch, { recursive: true, force: true });
      }
    });
  }

  it("a release whose firecracker binary does not match its SHA256SUMS stops the boot before anything is installed", async () => {
    const scratch = await mkdtemp(join(tmpdir(), "snapfaas-boot-tampered-"));
    try {
      const host = await prepareHost(stacks[0]!, scratch, agentBundle, { tamperAfterSums: "firecracker" });
      const boot = runBoot(host, scratch);
      assert.equal(boot.status, 1, boot.stdout);
      // The script sends stderr to its log and stdout (exec > >(tee ...) 2>&1).
      assert.match(boot.stdout, /snapfaas bootstrap: Firecracker binaries do not match SHA256SUMS/);
      assert.equal(existsSync(join(host.root, HOST_PATHS.firecracker)), false, "nothing installed");
      assert.doesNotMatch(await readFile(host.world.callsFile, "utf8"), /^(systemctl|aws) /m);
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  });
});
