// Test support: the golden fixture folders (../shared/fixtures, or $DS_FIXTURES_DIR), their
// reference tensors, and a safetensors writer for crafting bad checkpoints.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

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

// A fresh empty folder under the system temp dir.
std::string MakeTempDir(const std::string& tag);
void WriteFile(const std::string& path, const std::string& content);
std::string ReadFile(const std::string& path);

}  // namespace ds::testing
