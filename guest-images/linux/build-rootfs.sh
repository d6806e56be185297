#!/usr/bin/env bash
# Builds the Linux guest's root filesystem without root and without debootstrap: node plus the
# shared libraries ldd reports, a static busybox for init and mount, the runtime bundle with its
# native helper (compiled here against NODE_BIN's headers, <prefix>/include/node), the init scripts
# and /etc/resolv.conf, packed as a read-only squashfs with the same deterministic flags as code disks.
# Usage: build-rootfs.sh NODE_BIN RUNTIME_BUNDLE BUSYBOX_STATIC OUT_FILE
set -euo pipefail

if [ "$#" -ne 4 ]; then
  echo "usage: $0 NODE_BIN RUNTIME_BUNDLE BUSYBOX_STATIC OUT_FILE" >&2
  exit 2
fi
node_bin="$(realpath "$1")"
runtime_bundle="$(realpath "$2")"
busybox="$(realpath "$3")"
out="$4"
here="$(dirname "$(realpath "$0")")"

if ldd "$busybox" >/dev/null 2>&1; then
  echo "$busybox is dynamically linked; install busybox-static" >&2
  exit 1
fi

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
root="${stage}/root"
mkdir -p "${root}"/{bin,sbin,etc,proc,sys,dev,tmp,code,runtime}

cp "$node_bin" "${root}/node"
# Every shared object node links against, at the path the dynamic loader looks for it.
ldd "$node_bin" | awk '/=> \// { print $3 } /^\t\/[^ ]+ \(/ { print $1 }' | sort -u | while IFS= read -r lib; do
  mkdir -p "${root}$(dirname "$lib")"
  cp -L "$lib" "${root}${lib}"
done

cp "$busybox" "${root}/bin/busybox"
for applet in sh mount umount blockdev; do
  ln -s busybox "${root}/bin/${applet}"
done
cp "${here}/init.sh" "${root}/sbin/init"
cp "${here}/remount-code.sh" "${root}/bin/remount-code"
chmod 0755 "${root}/sbin/init" "${root}/bin/remount-code"
cp "$runtime_bundle" "${root}/runtime/runtime.js"
# The runtime's native helper (OpenSSL reseed and clock step at init), for exactly this node.
bash "${here}/../runtime/native/build-native.sh" "$(dirname "$node_bin")/../include/node" \
  "${root}/runtime/guest-native.node" >/dev/null
# The guest's resolver is its gateway, the same address in every slot; the slot's netns forwards it
# to the host's upstream resolver when the driver enables egress (network-slots.ts).
printf 'nameserver %s\n' "${GUEST_NAMESERVER:-172.16.0.1}" >"${root}/etc/resolv.conf"
chmod 1777 "${root}/tmp"

env -u SOURCE_DATE_EPOCH mksquashfs "$root" "$out" -noappend -all-root -no-xattrs \
  -mkfs-time 0 -all-time 0 -comp gzip -quiet -no-progress
echo "Linux guest rootfs at ${out}"
