#!/usr/bin/env bash
# The CUDA backend's whole check on a GPU machine, in one call: build ds with the plugin, run the
# suite with the CUDA cases required (a missing device fails instead of skipping), then the CUDA
# golden tests under compute-sanitizer (memcheck, then racecheck on one fixture).
#
#   tests/gpu/run.sh [BUILD_DIR]
#
# DS_FIXTURES_DIR: the golden fixtures (default ../shared/fixtures).
# DS_DEPS_DEBS: a folder of the build's Debian packages (.deb), for a GPU machine that lacks them
#   and cannot install them: they are unpacked into a private prefix, never over the system.
# CUDA_ARCHS: the architectures to build (default: 90, the H100/H200).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build-gpu}
fixtures=$(realpath "${DS_FIXTURES_DIR:-../shared/fixtures}")

if [ -n "${DS_DEPS_DEBS:-}" ]; then
  prefix=/tmp/ds-deps
  for f in "$DS_DEPS_DEBS"/*.deb; do dpkg -x "$f" "$prefix"; done
  libdir=$prefix/usr/lib/x86_64-linux-gnu
  export CMAKE_PREFIX_PATH=$prefix/usr
  export PKG_CONFIG_PATH=$libdir/pkgconfig PKG_CONFIG_SYSROOT_DIR=$prefix
  export LD_LIBRARY_PATH=$libdir:${LD_LIBRARY_PATH:-}
fi
export PATH=/usr/local/cuda/bin:$PATH

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDS_WITH_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90}" -DDS_FIXTURES_DIR="$fixtures" >/dev/null
cmake --build "$build"

export DS_REQUIRE_CUDA=1 DS_FIXTURES_DIR="$fixtures"
failed=0
# tokenizer_diff needs node and the npm registry, which a GPU machine may not have.
ctest --test-dir "$build" --output-on-failure -j8 -E tokenizer_diff || failed=1

# compute-sanitizer: every CUDA golden case and the kernel tests under memcheck; racecheck on the
# MoE fixture (MLA on the tile kernel, the routing, the expert kernels) and on the kernel tests'
# shapes (grouped heads: the tile kernel, MLA's latent rows; the GEMV's rms pre-pass and its
# per-head groups; rope and the cache writes, MLA's too; the routing), as a golden Qwen2 case under
# racecheck takes minutes.
export DS_CUDA_PLUGIN=$PWD/$build/libds-cuda.so
kernel_tests='Backends/Attention.*cuda*:Backends/FusedProjections.*cuda*:Backends/RopeAndStoreKv.*cuda*'
compute-sanitizer --tool memcheck --error-exitcode 1 --leak-check full \
  "$build/tests/golden_test" --gtest_filter='*cuda*' --gtest_brief=1 || failed=1
compute-sanitizer --tool memcheck --error-exitcode 1 --leak-check full \
  "$build/tests/unit_test" --gtest_filter="$kernel_tests" --gtest_brief=1 || failed=1
compute-sanitizer --tool memcheck --error-exitcode 1 --leak-check full \
  "$build/tests/moe_route_test" --gtest_filter='*cuda*' --gtest_brief=1 || failed=1
compute-sanitizer --tool racecheck --error-exitcode 1 \
  "$build/tests/golden_test" --gtest_filter='*deepseek_v3_tiny_cuda_bf16*' --gtest_brief=1 || failed=1
compute-sanitizer --tool racecheck --error-exitcode 1 \
  "$build/tests/unit_test" --gtest_filter="$kernel_tests" --gtest_brief=1 || failed=1
compute-sanitizer --tool racecheck --error-exitcode 1 \
  "$build/tests/moe_route_test" --gtest_filter='*cuda*' --gtest_brief=1 || failed=1
if [ "$failed" = 0 ]; then echo "gpu suite: all passed"; else echo "gpu suite: FAILED"; fi
exit "$failed"
