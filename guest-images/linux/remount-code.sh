#!/bin/busybox sh
# Installed as /bin/remount-code in the Linux guest. Run by the runtime on `load` after a restore:
# the host has swapped the code drive's backing file (PATCH /drives/code), so drop what the kernel
# cached for the old disk and mount the new one read-only at /code.
# shellcheck shell=sh
set -eu
export PATH=/bin

device="${1:-/dev/vdb}"
umount /code 2>/dev/null || true
blockdev --flushbufs "$device"
mount -t squashfs -o ro "$device" /code
