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
