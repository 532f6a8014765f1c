#include "tests/fixtures.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <cstring>

#include "backends/plugin.h"
#include "core/model/dtype.h"
#include "core/model/safetensors.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace ds::testing {

namespace fs = std::filesystem;

const std::string& CudaUnavailableReason() {
  static const std::string reason = [] {
    auto backend = LoadCudaBackend(PluginBackendOptions{});
    return backend.ok() ? std::string() : std::string(backend.status().message());
  }();
  return reason;
}

bool CudaRequired() {
  const char* env = std::getenv("DS_REQUIRE_CUDA");
  return env && std::string(env) == "1";
}

std::string FixturesDir() {
  if (const char* env = std::getenv("DS_FIXTURES_DIR"); env && *env) return env;
  return DS_FIXTURES_DIR;
}

std::vector<std::string> ListModelFixtures() {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(FixturesDir(), ec)) {
    if (fs::exists(entry.path() / "config.json") && fs::exists(entry.path() / "reference.safetensors"))
      names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string FixturePath(const std::string& name) { return (fs::path(FixturesDir()) / name).string(); }

RefTensor LoadReference(const std::string& fixture, const std::string& name) {
  RefTensor out;
  auto file = SafetensorsFile::Open((fs::path(FixturePath(fixture)) / "reference.safetensors").string());
  if (!file.ok()) {
    ADD_FAILURE() << file.status();
    return out;
  }
  const TensorEntry* t = (*file)->Find(name);
  if (!t) return out;
  out.present = true;
  out.shape = t->shape;
  const size_t n = static_cast<size_t>(t->numel());
  if (t->type == StorageType::kI64) {
    out.i64.resize(n);
    std::memcpy(out.i64.data(), t->data, n * 8);
  } else {
    out.f32.resize(n);
    ConvertToF32(t->type, t->data, n, out.f32.data());
  }
  return out;
}

double RelativeError(const float* a, const float* b, size_t n) {
  double diff = 0, ref = 0;
  for (size_t i = 0; i < n; ++i) {
    diff += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    ref += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(diff) / std::max(std::sqrt(ref), 1e-30);
}

std::vector<RawTensor> ReadRawTensors(const std::string& path) {
  std::vector<RawTensor> out;
  auto file = SafetensorsFile::Open(path);
  if (!file.ok()) {
    ADD_FAILURE() << file.status();
    return out;
  }
  for (const auto& t : (*file)->tensors())
    out.push_back({t.name, std::string(StorageTypeName(t.type)), t.shape,
                   std::string(reinterpret_cast<const char*>(t.data), t.nbytes)});
  return out;
}

void WriteSafetensors(const std::string& path, const std::vector<RawTensor>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  size_t offset = 0;
  for (const auto& t : tensors) {
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  const std::string text = header.dump();
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out << text;
  for (const auto& t : tensors) out << t.bytes;
}

std::string MakeTempDir(const std::string& tag) {
  static std::atomic<int> counter{0};
  const fs::path dir = fs::temp_directory_path() /
                       ("ds-test-" + tag + "-" + std::to_string(getpid()) + "-" + std::to_string(counter++));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace ds::testing
