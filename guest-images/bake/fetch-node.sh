#!/usr/bin/env bash
# Fetches an official Node.js release tarball, checks it against the release's SHASUMS256.txt and
# unpacks it. The guest images take node from here (OSv's node-from-host reads it from PATH).
# Usage: fetch-node.sh VERSION ARCH DEST_DIR      (ARCH as in the file name, e.g. linux-x64)
# SNAPFAAS_NODE_DIST replaces https://nodejs.org/dist (a mirror, or file:// in a rehearsal).
set -euo pipefail

if [ "$#" -ne 3 ]; then
  echo "usage: $0 VERSION ARCH DEST_DIR" >&2
  exit 2
fi
version="$1"
arch="$2"
dest="$3"

name="node-v${version}-${arch}.tar.xz"
base="${SNAPFAAS_NODE_DIST:-https://nodejs.org/dist}/v${version}"

mkdir -p "$dest"
cd "$dest"
curl --fail --silent --show-error --location --output "$name" "${base}/${name}"
curl --fail --silent --show-error --location --output SHASUMS256.txt "${base}/SHASUMS256.txt"
grep -F "  ${name}" SHASUMS256.txt | sha256sum --check --strict
tar -xJf "$name"
"./node-v${version}-${arch}/bin/node" --version
