#!/usr/bin/env bash
# Compares a built libds (with debug info) against the committed ABI baseline
# packaging/abi/libds.so.<SOVERSION>.abi, with libabigail's abidiff. New functions pass; any
# change to an existing function or type fails, unless the SONAME moved on (DS_SOVERSION bumped,
# with a new baseline). Appending a field to a struct_size-versioned struct is compatible by
# ds_c.h's rules, but is still reported: commit the refreshed baseline (--update) with it, so
# every change to the ABI is a visible diff in review.
# usage: check_abi.sh BUILD_DIR/libds.so           refresh: check_abi.sh --update BUILD_DIR/libds.so
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
update=0
if [ "${1:-}" = "--update" ]; then update=1; shift; fi
lib=$1
soname=$(readelf -d "$lib" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
baseline="$here/abi/$soname.abi"
dump() { abidw --headers-dir "$here/../include" --drop-private-types --exported-interfaces-only --no-corpus-path \
           --no-show-locs --type-id-style hash --out-file "$2" "$1"; }
if [ "$update" = 1 ]; then
  dump "$lib" "$baseline"
  echo "check_abi: wrote $baseline"
  exit 0
fi
if [ ! -f "$baseline" ]; then
  echo "check_abi: no baseline for $soname: a new SONAME needs 'check_abi.sh --update $lib' committed" >&2
  exit 1
fi
current=$(mktemp)
trap 'rm -f "$current"' EXIT
dump "$lib" "$current"
set +e
abidiff --no-added-syms "$baseline" "$current"
rc=$?
set -e
if (( rc & 3 )); then echo "check_abi: abidiff failed ($rc)" >&2; exit 1; fi
if (( rc & 12 )); then
  echo "check_abi: the ABI of $soname changed (above). If it only appends fields to struct_size-versioned" >&2
  echo "  structs, commit the refreshed baseline: packaging/check_abi.sh --update $lib" >&2
  echo "  Otherwise keep the ABI, or bump DS_SOVERSION (the SONAME) and commit a new baseline." >&2
  exit 1
fi
echo "check_abi: $soname matches its baseline"
