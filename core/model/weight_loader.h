// Hands a checkpoint's tensors to a backend in the dtype the engine keeps them in,
// checking each one's presence, dtype and shape, and dequantizing DeepSeek's block-scaled FP8.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "backends/backend.h"
#include "core/model/config.h"
#include "core/model/safetensors.h"

namespace ds {

// done bytes, total bytes, stage
using ProgressFn = std::function<void(uint64_t, uint64_t, const char*)>;

class WeightLoader {
 public:
  // Matrices are stored as `matrix_dtype`: f32, or bf16 / Q8_0 / Q4_0 to cut the bytes decode
  // reads (a matrix whose rows are not whole blocks of 32 falls back from Q8_0/Q4_0 to bf16);
  // vectors, and matrices asked for with KeepF32, stay f32.
  WeightLoader(const Checkpoint& checkpoint, const ModelConfig& config, Backend& backend,
               ProgressFn progress, DType matrix_dtype = DType::kF32);

  bool Has(const std::string& name) const { return checkpoint_.Find(name) != nullptr; }

  // The tensor as float32 on the host; `shape` is what the model expects ({n} or {rows, cols}).
  absl::StatusOr<std::vector<float>> ReadF32(const std::string& name, std::vector<int64_t> shape);
  // A host matrix onto the backend.
  absl::StatusOr<Tensor> Upload(const std::vector<float>& host, int64_t rows, int64_t cols,
                                DType dtype = DType::kF32);
  // ReadF32 + Upload: a matrix [rows, cols], or a vector [n] as a [1, n] tensor.
  enum Precision { kModelDtype, kKeepF32 };
  absl::StatusOr<Tensor> Matrix(const std::string& name, int64_t rows, int64_t cols,
                                Precision precision = kModelDtype);
  absl::StatusOr<Tensor> Vector(const std::string& name, int64_t n);
  // Several checkpoint matrices (or vectors) stacked along the rows into one tensor, in order:
  // {name, rows} each. Fused projections (q|k|v) run as one matmul.
  absl::StatusOr<Tensor> StackedMatrix(const std::vector<std::pair<std::string, int64_t>>& parts, int64_t cols);
  absl::StatusOr<Tensor> StackedVector(const std::vector<std::pair<std::string, int64_t>>& parts);

  DType matrix_dtype() const { return matrix_dtype_; }
  uint64_t n_parameters() const { return n_parameters_; }
  uint64_t weight_bytes() const { return weight_bytes_; }

 private:
  void Report(const TensorEntry& t);
  // The entry for `name`, checked: present, of `shape`, a float type.
  absl::StatusOr<const TensorEntry*> Find(const std::string& name, const std::vector<int64_t>& shape) const;
  // Matrices stored in the checkpoint exactly as the backend keeps them (bf16 as bf16, f32 as
  // f32) go up straight from the mapped file, stacked by rows: no float32 copy on the way
  // (most of a bf16 checkpoint's load time). nullopt where any part needs converting.
  absl::StatusOr<std::optional<Tensor>> UploadAsStored(const std::vector<std::pair<std::string, int64_t>>& parts,
                                                       int64_t cols, DType dtype);

  const Checkpoint& checkpoint_;
  const ModelConfig& config_;
  Backend& backend_;
  ProgressFn progress_;
  DType matrix_dtype_;
  uint64_t total_bytes_;
  uint64_t done_bytes_ = 0;
  uint64_t n_parameters_ = 0;
  uint64_t weight_bytes_ = 0;
};

}  // namespace ds
