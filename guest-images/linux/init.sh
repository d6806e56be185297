#!/bin/busybox sh
# PID 1 of the Linux guest (installed as /sbin/init). Mounts what Node and the runtime need, mounts
# the code disk when one with a filesystem is attached, and hands PID 1 over to the runtime.
# shellcheck shell=sh
set -eu
export PATH=/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=1777,size=64m tmpfs /tmp

# The bake attaches an empty placeholder; a real code disk is attached after restore and mounted by
# /bin/remount-code when the runtime handles `load`.
if [ -b /dev/vdb ]; then
  mount -t squashfs -o ro /dev/vdb /code || echo "init: no filesystem on /dev/vdb yet, /code left empty"
fi

# The same arguments as runtimeArgs() in guest-images/bake/firecracker-plan.ts.
exec /node /runtime/runtime.js --listen tcp:0.0.0.0:8123 --code /code
