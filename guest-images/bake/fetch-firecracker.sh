#!/usr/bin/env bash
# Fetches a Firecracker release tgz, checks it against the release's published .sha256.txt (and the
# pinned hash when one is given), unpacks it and checks every file against the SHA256SUMS inside.
# Usage: fetch-firecracker.sh VERSION ARCH DEST_DIR [PINNED_TGZ_SHA256]
# SNAPFAAS_FIRECRACKER_RELEASES replaces the GitHub releases URL (a mirror, or file:// in a rehearsal);
# the default and the file names are the ones contracts/firecracker-release.ts gives the hosts.
set -euo pipefail

if [ "$#" -lt 3 ]; then
  echo "usage: $0 VERSION ARCH DEST_DIR [PINNED_TGZ_SHA256]" >&2
  exit 2
fi
version="$1"
arch="$2"
dest="$3"
pinned="${4:-}"

name="firecracker-v${version}-${arch}.tgz"
releases="${SNAPFAAS_FIRECRACKER_RELEASES:-https://github.com/firecracker-microvm/firecracker/releases/download}"
url="${releases}/v${version}/${name}"

mkdir -p "$dest"
cd "$dest"
curl --fail --silent --show-error --location --output "$name" "$url"
curl --fail --silent --show-error --location --output "${name}.sha256.txt" "${url}.sha256.txt"
sha256sum --check --strict "${name}.sha256.txt"

actual="$(sha256sum "$name" | cut -d ' ' -f 1)"
if [ -n "$pinned" ] && [ "$actual" != "$pinned" ]; then
  echo "firecracker ${version} ${arch}: tgz sha256 ${actual} differs from the pinned ${pinned}" >&2
  exit 1
fi
echo "firecracker ${version} ${arch}: tgz sha256 ${actual} (pin it as FIRECRACKER_PIN.tgzSha256)"

tar -xzf "$name"
# --ignore-missing, as on the hosts: the release tool leaves some listed files (notes, signatures)
# out of the tgz, and every file that is in it is still checked.
(cd "release-v${version}-${arch}" && sha256sum --check --strict --quiet --ignore-missing SHA256SUMS)
"./release-v${version}-${arch}/firecracker-v${version}-${arch}" --version
