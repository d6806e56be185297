#!/usr/bin/env bash
# Builds the Linux guest kernel as an uncompressed vmlinux (what Firecracker boots on x86_64):
# pinned kernel.org 6.1 release, checked against kernel.org's sha256sums, configured from
# Firecracker's own 6.1 guest config with our fragment merged over it.
# Usage: build-kernel.sh KERNEL_VERSION TARBALL_URL SHASUMS_URL FC_CONFIG_URL FRAGMENT WORK_DIR OUT_FILE
set -euo pipefail

if [ "$#" -ne 7 ]; then
  echo "usage: $0 KERNEL_VERSION TARBALL_URL SHASUMS_URL FC_CONFIG_URL FRAGMENT WORK_DIR OUT_FILE" >&2
  exit 2
fi
version="$1"
tarball_url="$2"
shasums_url="$3"
fc_config_url="$4"
fragment="$(realpath "$5")"
work="$6"
out="$7"

mkdir -p "$work" "$(dirname "$out")"
out="$(realpath "$(dirname "$out")")/$(basename "$out")"
cd "$work"
tarball="linux-${version}.tar.xz"
curl --fail --silent --show-error --location --output "$tarball" "$tarball_url"
curl --fail --silent --show-error --location --output sha256sums.asc "$shasums_url"
grep -F "  ${tarball}" sha256sums.asc | sha256sum --check --strict
curl --fail --silent --show-error --location --output firecracker-guest.config "$fc_config_url"

rm -rf "linux-${version}"
tar -xJf "$tarball"
cd "linux-${version}"
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
# Reproducible-ish build metadata: no host name or build time in the image.
KBUILD_BUILD_TIMESTAMP="1970-01-01" KBUILD_BUILD_USER=snapfaas KBUILD_BUILD_HOST=builder \
  make -j"$(nproc)" vmlinux
cp vmlinux "$out"
echo "guest kernel ${version} at ${out}"
