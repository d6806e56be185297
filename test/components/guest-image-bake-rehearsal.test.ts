/**
 * Rehearsal of the bake seam: the dev stack is built under mocks, and the remote command it would send
 * to the builder runs here for real, as root, in a folder that holds exactly the tarball it uploads.
 * Only what cannot run here is stood in for: downloads come from local mirrors (file:// URLs, a node
 * that forwards to this machine's node, a Firecracker release of fake binaries with a matching
 * SHA256SUMS), `npm ci` is replaced by this checkout's node_modules, the steps that need KVM or the
 * internet are skipped by the bake's --rehearse, and S3 is s3rver. The bake must find every file it
 * needs in the tarball, make the version the stack computed, and upload what the hosts download.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GetObjectCommand, ListObjectsV2Command } from "@aws-sdk/client-s3";
import { execa } from "execa";
import { parse as parseYaml } from "yaml";
import { BUILDER_NODE } from "../../components/bake-script.ts";
import { readStackFileConfig } from "../../components/config.ts";
import { buildStack } from "../../components/stack-program.ts";
import { MANIFEST_FILE } from "../../contracts/base-manifest.ts";
import { FIRECRACKER_PIN } from "../../contracts/firecracker-release.ts";
import { baseImagePrefix } from "../../contracts/release-manifest.ts";
import { bakeImportGraph } from "../../guest-images/bake/sources.ts";
import { verifyBaseImage } from "../../guest-images/bake/verify.ts";
import { snapfaasCacheDir } from "../../guest-images/node/cache-dir.ts";
import { startS3Server, type TestS3 } from "../helpers/s3-server.ts";
import { findRegistered, promiseOf, settled, unwrapSecret, usePulumiMocks } from "../support/pulumi-mocks.ts";

const REPO = join(import.meta.dirname, "..", "..");
const STACK_FILE = join(REPO, "stacks", "Pulumi.dev.yaml");
const SECRETS = {
  "snapfaas:bakeSshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----",
};

function missingTool(): string | undefined {
  if (process.getuid?.() !== 0) return "not root (the bake script runs as root)";
  for (const tool of ["aws", "curl", "xz", "mksquashfs", "ldd", "tar"]) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0) return `${tool} is not installed`;
  }
  if (spawnSync("sh", ["-c", "ldd /bin/busybox"]).status === 0) return "no static busybox (busybox-static)";
  return undefined;
}

function sha256(bytes: Buffer | string): string {
  return createHash("sha256").update(bytes).digest("hex");
}

function executable(file: string, text: string): void {
  mkdirSync(join(file, ".."), { recursive: true });
  writeFileSync(file, text);
  chmodSync(file, 0o755);
}

/** A nodejs.org-shaped mirror of one release: node-v<V>-<arch>.tar.xz and SHASUMS256.txt. */
function nodeMirror(root: string, version: string, fill: (binDir: string) => void): string {
  const name = `node-v${version}-linux-x64`;
  const stage = join(root, "stage");
  fill(join(stage, name, "bin"));
  const dist = join(root, `v${version}`);
  mkdirSync(dist, { recursive: true });
  execFileSync("tar", ["-cJf", join(dist, `${name}.tar.xz`), "-C", stage, name]);
  const tarball = readFileSync(join(dist, `${name}.tar.xz`));
  writeFileSync(
    join(dist, "SHASUMS256.txt"),
    `${sha256("other")}  node-v${version}.pkg\n${sha256(tarball)}  ${name}.tar.xz\n`,
  );
  return `file://${root}`;
}

/** A GitHub-release-shaped Firecracker mirror: the tgz of fake binaries, its .sha256.txt, SHA256SUMS inside. */
function firecrackerMirror(root: string): string {
  const { version, arch } = FIRECRACKER_PIN;
  const release = `release-v${version}-${arch}`;
  const dir = join(root, "stage", release);
  for (const bin of ["firecracker", "jailer"]) {
    executable(
      join(dir, `${bin}-v${version}-${arch}`),
      `#!/bin/sh\necho "${bin === "firecracker" ? "Firecracker" : "Jailer"} v${version}"\n`,
    );
  }
  const sums = ["firecracker", "jailer"].map((bin) => {
    const file = `${bin}-v${version}-${arch}`;
    return `${sha256(readFileSync(join(dir, file)))}  ${file}`;
  });
  // Listed but left out of the tgz, as the release tool does with notes and signatures.
  sums.push(`${sha256("notes")}  RELEASE_NOTES`);
  writeFileSync(join(dir, "SHA256SUMS"), `${sums.join("\n")}\n`);
  const dist = join(root, `v${version}`);
  mkdirSync(dist, { recursive: true });
  const tgz = `firecracker-v${version}-${arch}.tgz`;
  execFileSync("tar", ["-czf", join(dist, tgz), "-C", join(root, "stage"), release]);
  writeFileSync(join(dist, `${tgz}.sha256.txt`), `${sha256(readFileSync(join(dist, tgz)))}  ${tgz}\n`);
  return `file://${root}`;
}

describe("bake rehearsal: the stack's remote bake command, run here against local mirrors and s3rver", function () {
  // About a minute on an idle 2-core machine (it builds the process base); several on a loaded one.
  this.timeout(360_000);
  usePulumiMocks();

  const missing = missingTool();
  let scratch: string;
  let store: TestS3 | undefined;

  before(function () {
    if (missing) {
      console.log(`    (skipped: ${missing})`);
      this.skip();
    }
    scratch = mkdtempSync(join(tmpdir(), "snapfaas-rehearsal-"));
  });

  after(async () => {
    await store?.close();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it("bakes from exactly the uploaded tarball, makes the stack's version, uploads what hosts fetch, and retries", async () => {
    // The stack, as `pulumi up` would build it for the dev stack file.
    const { values } = readStackFileConfig(parseYaml(readFileSync(STACK_FILE, "utf8")));
    // buildStack is what index.ts runs with the engine's config; imported statically, so the program
    // registers through the same Pulumi module instance the mocks were installed on.
    // The operator's own address, as the stack file's comment says (its TEST-NET placeholder is refused).
    const bake = { ...JSON.parse(values["snapfaas:bake"] ?? "{}"), sshIngressCidr: "100.64.12.4/32" };
    const outputs = await buildStack(
      { ...values, ...SECRETS, "snapfaas:bake": JSON.stringify(bake) },
      { repoRoot: REPO },
    );
    const version = await promiseOf(outputs.baseImageVersion!);
    const bucket = await promiseOf(outputs.bucketName!);
    await settled();
    const create = findRegistered("command:remote:Command", "snapfaas-bake-bake").inputs.create as string;
    const copy = findRegistered("command:remote:CopyToRemote", "snapfaas-bake-upload-sources").inputs;
    const tarball = (await copy.source.path) as string;
    const launchTemplate = findRegistered(
      "aws:ec2/launchTemplate:LaunchTemplate",
      "snapfaas-fleet-launch-template",
    ).inputs;
    const hostBoot = Buffer.from(unwrapSecret(launchTemplate.userData) as string, "base64").toString("utf8");

    // Every file the bake's programs import is in the tarball (S1-2).
    const listed = new Set(execFileSync("tar", ["-tzf", tarball], { encoding: "utf8" }).trim().split("\n"));
    for (const file of await bakeImportGraph(REPO))
      assert.ok(listed.has(file), `${file} is not in the tarball`);

    // The builder's home: exactly the tarball, where CopyToRemote puts it.
    const home = join(scratch, "home");
    mkdirSync(home);
    copyFileSync(tarball, join(home, "snapfaas-bake-sources.tgz"));

    const bin = join(scratch, "bin");
    // We are root already: sudo is only "run it".
    executable(join(bin, "sudo"), '#!/bin/sh\nexec "$@"\n');
    const npmCli = realpathSync(execFileSync("sh", ["-c", "command -v npm"], { encoding: "utf8" }).trim());
    const builderNode = nodeMirror(join(scratch, "builder-node"), BUILDER_NODE.version, (dir) => {
      executable(join(dir, "node"), `#!/bin/sh\nexec ${process.execPath} "$@"\n`);
      executable(join(dir, "npm"), `#!/bin/sh\nexec ${process.execPath} ${npmCli} "$@"\n`);
    });
    // The guest's pinned Node comes from the cache the suite's global setup filled (checked against the
    // pinned sha512 there and again by the recipe's fetch step), so the rehearsal downloads nothing.
    const nodeCache = snapfaasCacheDir();
    const firecracker = firecrackerMirror(join(scratch, "firecracker"));

    store = await startS3Server(bucket);
    const { endpoint, client: s3 } = store;

    const cache = join(scratch, "cache");
    const env = (s3Endpoint: string): NodeJS.ProcessEnv => ({
      PATH: `${bin}:${process.env.PATH}`,
      HOME: home,
      AWS_ACCESS_KEY_ID: "S3RVER",
      AWS_SECRET_ACCESS_KEY: "S3RVER",
      AWS_EC2_METADATA_DISABLED: "true",
      SNAPFAAS_BAKE_REHEARSAL: "1",
      SNAPFAAS_BAKE_CACHE: cache,
      SNAPFAAS_BAKE_SOURCES: join(home, "snapfaas-bake-sources.tgz"),
      SNAPFAAS_BAKE_NODE_MODULES: realpathSync(join(REPO, "node_modules")),
      SNAPFAAS_BUILDER_NODE_DIST: builderNode,
      SNAPFAAS_CACHE_DIR: nodeCache,
      SNAPFAAS_FIRECRACKER_RELEASES: firecracker,
      SNAPFAAS_S3_ENDPOINT: s3Endpoint,
    });
    // Asynchronous: s3rver answers from this very process, so a blocking spawn would starve it.
    const run = (s3Endpoint: string) =>
      execa("bash", ["-c", create], {
        cwd: home,
        env: env(s3Endpoint),
        extendEnv: false,
        reject: false,
        timeout: 90_000,
        stdin: "ignore",
      });

    // First run: the store is down, so the upload fails after the bake; a short summary says so.
    const failed = await run("http://127.0.0.1:9");
    assert.notEqual(failed.exitCode, 0, "an unreachable store fails the bake command");
    const logFile = join(cache, `bake-${version}.log`);
    assert.match(
      failed.stdout,
      /bake: FAILED: .*full log: .*bake-[0-9a-f]{64}\.log on the builder/,
      `--- log tail ---\n${readFileSync(logFile, "utf8").slice(-3000)}`,
    );

    // Retry: reuses the finished base (persistent cache) and uploads it.
    const ok = await run(endpoint);
    const log = readFileSync(logFile, "utf8");
    assert.equal(ok.exitCode, 0, `bake command failed:\n${ok.stdout}\n--- log tail ---\n${log.slice(-3000)}`);
    assert.ok(
      log.includes(`base ${version}: already baked and intact, nothing rebuilt`),
      "the retry reused the base",
    );
    assert.ok(
      log.includes("bake: fetch-firecracker") && log.includes("sha256 "),
      "the Firecracker fetch ran",
    );
    assert.ok(log.includes("bake: linux-build-rootfs\n"), "the rootfs was built, not skipped");
    assert.ok(log.includes("bake: bake-snapshot skipped (needs KVM)"));
    assert.ok(
      ok.stdout.includes(`bake: uploaded base ${version} to s3://${bucket}/${baseImagePrefix(version)}`),
    );
    assert.ok(ok.stdout.includes("rehearsal: the builder would stop now"));
    // The Command's output lands in the Pulumi state: a summary, not the build log.
    assert.ok(ok.stdout.split("\n").length < 10 && ok.stdout.length < 2_000, ok.stdout);

    // What the hosts fetch: the boot script's prefix is the bake's, and the store has every artifact.
    assert.ok(
      hostBoot.includes(`base_prefix="${baseImagePrefix("$base_version")}"`),
      "hosts fetch images/<version>/",
    );
    const listing = await s3.send(
      new ListObjectsV2Command({ Bucket: bucket, Prefix: baseImagePrefix(version) }),
    );
    const keys = (listing.Contents ?? []).map((o) => o.Key!).sort();
    const host = join(scratch, "host-base");
    for (const key of keys) {
      const body = await (
        await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }))
      ).Body!.transformToByteArray();
      const file = join(host, key.slice(baseImagePrefix(version).length));
      mkdirSync(join(file, ".."), { recursive: true });
      writeFileSync(file, body);
    }
    const base = await verifyBaseImage(host, {
      expectedVersion: version,
      hostFirecrackerVersion: FIRECRACKER_PIN.version,
    });
    assert.deepEqual(
      keys,
      [...base.manifest.artifacts.map((a) => a.name), MANIFEST_FILE]
        .map((n) => `${baseImagePrefix(version)}${n}`)
        .sort(),
    );
    assert.deepEqual(
      base.manifest.machine,
      { vcpus: 1, memMiB: 256 },
      "the dev stack's vm shape is baked in",
    );
    assert.equal(base.manifest.guest, "linux");
    assert.ok(!keys.some((k) => k.includes(".work") || k.includes("partial")), "no work files are uploaded");

    // Same version again: the command sees the manifest and bakes nothing.
    const again = await run(endpoint);
    assert.equal(again.exitCode, 0);
    assert.match(again.stdout, new RegExp(`base ${version} is already uploaded, nothing to bake`));
  });
});
