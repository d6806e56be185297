/**
 * The Firecracker release every part agrees on: the version the bake pins (a snapshot restores only on
 * the Firecracker that wrote it), the one the stack's hosts install, and where a release's files are.
 * Source: ../shared/research/firecracker.md (section 7).
 */
export const FIRECRACKER_PIN = {
  version: "1.16.1",
  arch: "x86_64",
  /**
   * sha256 of firecracker-v1.16.1-x86_64.tgz. Not known on this machine (no internet): the bake
   * verifies the tgz against the release's published .sha256.txt and prints the hash; paste it here
   * so later bakes check against the pinned value as well as the published one.
   */
  tgzSha256: undefined as string | undefined,
} as const;

/** The GitHub releases a release is fetched from (guest-images/bake/fetch-firecracker.sh says the same). */
export const FIRECRACKER_RELEASES = "https://github.com/firecracker-microvm/firecracker/releases/download";

/**
 * A release's tarball, its published checksum file, and the folder the tarball unpacks to (which holds
 * `firecracker-v<version>-<arch>`, `jailer-v<version>-<arch>` and SHA256SUMS).
 */
export function firecrackerReleaseUrls(
  version: string,
  arch: string = FIRECRACKER_PIN.arch,
): { tarball: string; checksum: string; dir: string } {
  const tarball = `${FIRECRACKER_RELEASES}/v${version}/firecracker-v${version}-${arch}.tgz`;
  return { tarball, checksum: `${tarball}.sha256.txt`, dir: `release-v${version}-${arch}` };
}
