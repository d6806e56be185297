#!/usr/bin/env bash
# Applies one of the recipe's patches (patches/) to the OSv checkout, after checking the patch file
# is the one the recipe pins (recipe.ts OSV_PATCHES): a patch edited without a new pin stops the bake.
# Usage: apply-patch.sh OSV_DIR PATCH_FILE SHA256
set -euo pipefail

if [ "$#" -ne 3 ]; then
  echo "usage: $0 OSV_DIR PATCH_FILE SHA256" >&2
  exit 2
fi
osv_dir="$1"
patch="$(realpath "$2")"
want="$3"
got="$(sha256sum "$patch" | cut -d' ' -f1)"
if [ "$got" != "$want" ]; then
  echo "${patch}: sha256 ${got}, the recipe pins ${want}: update OSV_PATCHES in recipe.ts" >&2
  exit 1
fi
# --check first: a patch that no longer applies says so and leaves the checkout as it was.
git -C "$osv_dir" apply --check "$patch"
git -C "$osv_dir" apply "$patch"
echo "applied $(basename "$patch")"
