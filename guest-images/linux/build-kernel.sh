#!/usr/bin/env bash
# Builds the Linux guest kernel as an uncompressed vmlinux (what Firecracker boots on x86_64) from
# Debian's linux-source-6.1 package, configured from Firecracker's own 6.1 guest config with our
# fragment merged over it.
# Usage: build-kernel.sh SOURCE SOURCE_SHA256|- FC_CONFIG FC_CONFIG_SHA256|- FRAGMENT WORK_DIR OUT_FILE
#   SOURCE     a linux-source-6.1_*.deb, or PACKAGE=VERSION to fetch with `apt-get download` (apt checks
#              it against the archive's signed Release file); either way checked against SOURCE_SHA256
#   FC_CONFIG  Firecracker's microvm-kernel-ci-x86_64-6.1.config: a file, or an https URL to fetch
#   "-" for a sha256 skips that check (the local lane building whatever 6.1 Debian serves today).
# WORK_DIR keeps the unpacked, built tree: a second run with the same source only rebuilds what a
# changed config touches, and OUT_FILE appears whole or not at all.
set -euo pipefail

if [ "$#" -ne 7 ]; then
  echo "usage: $0 SOURCE SOURCE_SHA256|- FC_CONFIG FC_CONFIG_SHA256|- FRAGMENT WORK_DIR OUT_FILE" >&2
  exit 2
fi
source="$1"
source_sha256="$2"
fc_config="$3"
fc_config_sha256="$4"
fragment="$(realpath "$5")"
work="$6"
out="$7"

check_sha256() { # FILE EXPECTED|-
  local actual
  actual="$(sha256sum "$1" | cut -d' ' -f1)"
  if [ "$2" != "-" ] && [ "$actual" != "$2" ]; then
    echo "$1 has sha256 ${actual}, the pin says $2" >&2
    exit 1
  fi
  echo "$actual"
}

mkdir -p "$work" "$(dirname "$out")"
out="$(realpath "$(dirname "$out")")/$(basename "$out")"
[ -f "$source" ] && source="$(realpath "$source")"
[ -f "$fc_config" ] && fc_config="$(realpath "$fc_config")"
cd "$work"

case "$source" in
  *.deb) deb="$source" ;;
  *=*)
    rm -f "${source%%=*}"_*.deb
    apt-get download "$source"
    deb="$(ls "${source%%=*}"_*.deb)"
    ;;
  *) echo "SOURCE must be a .deb file or PACKAGE=VERSION, got ${source}" >&2; exit 2 ;;
esac
deb_sha256="$(check_sha256 "$deb" "$source_sha256")"
case "$fc_config" in
  https://*) curl --fail --silent --show-error --location --output firecracker-guest.config "$fc_config" ;;
  *) cp "$fc_config" firecracker-guest.config ;;
esac
check_sha256 firecracker-guest.config "$fc_config_sha256" >/dev/null

# Unpack once per source package; the stamp names the .deb the tree came from.
if [ "$(cat src/.snapfaas-source 2>/dev/null || true)" != "$deb_sha256" ]; then
  echo "kernel: unpacking $(basename "$deb")"
  rm -rf src unpack
  mkdir unpack
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C unpack ./usr/src
  tarball="$(find unpack/usr/src -maxdepth 1 -name 'linux-source-*.tar.xz' | head -n 1)"
  [ -n "$tarball" ] || { echo "$deb holds no usr/src/linux-source-*.tar.xz" >&2; exit 1; }
  tar -xJf "$tarball" -C unpack
  mv "unpack/$(basename "$tarball" .tar.xz)" src
  rm -rf unpack
  echo "$deb_sha256" >src/.snapfaas-source
fi
cd src

cp ../firecracker-guest.config .config
./scripts/kconfig/merge_config.sh -m .config "$fragment"
make olddefconfig
# Fail loudly when olddefconfig dropped an option we rely on (a missing dependency in the fragment).
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=y)
      grep -qx -- "$line" .config || { echo "kernel config lost ${line}" >&2; exit 1; }
      ;;
  esac
done <"$fragment"
echo "kernel: config merged, every =y line of $(basename "$fragment") kept"
# Reproducible build metadata: no host name, user, build time or build counter in the image.
export KBUILD_BUILD_TIMESTAMP="1970-01-01 00:00:00 UTC" KBUILD_BUILD_USER=snapfaas \
  KBUILD_BUILD_HOST=builder KBUILD_BUILD_VERSION=1 LC_ALL=C TZ=UTC
make -j"$(nproc)" vmlinux
tmp="${out}.tmp.$$"
cp vmlinux "$tmp"
mv "$tmp" "$out"
echo "guest kernel $(make -s kernelrelease) from $(basename "$deb") at ${out}"
