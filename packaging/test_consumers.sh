#!/usr/bin/env bash
# Builds the consumer program against an installed ds twice, with pkg-config and with
# find_package(ds CONFIG), and runs both on a model folder.
# usage: test_consumers.sh MODEL_DIR [PREFIX]   (PREFIX: where ds is installed, default the system)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
model=$1 prefix=${2:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -n "$prefix" ]; then
  export PKG_CONFIG_PATH="$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  export LD_LIBRARY_PATH="$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
# 1. pkg-config
cc "$here/../tests/consumer/consumer.c" $(pkg-config --cflags --libs ds) -o "$work/consumer-pkgconfig"
"$work/consumer-pkgconfig" "$model" | tee "$work/a.txt"
# 2. CMake find_package
cmake -S "$here/../tests/consumer/cmake" -B "$work/build" ${prefix:+-DCMAKE_PREFIX_PATH="$prefix"} >/dev/null
cmake --build "$work/build" >/dev/null
"$work/build/consumer" "$model" | tee "$work/b.txt"
cmp "$work/a.txt" "$work/b.txt"
grep -q "generated:" "$work/a.txt"
echo "consumers: pkg-config and find_package(ds) builds both ran"
