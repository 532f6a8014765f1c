// Error kinds used inside the engine. Everything returns absl::Status / absl::StatusOr; the
// C ABI (core/api) maps the absl codes below to ds_status exactly once.
#pragma once

#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace ds {

// A file that exists but is malformed (bad header, offsets past the end, wrong shape or dtype).
absl::Status FormatError(absl::string_view message);
// The tokens do not fit the session's context.
absl::Status ContextFullError(absl::string_view message);
// An allocation failed.
absl::Status OutOfMemoryError(absl::string_view message);

inline bool IsFormatError(const absl::Status& s) { return s.code() == absl::StatusCode::kDataLoss; }

}  // namespace ds

#define DS_RETURN_IF_ERROR(expr)              \
  do {                                        \
    if (absl::Status _st = (expr); !_st.ok()) \
      return _st;                             \
  } while (0)

#define DS_CONCAT_INNER(a, b) a##b
#define DS_CONCAT(a, b) DS_CONCAT_INNER(a, b)
#define DS_ASSIGN_OR_RETURN(lhs, expr) DS_ASSIGN_OR_RETURN_IMPL(DS_CONCAT(_statusor_, __LINE__), lhs, expr)
#define DS_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(*tmp)
