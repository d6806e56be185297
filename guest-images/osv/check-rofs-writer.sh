#!/usr/bin/env bash
# Checks on a builder host that our TypeScript ROFS writer (code disks) and OSv's own
# scripts/gen-rofs-img.py produce the same bytes for the same tree. gen-rofs-img.py may append one
# more zero block at the end; everything before that must be identical.
# Usage: check-rofs-writer.sh OSV_DIR REPO_DIR
set -euo pipefail

if [ "$#" -ne 2 ]; then
  echo "usage: $0 OSV_DIR REPO_DIR" >&2
  exit 2
fi
osv_dir="$(realpath "$1")"
repo_dir="$(realpath "$2")"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
src="${work}/src"

# A sample function: nested and empty directories, an empty file, a file of several blocks, a symlink.
mkdir -p "${src}/lib/deep" "${src}/empty-dir" "${src}/node_modules/pkg"
printf '{"name":"sample","main":"index.js"}\n' >"${src}/package.json"
printf 'module.exports.handler = async () => "ok";\n' >"${src}/index.js"
printf 'exports.x = 1;\n' >"${src}/lib/util.js"
head -c 1500 /dev/zero | tr '\0' 'x' >"${src}/lib/deep/big.txt"
: >"${src}/lib/empty.txt"
printf 'module.exports = 2;\n' >"${src}/node_modules/pkg/index.js"
ln -s lib/util.js "${src}/util.js"

# From the repository: `node --import tsx` resolves tsx from the working directory.
(cd "$repo_dir" && node --import tsx guest-images/code-disk/cli.ts --format rofs --exact --src "$src" \
  --out "${work}/ours.img" --gen-rofs-manifest "${work}/sample.manifest")
(cd "${osv_dir}/scripts" && python3 ./gen-rofs-img.py -o "${work}/reference.img" -m "${work}/sample.manifest" >/dev/null)

size="$(stat -c %s "${work}/ours.img")"
if ! cmp -n "$size" "${work}/ours.img" "${work}/reference.img"; then
  echo "ROFS writer differs from gen-rofs-img.py within the first ${size} bytes" >&2
  exit 1
fi
if [ "$(tail -c "+$((size + 1))" "${work}/reference.img" | tr -d '\0' | wc -c)" -ne 0 ]; then
  echo "gen-rofs-img.py wrote non-zero bytes after the end of our image" >&2
  exit 1
fi
echo "ROFS writer matches gen-rofs-img.py (${size} bytes)"
