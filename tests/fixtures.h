// Test support: the golden fixture folders (../shared/fixtures, or $DS_FIXTURES_DIR), their
// reference tensors, and a safetensors writer for crafting bad checkpoints.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/statusor.h"
#include "backends/backend.h"
#include "backends/plugin.h"
#include "ds_c.h"
#include "gtest/gtest.h"

namespace ds::testing {

std::string FixturesDir();
// Model fixtures: folders with config.json and reference.safetensors, sorted.
std::vector<std::string> ListModelFixtures();
std::string FixturePath(const std::string& name);

struct RefTensor {
  std::vector<int64_t> shape;
  std::vector<float> f32;    // F32 tensors
  std::vector<int64_t> i64;  // I64 tensors
  bool present = false;
};
// A tensor of <fixture>/reference.safetensors; present = false if absent.
RefTensor LoadReference(const std::string& fixture, const std::string& name);

// ‖a − b‖ / ‖b‖
double RelativeError(const float* a, const float* b, size_t n);

// A safetensors tensor as raw bytes, for writing crafted files.
struct RawTensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};
std::vector<RawTensor> ReadRawTensors(const std::string& path);
void WriteSafetensors(const std::string& path, const std::vector<RawTensor>& tensors);

// Why the CUDA backend cannot run here (no plugin, driver or device), or "" when it can.
// Probed once per process.
const std::string& CudaUnavailableReason();
// Tests of the CUDA backend skip with this message where it cannot run, and fail instead when
// DS_REQUIRE_CUDA=1 (the GPU machine's run: tests/gpu/run.sh).
bool CudaRequired();

// A backend and precision the fixtures run on. float32 compute is held to 1e-4 relative at every
// position against the float32 reference (fixtures/README.md) and must choose the same greedy
// tokens. bf16 rounds the fixtures' float32 weights, which alone moves these random models'
// logits by about 1% of their norm (the CPU with bf16 weights shows the same, weight_formats_test),
// and an MoE layer may then route a token to another expert (a discontinuity of top-k, not an
// error): bf16 is held to 3e-2 (as there) on the median position of each check, with the
// reference's tokens fed back so that a flipped near-tie does not derail the comparison; its
// greedy tokens are its own, not necessarily the reference's.
struct Target {
  const char* name;
  int32_t backend;
  int32_t compute;
  double tolerance;
  bool exact_tokens;
};
inline constexpr Target kTargets[] = {
    {"cpu", DS_BACKEND_CPU, DS_COMPUTE_F32, 1e-4, true},
    {"cuda_f32", DS_BACKEND_CUDA, DS_COMPUTE_F32, 1e-4, true},
    {"cuda_bf16", DS_BACKEND_CUDA, DS_COMPUTE_BF16, 3e-2, false},
};
inline void PrintTo(const Target& t, std::ostream* os) { *os << t.name; }  // test names, not bytes

using FixtureAndTarget = std::tuple<std::string, Target>;
inline std::string FixtureAndTargetName(const ::testing::TestParamInfo<FixtureAndTarget>& info) {
  return std::get<0>(info.param) + "_" + std::get<1>(info.param).name;
}

// A backend kernel test's parameters: the CPU, CUDA, and CUDA with the pass's position read from
// the device (as a replayed recording runs).
using TargetAndDevicePosition = std::tuple<Target, bool>;
inline auto KernelTestTargets() {
  return ::testing::Values(std::make_tuple(kTargets[0], false), std::make_tuple(kTargets[1], false),
                           std::make_tuple(kTargets[1], true));
}
inline std::string KernelTestName(const ::testing::TestParamInfo<TargetAndDevicePosition>& info) {
  return std::string(std::get<0>(info.param).name) + (std::get<1>(info.param) ? "_position_on_device" : "");
}
// The backend a kernel test runs on: the CPU with cpu_threads threads, or the CUDA plugin.
inline absl::StatusOr<std::unique_ptr<Backend>> MakeTestBackend(const Target& target, int cpu_threads) {
  if (target.backend == DS_BACKEND_CUDA) return LoadCudaBackend({});
  return MakeCpuBackend({.n_threads = cpu_threads});
}
// 1 / sqrt(mean(x²) + eps) over x's n values in f64: an RMSNorm's scale for the f64 references.
inline double ReferenceInverseRms(const float* x, int64_t n, float eps) {
  double sum_sq = 0.0;
  for (int64_t i = 0; i < n; ++i) sum_sq += static_cast<double>(x[i]) * x[i];
  return 1.0 / std::sqrt(sum_sq / static_cast<double>(n) + eps);
}
// A pass's position pos0: with on_device, also held in a [1, 1] i32 tensor on the backend, which
// the kernels then read (as a replayed recording does).
inline absl::StatusOr<Position> PassPosition(Backend& backend, int64_t pos0, bool on_device) {
  Position at(pos0);
  if (!on_device) return at;
  absl::StatusOr<Tensor> pos = backend.Alloc(DType::kI32, 1, 1);
  if (!pos.ok()) return pos.status();
  const int32_t value = static_cast<int32_t>(pos0);
  if (absl::Status s = backend.Upload(&value, *pos); !s.ok()) return s;
  at.device = *pos;
  return at;
}

// Skips (or, where the GPU run requires it, fails) a CUDA case that cannot run here.
#define DS_SKIP_IF_NO_DEVICE(b)                                                        \
  if ((b).backend == DS_BACKEND_CUDA && !CudaUnavailableReason().empty()) {           \
    if (CudaRequired()) FAIL() << "DS_REQUIRE_CUDA=1: " << CudaUnavailableReason();   \
    GTEST_SKIP() << "skipped: no CUDA device (" << CudaUnavailableReason() << ")";    \
  }

// A test of a backend's ops, parameterized by target: the backend (two CPU threads) made in
// SetUp, the test skipped where its device is missing.
class BackendOpTest : public ::testing::TestWithParam<Target> {
 protected:
  void SetUp() override {
    DS_SKIP_IF_NO_DEVICE(GetParam());
    auto backend = MakeTestBackend(GetParam(), 2);
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = *std::move(backend);
  }
  std::unique_ptr<Backend> backend_;
};

// A fresh empty folder under the system temp dir.
std::string MakeTempDir(const std::string& tag);
void WriteFile(const std::string& path, const std::string& content);
std::string ReadFile(const std::string& path);

}  // namespace ds::testing
