// Reads a small text file of a model folder (config.json, tokenizer.json, ...).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace ds {

// NotFound if it cannot be opened. A symbolic link checked out as a plain file (git without
// symlink support stores the target's relative path as the content) is followed once.
absl::StatusOr<std::string> ReadTextFile(const std::string& path);

}  // namespace ds
