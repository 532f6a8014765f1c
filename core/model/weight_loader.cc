#include "core/model/weight_loader.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/model/quant.h"
#include "core/status.h"

namespace ds {

WeightLoader::WeightLoader(const Checkpoint& checkpoint, const ModelConfig& config,
                           Backend& backend, ProgressFn progress, DType matrix_dtype)
    : checkpoint_(checkpoint),
      config_(config),
      backend_(backend),
      progress_(std::move(progress)),
      matrix_dtype_(matrix_dtype),
      total_bytes_(checkpoint.TotalBytes()) {}

void WeightLoader::Report(const TensorEntry& t) {
  done_bytes_ += t.nbytes;
  if (progress_) progress_(done_bytes_, total_bytes_, "loading weights");
}

absl::StatusOr<const TensorEntry*> WeightLoader::Find(const std::string& name,
                                                      const std::vector<int64_t>& shape) const {
  const TensorEntry* t = checkpoint_.Find(name);
  if (!t)
    return absl::NotFoundError(absl::StrCat(checkpoint_.dir(), ": tensor '", name,
                                            "' is missing from the checkpoint"));
  if (t->shape != shape)
    return FormatError(absl::StrCat(*t->file, ": tensor '", name, "' has shape ", t->ShapeString(),
                                    ", the config implies [", absl::StrJoin(shape, ", "), "]"));
  if (!IsFloatStorage(t->type))
    return FormatError(absl::StrCat(*t->file, ": tensor '", name, "' has dtype ",
                                    StorageTypeName(t->type),
                                    ", expected a float type (F32, BF16, F16, F8_E4M3)"));
  return t;
}

absl::StatusOr<std::vector<float>> WeightLoader::ReadF32(const std::string& name,
                                                         std::vector<int64_t> shape) {
  DS_ASSIGN_OR_RETURN(const TensorEntry* t, Find(name, shape));
  std::vector<float> out(static_cast<size_t>(t->numel()));
  ConvertToF32(t->type, t->data, out.size(), out.data());
  Report(*t);
  if (t->type != StorageType::kF8E4M3) return out;

  // DeepSeek's FP8: w = fp8 * weight_scale_inv[i / block_rows][j / block_cols].
  if (shape.size() != 2)
    return FormatError(absl::StrCat(*t->file, ": FP8 tensor '", name, "' must be 2-D"));
  const int64_t rows = shape[0], cols = shape[1];
  const int64_t br = config_.weight_block_rows, bc = config_.weight_block_cols;
  const std::string scale_name = name + "_scale_inv";
  const TensorEntry* s = checkpoint_.Find(scale_name);
  if (!s)
    return FormatError(absl::StrCat(*t->file, ": FP8 tensor '", name, "' has no '", scale_name, "'"));
  const std::vector<int64_t> scale_shape{(rows + br - 1) / br, (cols + bc - 1) / bc};
  if (s->shape != scale_shape || !IsFloatStorage(s->type) || s->type == StorageType::kF8E4M3)
    return FormatError(absl::StrCat(*s->file, ": '", scale_name, "' is ", StorageTypeName(s->type),
                                    " ", s->ShapeString(), ", expected F32 or BF16 [",
                                    absl::StrJoin(scale_shape, ", "), "] for ", br, "x", bc, " blocks"));
  std::vector<float> scale(static_cast<size_t>(s->numel()));
  ConvertToF32(s->type, s->data, scale.size(), scale.data());
  Report(*s);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) out[i * cols + j] *= scale[(i / br) * scale_shape[1] + j / bc];
  return out;
}

// Rows that are not whole blocks of 32 cannot be block-quantized: such a matrix is kept in bf16.
static DType KeptDtype(DType dtype, int64_t cols) {
  return IsBlockQuantized(dtype) && cols % kQuantBlock != 0 ? DType::kBF16 : dtype;
}

absl::StatusOr<std::optional<Tensor>> WeightLoader::UploadAsStored(
    const std::vector<std::pair<std::string, int64_t>>& parts, int64_t cols, DType dtype) {
  dtype = KeptDtype(dtype, cols);
  int64_t rows = 0;
  std::vector<const TensorEntry*> entries;
  for (const auto& [name, n] : parts) {
    DS_ASSIGN_OR_RETURN(const TensorEntry* t, Find(name, {n, cols}));
    const bool same = (t->type == StorageType::kBF16 && dtype == DType::kBF16) ||
                      (t->type == StorageType::kF32 && dtype == DType::kF32);
    if (!same) return std::nullopt;
    entries.push_back(t);
    rows += n;
  }
  DS_ASSIGN_OR_RETURN(Tensor t, backend_.Alloc(dtype, rows, cols));
  int64_t row = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    DS_RETURN_IF_ERROR(backend_.Upload(entries[i]->data, t.Rows(row, parts[i].second)));
    row += parts[i].second;
    Report(*entries[i]);
  }
  n_parameters_ += static_cast<uint64_t>(rows * cols);
  weight_bytes_ += t.nbytes();
  return t;
}

absl::StatusOr<Tensor> WeightLoader::Upload(const std::vector<float>& host, int64_t rows, int64_t cols,
                                            DType dtype) {
  dtype = KeptDtype(dtype, cols);
  DS_ASSIGN_OR_RETURN(Tensor t, backend_.Alloc(dtype, rows, cols));
  if (dtype != DType::kF32) {
    std::vector<char> stored(t.nbytes());
    const size_t row_bytes = RowBytes(dtype, cols);
    for (int64_t r = 0; r < rows; ++r) NarrowRow(dtype, host.data() + r * cols, cols, stored.data() + r * row_bytes);
    DS_RETURN_IF_ERROR(backend_.Upload(stored.data(), t));
  } else {
    DS_RETURN_IF_ERROR(backend_.Upload(host.data(), t));
  }
  n_parameters_ += static_cast<uint64_t>(rows * cols);
  weight_bytes_ += t.nbytes();
  return t;
}

absl::StatusOr<Tensor> WeightLoader::Matrix(const std::string& name, int64_t rows, int64_t cols,
                                            Precision precision) {
  const DType dtype = precision == kKeepF32 ? DType::kF32 : matrix_dtype_;
  DS_ASSIGN_OR_RETURN(std::optional<Tensor> stored, UploadAsStored({{name, rows}}, cols, dtype));
  if (stored) return *std::move(stored);
  DS_ASSIGN_OR_RETURN(std::vector<float> host, ReadF32(name, {rows, cols}));
  return Upload(host, rows, cols, dtype);
}

absl::StatusOr<Tensor> WeightLoader::Vector(const std::string& name, int64_t n) {
  DS_ASSIGN_OR_RETURN(std::vector<float> host, ReadF32(name, {n}));
  return Upload(host, 1, n);
}

absl::StatusOr<Tensor> WeightLoader::StackedMatrix(const std::vector<std::pair<std::string, int64_t>>& parts,
                                                   int64_t cols) {
  DS_ASSIGN_OR_RETURN(std::optional<Tensor> stored, UploadAsStored(parts, cols, matrix_dtype_));
  if (stored) return *std::move(stored);
  std::vector<float> host;
  int64_t rows = 0;
  for (const auto& [name, n] : parts) {
    DS_ASSIGN_OR_RETURN(std::vector<float> part, ReadF32(name, {n, cols}));
    host.insert(host.end(), part.begin(), part.end());
    rows += n;
  }
  return Upload(host, rows, cols, matrix_dtype_);
}

absl::StatusOr<Tensor> WeightLoader::StackedVector(const std::vector<std::pair<std::string, int64_t>>& parts) {
  std::vector<float> host;
  for (const auto& [name, n] : parts) {
    DS_ASSIGN_OR_RETURN(std::vector<float> part, ReadF32(name, {n}));
    host.insert(host.end(), part.begin(), part.end());
  }
  return Upload(host, 1, static_cast<int64_t>(host.size()));
}

}  // namespace ds
