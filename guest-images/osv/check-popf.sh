#!/usr/bin/env bash
# Boots the OSv base image in Firecracker with the popf stress check as the app instead of the
# runtime, under a host-side watchdog: a guest that hangs with interrupts off cannot report anything.
# VMM_BIN may also be qemu-system-x86_64 (the QEMU/TCG lane): then QEMU's `pc` machine boots the image
# with virtio-pci devices (OSv halts on microvm without KVM), always under TCG.
# Exit 0 = PASS, 1 = FAIL reported by the guest, 2 = no verdict (hang or crash), 64 = usage.
# POPF_GUEST_PATH is where build-image.sh put the check in the image (recipe.ts OSV_GUEST_PATHS).
# NODE_FLAGS (environment, optional) go before the script, e.g. NODE_FLAGS=--jitless.
# The console is kept in $POPF_CONSOLE when set (for the evidence), else in a temporary folder.
# Usage: check-popf.sh VMM_BIN IMAGE_DIR POPF_GUEST_PATH [SECONDS] [VCPUS]
set -euo pipefail

if [ "$#" -lt 3 ]; then
  echo "usage: $0 VMM_BIN IMAGE_DIR POPF_GUEST_PATH [SECONDS] [VCPUS]" >&2
  exit 64
fi
# A bare name is looked up on PATH (qemu-system-x86_64), a path is taken as it is.
vmm="$(realpath "$(command -v "$1" || echo "$1")")"
image_dir="$(realpath "$2")"
popf_guest="$3"
seconds="${4:-120}"
vcpus="${5:-1}"

node_flags="${NODE_FLAGS:-}"
app="/node ${node_flags:+${node_flags} }${popf_guest} --seconds ${seconds}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
console="${POPF_CONSOLE:-${work}/console.log}"

cat >"${work}/config.json" <<JSON
{
  "boot-source": {
    "kernel_image_path": "${image_dir}/kernel.elf",
    "boot_args": "--nopci --rootfs=rofs --env=TZ=UTC ${app}"
  },
  "drives": [
    { "drive_id": "root", "path_on_host": "${image_dir}/root.img", "is_root_device": false, "is_read_only": true }
  ],
  "machine-config": { "vcpu_count": ${vcpus}, "mem_size_mib": 256, "smt": false }
}
JSON

# The watchdog: the check's own run time plus a minute for boot and exit.
set +e
case "$(basename "$vmm")" in
  qemu-system-*)
    # TCG is 30-60x slower than KVM: the boot gets more of the watchdog's time. An OSv abort halts the
    # guest without powering off: the console line ends the wait instead of the watchdog.
    timeout --kill-after=5 "$((seconds + 180))" "$vmm" -accel tcg -M pc -m 256M -smp "$vcpus" \
      -nodefaults -no-user-config -display none -no-reboot -serial stdio \
      -kernel "${image_dir}/kernel.elf" -append "--rootfs=rofs --env=TZ=UTC ${app}" \
      -drive "file=${image_dir}/root.img,if=none,id=root,format=raw,readonly=on" \
      -device virtio-blk-pci,drive=root </dev/null >"$console" 2>&1 &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
      if grep -a -q -E '^(Assertion failed|Aborted)' "$console" 2>/dev/null; then
        sleep 2 # the backtrace lines
        kill "$pid" 2>/dev/null
        echo "the guest aborted (console: $(grep -a -m1 -E '^(Assertion failed|Aborted)' "$console")); stopped it"
        break
      fi
      sleep 1
    done
    wait "$pid"
    ;;
  *)
    timeout --kill-after=5 "$((seconds + 60))" "$vmm" --no-api --config-file "${work}/config.json" \
      </dev/null >"$console" 2>&1
    ;;
esac
status=$?
set -e

verdict="$(grep -a -o 'POPF-CHECK [A-Z]*.*' "$console" | tail -n 1 || true)"
echo "$(basename "$vmm") exit ${status}; ${verdict:-no POPF-CHECK line on the console}"
case "$verdict" in
  "POPF-CHECK PASS"*) exit 0 ;;
  "POPF-CHECK FAIL"*) exit 1 ;;
  *)
    echo "no verdict: the guest hung or crashed (last console lines follow)" >&2
    tail -n 20 "$console" >&2
    exit 2
    ;;
esac
