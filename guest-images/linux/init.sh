#!/bin/busybox sh
# PID 1 of the Linux guest (installed as /sbin/init). Mounts what Node and the runtime need and hands
# PID 1 over to the runtime.
# shellcheck shell=sh
set -eu
export PATH=/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
# Firecracker's guest config has CONFIG_DEVTMPFS_MOUNT=y: the kernel has mounted /dev already, and a
# second mount fails with EBUSY, which under set -e would end PID 1 (a kernel panic).
dev_mounted=no
while read -r _ mount_dir _; do
  if [ "$mount_dir" = /dev ]; then dev_mounted=yes; fi
done </proc/mounts
if [ "$dev_mounted" = no ]; then
  mount -t devtmpfs devtmpfs /dev
fi
mount -t tmpfs -o mode=1777,size=64m tmpfs /tmp

# The code disk is NOT mounted here: the bake attaches an empty placeholder, the host swaps in the
# function's disk after each restore, and the runtime runs /bin/remount-code when it handles `load`
# (a disk mounted before the swap would keep showing the placeholder).

# runtimeArgs() of guest-images/bake/firecracker-plan.ts, then LINUX_RUNTIME_FLAGS of
# guest-images/linux/recipe.ts (a test keeps the three in step).
exec /node /runtime/runtime.js --listen tcp:0.0.0.0:8123 --code /code --console channel \
  --code-mount /bin/remount-code --native /runtime/guest-native.node --set-clock --require-control-secret
