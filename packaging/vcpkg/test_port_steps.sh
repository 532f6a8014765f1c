#!/usr/bin/env bash
# The vcpkg port's steps without the vcpkg tool (it cannot be downloaded here): the same CMake
# configure and install portfile.cmake runs, into a fresh prefix, then the checks vcpkg's
# post-build lint makes on the layout: config under share/ds, no absolute paths in installed
# CMake files, the library and header in place. Then the prefix is moved (vcpkg installs
# relocate) and a find_package consumer and a pkg-config consumer build and run from it.
# usage: test_port_steps.sh MODEL_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source_dir=$(cd "$here/../.." && pwd)
model=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "vcpkg port steps: $*" >&2; exit 1; }

cmake -S "$source_dir" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$work/installed" \
  -DDS_BUILD_TESTS=OFF -DDS_BUILD_BENCH=OFF -DDS_INSTALL_CMAKEDIR=share/ds -DCMAKE_INSTALL_LIBDIR=lib >/dev/null
cmake --build "$work/build" >/dev/null
cmake --install "$work/build" >/dev/null
p="$work/installed"
for f in include/ds_c.h lib/libds.so lib/libds.so.0 share/ds/dsConfig.cmake share/ds/dsConfigVersion.cmake \
         share/ds/dsTargets.cmake lib/pkgconfig/ds.pc bin/ds; do
  [ -e "$p/$f" ] || fail "missing $f"
done
[ ! -d "$p/lib/cmake" ] || fail "CMake config outside share/ds"
if grep -rl -e "$p" -e "$work/build" -e "$source_dir" "$p/share/ds"; then fail "absolute paths in the installed CMake files"; fi
# The .pc holds the prefix on its first line only (vcpkg_fixup_pkgconfig rewrites it).
if grep -v '^prefix=' "$p/lib/pkgconfig/ds.pc" | grep -q "$p"; then fail "absolute paths in ds.pc"; fi

mv "$p" "$work/moved"
sed -i "s|^prefix=.*|prefix=$work/moved|" "$work/moved/lib/pkgconfig/ds.pc"  # what vcpkg_fixup_pkgconfig does
"$here/../test_consumers.sh" "$model" "$work/moved"
echo "vcpkg port steps: layout, relocation and consumers pass"
