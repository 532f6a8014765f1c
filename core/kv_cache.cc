#include "core/kv_cache.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace ds {

KvCache::KvCache(Backend& backend, int64_t n_layers, std::vector<int64_t> widths, int64_t max_tokens)
    : backend_(backend), n_layers_(n_layers), widths_(std::move(widths)), max_tokens_(max_tokens),
      tensors_(static_cast<size_t>(n_layers)) {}

int64_t KvCache::bytes_per_token() const {
  int64_t per_layer = 0;
  for (int64_t w : widths_) per_layer += w * static_cast<int64_t>(sizeof(float));
  return per_layer * n_layers_;
}

absl::Status KvCache::Reserve(int64_t n_tokens, int64_t n_keep) {
  if (n_tokens <= capacity_) return absl::OkStatus();
  if (n_tokens > max_tokens_)
    return ContextFullError(absl::StrCat("the KV cache holds at most ", max_tokens_, " tokens, ", n_tokens, " asked"));
  const int64_t new_capacity = std::min(max_tokens_, std::max<int64_t>({n_tokens, 2 * capacity_, 256}));
  std::vector<std::vector<Tensor>> grown(tensors_.size());
  for (int64_t layer = 0; layer < n_layers_; ++layer) {
    for (size_t i = 0; i < widths_.size(); ++i) {
      auto t = backend_.Alloc(DType::kF32, new_capacity, widths_[i]);
      if (!t.ok())
        return OutOfMemoryError(absl::StrCat("the KV cache for ", new_capacity, " tokens needs ",
                                             new_capacity * bytes_per_token(), " bytes: ", t.status().message()));
      if (n_keep > 0) {
        Tensor dst = t->Rows(0, n_keep);
        DS_RETURN_IF_ERROR(backend_.Copy(tensors_[layer][i].Rows(0, n_keep), dst));
      }
      grown[layer].push_back(*std::move(t));
    }
  }
  tensors_ = std::move(grown);
  capacity_ = new_capacity;
  ++generation_;
  return absl::OkStatus();
}

}  // namespace ds
