#include "backends/backend.h"

#include "absl/strings/str_cat.h"
#include "core/model/quant.h"

namespace ds {

const char* DTypeName(DType t) {
  switch (t) {
    case DType::kF32: return "f32";
    case DType::kI32: return "i32";
    case DType::kBF16: return "bf16";
    case DType::kQ8_0: return "q8_0";
    case DType::kQ4_0: return "q4_0";
  }
  return "?";
}

bool IsBlockQuantized(DType t) { return t == DType::kQ8_0 || t == DType::kQ4_0; }

size_t RowBytes(DType t, int64_t n) {
  const size_t count = static_cast<size_t>(n);
  switch (t) {
    case DType::kF32:
    case DType::kI32:
      return count * 4;
    case DType::kBF16:
      return count * 2;
    case DType::kQ8_0:
      return count / kQuantBlock * sizeof(BlockQ8_0);
    case DType::kQ4_0:
      return count / kQuantBlock * sizeof(BlockQ4_0);
  }
  return 0;
}

absl::Status Backend::GateUp(const Tensor& x, const Tensor& gate_proj, const Tensor& up_proj, const Tensor& y) {
  auto up = Alloc(DType::kF32, x.rows, up_proj.rows);
  if (!up.ok()) return up.status();
  if (absl::Status s = Matmul(x, gate_proj, nullptr, y); !s.ok()) return s;
  if (absl::Status s = Matmul(x, up_proj, nullptr, *up); !s.ok()) return s;
  return SiluMul(y, *up, y);
}

absl::Status Backend::AddRmsNorm(const Tensor& a, const Tensor& b, const Tensor& weight, float eps, const Tensor& sum,
                                 const Tensor& normed) {
  if (absl::Status s = Add(a, b, sum); !s.ok()) return s;
  return RmsNorm(sum, weight, eps, normed);
}

absl::Status Backend::WriteRows(const Tensor& src, const Tensor& dst, const Position& at) {
  return Copy(src, dst.Rows(at.pos0, src.rows));
}

absl::Status Backend::BeginRecording() {
  return absl::UnimplementedError(absl::StrCat(name(), ": this backend cannot record passes"));
}

absl::StatusOr<std::unique_ptr<Backend::Recording>> Backend::EndRecording() {
  return absl::UnimplementedError(absl::StrCat(name(), ": this backend cannot record passes"));
}

Tensor Tensor::Rows(int64_t begin, int64_t n) const {
  Tensor t = *this;
  t.data = static_cast<char*>(data) + static_cast<size_t>(begin) * RowBytes(dtype, stride);
  t.rows = n;
  return t;
}

Tensor Tensor::Cols(int64_t begin, int64_t n) const {
  Tensor t = *this;
  t.data = static_cast<char*>(data) + RowBytes(dtype, begin);
  t.cols = n;
  return t;
}

}  // namespace ds
