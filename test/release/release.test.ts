/**
 * The release format, the base folder check, the agent's release records, the published-release poller
 * (with a fake fetch, as the SSM parameter's would be) and the CLI's reading of its argument.
 */
import assert from "node:assert/strict";
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import pino from "pino";
import { CliError } from "../../host-agent/cli/admin-client.ts";
import { releaseFromArg } from "../../host-agent/cli/release.ts";
import { checkProcessBase } from "../../host-agent/release/base-check.ts";
import { fileReleaseFetch, ReleasePoller } from "../../host-agent/release/poller.ts";
import { parseRelease, type Release, ReleaseError } from "../../host-agent/release/release.ts";
import { RolloutConflictError } from "../../host-agent/release/rollout.ts";
import { readReleaseRecords, writeReleaseRecords } from "../../host-agent/release/store.ts";
import { FakeClock } from "../helpers/fake-clock.ts";

const settle = async () => {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
};

/** A folder shaped like a baked process base (the files are stand-ins; nothing is started from it). */
async function fakeBase(dir: string, version: string, skip: string[] = []): Promise<string> {
  await mkdir(path.join(dir, "root", "runtime"), { recursive: true });
  await chmod(dir, 0o755);
  const files: Record<string, string> = {
    "base.json": JSON.stringify({ version, driver: "process", runtimeBuild: "abc-v2", nodeVersion: "v20" }),
    "root/node": "#!/bin/true\n",
    "root/runtime/runtime.js": "// runtime",
    "root/runtime/runtime.blob": "blob",
  };
  for (const [file, data] of Object.entries(files)) {
    if (!skip.includes(file)) await writeFile(path.join(dir, file), data, { mode: 0o755 });
  }
  return dir;
}

describe("release format", () => {
  it("fills the rollout defaults: all at once, 5% errors over 20 calls, 3 start failures", () => {
    const r = parseRelease({ baseVersion: "abc", baseDir: "/b" });
    assert.deepEqual(r.rollout, {
      canaryPercent: 100,
      errorRateThreshold: 0.05,
      minCalls: 20,
      startFailureThreshold: 3,
    });
    assert.equal(r.pool, undefined);
  });

  it("accepts partial pool overrides and resolves a relative baseDir against the release file's folder", () => {
    const r = parseRelease(
      { baseVersion: "abc", baseDir: "bases/abc", pool: { genericMin: 4 } },
      "/etc/faas",
    );
    assert.equal(r.baseDir, "/etc/faas/bases/abc");
    assert.deepEqual(r.pool, { genericMin: 4 });
  });

  const bad: Array<[string, unknown, RegExp]> = [
    ["not an object", [], /^\(release\): /],
    ["a missing baseDir", { baseVersion: "a" }, /^baseDir: is required \(a string\)$/],
    [
      "a baseVersion with a space",
      { baseVersion: "a b", baseDir: "/b" },
      /^baseVersion: must be 1-128 letters/,
    ],
    [
      "a negative canary",
      { baseVersion: "a", baseDir: "/b", rollout: { canaryPercent: -1 } },
      /^rollout\.canaryPercent: /,
    ],
    [
      "an error rate over 1",
      { baseVersion: "a", baseDir: "/b", rollout: { errorRateThreshold: 2 } },
      /^rollout\.errorRateThreshold: /,
    ],
    ["minCalls 0", { baseVersion: "a", baseDir: "/b", rollout: { minCalls: 0 } }, /^rollout\.minCalls: /],
    [
      "a pool key that does not exist",
      { baseVersion: "a", baseDir: "/b", pool: { size: 3 } },
      /^pool\.size: is not a release field$/,
    ],
    ["two problems", { baseVersion: 1, baseDir: 2 }, /^baseVersion: .*\(also wrong: baseDir\)$/],
  ];
  for (const [what, input, message] of bad) {
    it(`refuses ${what}, naming the field`, () => {
      assert.throws(
        () => parseRelease(input),
        (err: unknown) => err instanceof ReleaseError && message.test(err.message),
      );
    });
  }
});

describe("process base folder check", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "faas-base-check-"));
    await chmod(dir, 0o755);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("returns the base the folder holds", async () => {
    const baseDir = await fakeBase(path.join(dir, "good"), "v2abc");
    const base = await checkProcessBase(parseRelease({ baseVersion: "v2abc", baseDir }));
    assert.deepEqual(
      { version: base.version, dir: base.dir, rootDir: (base as { rootDir?: string }).rootDir },
      { version: "v2abc", dir: baseDir, rootDir: path.join(baseDir, "root") },
    );
  });

  const broken: Array<[string, string[], string, RegExp]> = [
    ["no base.json", ["base.json"], "v", /^ReleaseError: baseDir: .*base\.json is missing/],
    ["no node binary", ["root/node"], "v", /^ReleaseError: baseDir: .*root\/node is missing or empty/],
    [
      "no startup snapshot",
      ["root/runtime/runtime.blob"],
      "v",
      /^ReleaseError: baseDir: .*runtime\.blob is missing or empty/,
    ],
  ];
  for (const [what, skip, version, message] of broken) {
    it(`refuses a base with ${what}`, async () => {
      const baseDir = await fakeBase(path.join(dir, what.replace(/\W+/g, "-")), version, skip);
      await assert.rejects(checkProcessBase(parseRelease({ baseVersion: version, baseDir })), message);
    });
  }

  it("refuses a base.json that is not JSON, and a version that is not the folder's", async () => {
    const baseDir = await fakeBase(path.join(dir, "mislabelled"), "real");
    await assert.rejects(
      checkProcessBase(parseRelease({ baseVersion: "claimed", baseDir })),
      /^ReleaseError: baseVersion: is claimed but .* holds base real$/,
    );
    await writeFile(path.join(baseDir, "base.json"), "{");
    await assert.rejects(
      checkProcessBase(parseRelease({ baseVersion: "real", baseDir })),
      /base\.json is not valid JSON/,
    );
  });

  it("carries the base's native-addon ABI (what a roll checks deployed functions against), and refuses a broken one", async () => {
    const baseDir = await fakeBase(path.join(dir, "with-addons"), "abi");
    const infoFile = path.join(baseDir, "base.json");
    const info = JSON.parse(await readFile(infoFile, "utf8"));
    const abi = {
      nodeVersion: "24.22.3",
      nodeModuleVersion: 137,
      machine: 62,
      glibcVersion: "2.36",
      libraries: ["libz.so.1"],
    };
    await writeFile(infoFile, JSON.stringify({ ...info, nativeAddons: abi }));
    const base = await checkProcessBase(parseRelease({ baseVersion: "abi", baseDir }));
    assert.deepEqual(base.nativeAddons, abi);
    await writeFile(
      infoFile,
      JSON.stringify({ ...info, nativeAddons: { ...abi, nodeModuleVersion: "137" } }),
    );
    await assert.rejects(
      checkProcessBase(parseRelease({ baseVersion: "abi", baseDir })),
      /^ReleaseError: baseDir: .*base\.json: "nativeAddons" "nodeModuleVersion" must be an integer$/,
    );
  });
});

describe("release records", () => {
  it("survive in the state dir, current and previous", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "faas-records-"));
    try {
      assert.equal(await readReleaseRecords(dir), undefined);
      const current = parseRelease({ baseVersion: "v2", baseDir: "/b/v2", rollout: { canaryPercent: 10 } });
      const previous = parseRelease({ baseVersion: "v1", baseDir: "/b/v1" });
      await writeReleaseRecords(dir, { current, previous });
      assert.deepEqual(await readReleaseRecords(dir), { current, previous });
      await writeFile(path.join(dir, "release.json"), "{ torn");
      assert.equal(await readReleaseRecords(dir), undefined, "unreadable records are ignored, not fatal");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("published release poller", () => {
  function makePoller(values: unknown[], apply: (r: Release) => Promise<unknown>) {
    const clock = new FakeClock();
    let i = 0;
    const fetches: number[] = [];
    const poller = new ReleasePoller({
      fetch: async () => {
        fetches.push(clock.now());
        const v = values[Math.min(i++, values.length - 1)];
        if (v instanceof Error) throw v;
        return v;
      },
      apply,
      clock,
      log: pino({ level: "silent" }),
      intervalMs: 5000,
      relativeTo: "/srv/releases",
      retryLater: (err) => err instanceof RolloutConflictError,
    });
    return { poller, clock, fetches };
  }

  it("applies a published release once, again only when it changes, and keeps polling through fetch errors", async () => {
    const applied: string[] = [];
    const r1 = { baseVersion: "v1", baseDir: "v1" };
    const r2 = { baseVersion: "v2", baseDir: "/abs/v2" };
    const { poller, clock, fetches } = makePoller(
      [undefined, r1, r1, new Error("throttled"), r2, r2],
      async (r) => {
        applied.push(`${r.baseVersion}@${r.baseDir}`);
      },
    );
    poller.start();
    for (let i = 0; i < 6; i++) {
      clock.advance(i === 0 ? 0 : 5000);
      await settle();
    }
    assert.equal(fetches.length, 6, "one fetch per interval");
    assert.deepEqual(applied, ["v1@/srv/releases/v1", "v2@/abs/v2"]);
    await poller.stop();
    clock.advance(60_000);
    await settle();
    assert.equal(fetches.length, 6, "no fetch after stop");
  });

  it("does not retry a rejected release, but retries one that met a roll in flight", async () => {
    const attempts: string[] = [];
    const r1 = { baseVersion: "v1", baseDir: "/v1" };
    const r2 = { baseVersion: "v2", baseDir: "/v2" };
    let busy = true;
    const { poller } = makePoller([r1, r1, r2, r2, r2], async (r) => {
      attempts.push(r.baseVersion);
      if (r.baseVersion === "v1") throw new ReleaseError("baseDir", "not a base");
      if (busy) {
        busy = false;
        throw new RolloutConflictError("a roll is in progress");
      }
    });
    assert.equal(await poller.pollOnce(), "rejected");
    assert.equal(await poller.pollOnce(), "unchanged", "the same rejected value is not tried again");
    assert.equal(await poller.pollOnce(), "unchanged", "a conflict waits for the next poll");
    assert.equal(await poller.pollOnce(), "applied");
    assert.equal(await poller.pollOnce(), "unchanged");
    assert.deepEqual(attempts, ["v1", "v2", "v2"]);
  });

  it("reads a release file; no file means nothing published", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "faas-release-file-"));
    try {
      const file = path.join(dir, "release.json");
      assert.equal(await fileReleaseFetch(file)(), undefined);
      await writeFile(file, JSON.stringify({ baseVersion: "v3", baseDir: "b" }));
      assert.deepEqual(await fileReleaseFetch(file)(), { baseVersion: "v3", baseDir: "b" });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("faas release argument", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "faas-release-arg-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("makes a release from a baked base folder, with a canary share from --canary", async () => {
    const baseDir = await fakeBase(path.join(dir, "base"), "vfolder");
    const r = await releaseFromArg(baseDir, { canaryPercent: 25 });
    assert.equal(r.baseVersion, "vfolder");
    assert.equal(r.baseDir, baseDir);
    assert.equal(r.rollout.canaryPercent, 25);
  });

  it("reads a release file, its baseDir relative to the file", async () => {
    const file = path.join(dir, "release.json");
    await writeFile(file, JSON.stringify({ baseVersion: "vf", baseDir: "base", rollout: { minCalls: 7 } }));
    const r = await releaseFromArg(file);
    assert.equal(r.baseDir, path.join(dir, "base"));
    assert.equal(r.rollout.minCalls, 7);
  });

  it("says what is wrong with a bad argument", async () => {
    await assert.rejects(
      releaseFromArg(path.join(dir, "nope")),
      (e: unknown) => e instanceof CliError && /does not exist/.test(e.message),
    );
    await writeFile(
      path.join(dir, "bad.json"),
      JSON.stringify({ baseVersion: "v", baseDir: "/x", rollout: { canaryPercent: 101 } }),
    );
    await assert.rejects(
      releaseFromArg(path.join(dir, "bad.json")),
      /invalid release in .*bad\.json: rollout\.canaryPercent/,
    );
  });
});
