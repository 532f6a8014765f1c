#include "backends/backend.h"

namespace ds {

size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kBF16:
      return 2;
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

Tensor Tensor::Rows(int64_t begin, int64_t n) const {
  Tensor t = *this;
  t.data = static_cast<char*>(data) + static_cast<size_t>(begin * stride) * DTypeSize(dtype);
  t.rows = n;
  return t;
}

Tensor Tensor::Cols(int64_t begin, int64_t n) const {
  Tensor t = *this;
  t.data = static_cast<char*>(data) + static_cast<size_t>(begin) * DTypeSize(dtype);
  t.cols = n;
  return t;
}

}  // namespace ds
