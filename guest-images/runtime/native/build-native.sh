#!/usr/bin/env bash
# Builds the guest runtime's native helper (guest-native.cc) for one node release: against that
# node's headers (node_api.h and the OpenSSL headers node ships), symbols left for the node
# executable to provide at load time. N-API keeps the addon loadable by later node releases, but the
# OpenSSL calls assume the OpenSSL 3 ABI of the node it was built for: build it with the guest's node.
# Usage: build-native.sh NODE_INCLUDE_DIR OUT_FILE   (NODE_INCLUDE_DIR: <node prefix>/include/node)
set -euo pipefail

if [ "$#" -ne 2 ]; then
  echo "usage: $0 NODE_INCLUDE_DIR OUT_FILE" >&2
  exit 2
fi
include="$1"
out="$2"
here="$(dirname "$(realpath "$0")")"
for header in node_api.h openssl/rand.h; do
  if [ ! -f "${include}/${header}" ]; then
    echo "${include}/${header} is missing: pass the include/node folder of the guest's node release" >&2
    exit 1
  fi
done
command -v g++ >/dev/null || {
  echo "g++ is missing: apt-get install -y g++" >&2
  exit 1
}
# -Wl,--build-id=none and no debug info: the same inputs give the same bytes (the rootfs hash).
g++ -std=c++17 -O2 -fPIC -shared -Wall -Werror -fvisibility=hidden -Wl,--build-id=none \
  -DNAPI_VERSION=8 -I"$include" -o "${out}.tmp" "${here}/guest-native.cc"
mv "${out}.tmp" "$out"
echo "guest native helper at ${out}"
