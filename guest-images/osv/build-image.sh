#!/usr/bin/env bash
# Builds the OSv base image on a builder host: OSv kernel + ROFS root holding node (node-from-host),
# the guest runtime bundle and the popf stress check, and an empty /code mount point (OSv cannot
# create one on its read-only root). Leaves kernel.elf and root.img (raw disk: loader, MBR, ROFS
# partition; Firecracker cannot read qcow2) plus osv-commit.txt in OUT_DIR. The guest paths come from
# recipe.ts (OSV_GUEST_PATHS), which also builds the boot arguments and check-popf.sh's app from them.
# With NATIVE_HELPER and NATIVE_GUEST_PATH, the runtime's native helper (guest-native.node, built for
# this node) is put at NATIVE_GUEST_PATH too (init reseeds OpenSSL with it).
# Usage: build-image.sh OSV_DIR NODE_BIN_DIR RUNTIME_BUNDLE POPF_CHECK_JS OUT_DIR \
#          RUNTIME_GUEST_PATH POPF_GUEST_PATH CODE_GUEST_PATH [NATIVE_HELPER NATIVE_GUEST_PATH]
set -euo pipefail

if [ "$#" -ne 8 ] && [ "$#" -ne 10 ]; then
  echo "usage: $0 OSV_DIR NODE_BIN_DIR RUNTIME_BUNDLE POPF_CHECK_JS OUT_DIR RUNTIME_GUEST_PATH POPF_GUEST_PATH CODE_GUEST_PATH [NATIVE_HELPER NATIVE_GUEST_PATH]" >&2
  exit 2
fi
osv_dir="$(realpath "$1")"
node_bin_dir="$(realpath "$2")"
runtime_bundle="$(realpath "$3")"
popf_check="$(realpath "$4")"
out_dir="$(realpath "$5")"
runtime_guest="$6"
popf_guest="$7"
code_guest="$8"
native_helper="${9:+$(realpath "$9")}"
native_guest="${10:-}"
for guest_path in "$runtime_guest" "$popf_guest" "$code_guest" ${native_guest:+"$native_guest"}; do
  case "$guest_path" in
    /*) ;;
    *)
      echo "guest paths must be absolute, got ${guest_path}" >&2
      exit 2
      ;;
  esac
done

# Tools the build needs beyond OSv's setup.py: lddtree for manifest_from_host.sh, qemu-img for the raw disk.
for tool in lddtree qemu-img python3; do
  if ! command -v "$tool" >/dev/null; then
    echo "$tool not found: apt-get install -y pax-utils qemu-utils python3" >&2
    exit 1
  fi
done

# node-from-host copies whatever `which node` finds: make that the pinned release.
# node-from-host copies the `node` found on PATH. The image gets a copy whose V8 builtins restore
# the FPU flags with sahf instead of `push; popf` (patch-node-fprem.py says why: in OSv's ring 0
# that popf clears IF). The copy sits in its own folder so nothing else of NODE_BIN_DIR is shadowed.
patched_node_dir="$(mktemp -d)"
trap 'rm -rf "$patched_node_dir"' EXIT
python3 "$(dirname "$(realpath "$0")")/patch-node-fprem.py" "${node_bin_dir}/node" "${patched_node_dir}/node"
chmod 0755 "${patched_node_dir}/node"
export PATH="${patched_node_dir}:${node_bin_dir}:${PATH}"
echo "node for the image: ${node_bin_dir}/node $(node --version), popf rewritten to sahf"

# Our own app module: the runtime and the stress check at fixed guest paths; node comes from node-from-host.
module_dir="${osv_dir}/apps/snapfaas-runtime"
mkdir -p "$module_dir" "${module_dir}/code"
cp "$runtime_bundle" "${module_dir}/runtime.js"
cp "$popf_check" "${module_dir}/popf-stress.cjs"
cat >"${module_dir}/module.py" <<'PY'
from osv.modules import api

api.require('node-from-host')
PY
# ${MODULE_DIR} is OSv's manifest variable, written literally.
# shellcheck disable=SC2016
printf '%s: ${MODULE_DIR}/%s\n' \
  "$runtime_guest" runtime.js \
  "$popf_guest" popf-stress.cjs \
  "$code_guest" code >"${module_dir}/usr.manifest"
if [ -n "$native_helper" ]; then
  cp "$native_helper" "${module_dir}/guest-native.node"
  # shellcheck disable=SC2016
  printf '%s: ${MODULE_DIR}/guest-native.node\n' "$native_guest" >>"${module_dir}/usr.manifest"
fi

cd "$osv_dir"
./scripts/build -j"$(nproc)" fs=rofs image=node-from-host,snapfaas-runtime

mkdir -p "$out_dir"
cp build/last/loader-stripped.elf "${out_dir}/kernel.elf"
qemu-img convert -O raw build/last/usr.img "${out_dir}/root.img"
# A git checkout knows its commit; a source tarball's extract carries it in .snapfaas-osv-commit.
if [ -e .git ]; then
  git rev-parse HEAD >"${out_dir}/osv-commit.txt"
else
  cp .snapfaas-osv-commit "${out_dir}/osv-commit.txt"
fi
echo "OSv $(cat "${out_dir}/osv-commit.txt") image in ${out_dir}"
