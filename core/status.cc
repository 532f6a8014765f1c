#include "core/status.h"

namespace ds {

absl::Status FormatError(absl::string_view message) { return absl::DataLossError(message); }
absl::Status ContextFullError(absl::string_view message) { return absl::OutOfRangeError(message); }
absl::Status OutOfMemoryError(absl::string_view message) {
  return absl::ResourceExhaustedError(message);
}

}  // namespace ds
