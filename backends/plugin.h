// Backends that live in their own shared library (libds-cuda.so), loaded by libds at run time
// with dlopen, so that libds never links a vendor runtime and CPU users need none installed.
// A plugin is built from the same source tree as libds (the C++ Backend interface crosses the
// boundary, as ggml-backend's does), so it carries the build id it was made with and the
// loader refuses any other.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "backends/backend.h"

namespace ds {

struct PluginBackendOptions {
  int device = 0;  // the CUDA device ordinal
  // The prompt path's attention products (f32 Q, K, V, scores) may run as TF32 on the tensor
  // cores: set for bf16 compute, whose tolerance TF32's 10-bit mantissa is well inside; never
  // for f32 compute.
  bool tf32_attention = false;
};

struct BackendPlugin {
  const char* build_id;  // DS_BUILD_ID of the tree it was built from
  absl::StatusOr<std::unique_ptr<Backend>> (*create)(const PluginBackendOptions& options);
};

// The one symbol a plugin exports.
inline constexpr const char kBackendPluginEntry[] = "ds_backend_plugin_v1";
using BackendPluginEntryFn = const BackendPlugin* (*)();

// The CUDA plugin's backend. Looked for at $DS_CUDA_PLUGIN (a path), beside libds, then on the
// loader's search path. Unimplemented (DS_ERR_UNSUPPORTED) when no plugin can be loaded;
// Unavailable (DS_ERR_BACKEND) when it loads but finds no driver or device.
absl::StatusOr<std::unique_ptr<Backend>> LoadCudaBackend(const PluginBackendOptions& options);

}  // namespace ds
