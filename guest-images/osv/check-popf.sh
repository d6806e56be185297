#!/usr/bin/env bash
# Boots the OSv base image in Firecracker with the popf stress check as the app instead of the
# runtime, under a host-side watchdog: a guest that hangs with interrupts off cannot report anything.
# Exit 0 = PASS, 1 = FAIL reported by the guest, 2 = no verdict (hang or crash), 64 = usage.
# POPF_GUEST_PATH is where build-image.sh put the check in the image (recipe.ts OSV_GUEST_PATHS).
# Usage: check-popf.sh FIRECRACKER_BIN IMAGE_DIR POPF_GUEST_PATH [SECONDS] [VCPUS]
set -euo pipefail

if [ "$#" -lt 3 ]; then
  echo "usage: $0 FIRECRACKER_BIN IMAGE_DIR POPF_GUEST_PATH [SECONDS] [VCPUS]" >&2
  exit 64
fi
firecracker="$(realpath "$1")"
image_dir="$(realpath "$2")"
popf_guest="$3"
seconds="${4:-120}"
vcpus="${5:-1}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cat >"${work}/config.json" <<JSON
{
  "boot-source": {
    "kernel_image_path": "${image_dir}/kernel.elf",
    "boot_args": "--nopci --rootfs=rofs --env=TZ=UTC /node ${popf_guest} --seconds ${seconds}"
  },
  "drives": [
    { "drive_id": "root", "path_on_host": "${image_dir}/root.img", "is_root_device": false, "is_read_only": true }
  ],
  "machine-config": { "vcpu_count": ${vcpus}, "mem_size_mib": 256, "smt": false }
}
JSON

# The watchdog: the check's own run time plus a minute for boot and exit.
set +e
timeout --kill-after=5 "$((seconds + 60))" "$firecracker" --no-api --config-file "${work}/config.json" \
  </dev/null >"${work}/console.log" 2>&1
status=$?
set -e

verdict="$(grep -a -o 'POPF-CHECK [A-Z]*.*' "${work}/console.log" | tail -n 1 || true)"
echo "firecracker exit ${status}; ${verdict:-no POPF-CHECK line on the console}"
case "$verdict" in
  "POPF-CHECK PASS"*) exit 0 ;;
  "POPF-CHECK FAIL"*) exit 1 ;;
  *)
    echo "no verdict: the guest hung or crashed (last console lines follow)" >&2
    tail -n 20 "${work}/console.log" >&2
    exit 2
    ;;
esac
