#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "backends/plugin.h"

namespace ds {
namespace {

constexpr const char kCudaPluginName[] = "libds-cuda.so";

// The folder of the library (or program) this code was linked into.
std::string OwnDirectory() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&LoadCudaBackend), &info) == 0 || !info.dli_fname) return "";
  return std::filesystem::path(info.dli_fname).parent_path().string();
}

// Loads the plugin once per process; it stays loaded (backends made by it may outlive any
// handle we could count). The result, success or the reasons for failure, is remembered.
absl::StatusOr<const BackendPlugin*> LoadCudaPlugin() {
  static std::once_flag once;
  static absl::StatusOr<const BackendPlugin*> loaded = absl::UnknownError("not loaded");
  std::call_once(once, [] {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("DS_CUDA_PLUGIN"); env && *env) {
      candidates.push_back(env);
    } else {
      if (std::string dir = OwnDirectory(); !dir.empty()) candidates.push_back(dir + "/" + kCudaPluginName);
      candidates.push_back(kCudaPluginName);  // the loader's search path
    }
    std::vector<std::string> failures;
    for (const std::string& path : candidates) {
      void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (!handle) {
        const char* err = dlerror();
        failures.push_back(err ? err : path);
        continue;
      }
      auto entry = reinterpret_cast<BackendPluginEntryFn>(dlsym(handle, kBackendPluginEntry));
      const BackendPlugin* plugin = entry ? entry() : nullptr;
      if (!plugin || !plugin->create) {
        failures.push_back(absl::StrCat(path, ": not a ds backend plugin (no ", kBackendPluginEntry, ")"));
        dlclose(handle);
        continue;
      }
      if (std::string(plugin->build_id) != DS_BUILD_ID) {
        failures.push_back(absl::StrCat(path, ": built for ds ", plugin->build_id, ", this libds is ", DS_BUILD_ID));
        dlclose(handle);
        continue;
      }
      loaded = plugin;
      return;
    }
    loaded = absl::UnimplementedError(
        absl::StrCat("the CUDA backend plugin (", kCudaPluginName, ") could not be loaded: ",
                     absl::StrJoin(failures, "; ")));
  });
  return loaded;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> LoadCudaBackend(const PluginBackendOptions& options) {
  auto plugin = LoadCudaPlugin();
  if (!plugin.ok()) return plugin.status();
  return (*plugin)->create(options);
}

}  // namespace ds
