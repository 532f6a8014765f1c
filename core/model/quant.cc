#include "core/model/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/model/dtype.h"

namespace ds {

uint16_t F32ToF16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds past 65504: inf
  if (abs < 0x38800000u) {  // below f16's smallest normal: a subnormal (or zero)
    float a;
    std::memcpy(&a, &abs, 4);
    // Subnormal steps are 2^-24; nearbyint rounds to nearest even in the default mode.
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(a * 16777216.0f)));
  }
  // Normal: rebias the exponent (127 -> 15) and round the 23-bit mantissa to 10 bits, to even.
  const uint32_t rebased = abs - ((127u - 15u) << 23);
  const uint32_t rounded = rebased + 0xfffu + ((rebased >> 13) & 1u);
  return static_cast<uint16_t>(sign | (rounded >> 13));
}

float QuantizeBlockInt8(const float* v, int8_t* q) {
  float amax = 0;
  for (int64_t i = 0; i < kQuantBlock; ++i) amax = std::max(amax, std::fabs(v[i]));
  const float d = amax / 127.0f;
  const float inv = d != 0 ? 1.0f / d : 0.0f;
  for (int64_t i = 0; i < kQuantBlock; ++i) q[i] = static_cast<int8_t>(std::nearbyint(v[i] * inv));
  return d;
}

void QuantizeRowQ8_0(const float* x, int64_t n, BlockQ8_0* out) {
  for (int64_t b = 0; b < n / kQuantBlock; ++b) out[b].d = F32ToF16(QuantizeBlockInt8(x + b * kQuantBlock, out[b].q));
}

void QuantizeRowQ4_0(const float* x, int64_t n, BlockQ4_0* out) {
  constexpr int64_t kHalf = kQuantBlock / 2;
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    const float* v = x + b * kQuantBlock;
    float extreme = 0;  // the value of largest magnitude, with its sign
    for (int64_t i = 0; i < kQuantBlock; ++i)
      if (std::fabs(v[i]) > std::fabs(extreme)) extreme = v[i];
    const float d = extreme / -8.0f;
    const float inv = d != 0 ? 1.0f / d : 0.0f;
    out[b].d = F32ToF16(d);
    auto code = [&](float value) {
      return static_cast<uint8_t>(std::clamp(static_cast<int>(std::nearbyint(value * inv)) + 8, 0, 15));
    };
    for (int64_t i = 0; i < kHalf; ++i)
      out[b].q[i] = static_cast<uint8_t>(code(v[i]) | (code(v[i + kHalf]) << 4));
  }
}

void DequantizeRowQ8_0(const BlockQ8_0* blocks, int64_t n, float* out) {
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    const float d = F16ToF32(blocks[b].d);
    for (int64_t i = 0; i < kQuantBlock; ++i) out[b * kQuantBlock + i] = d * blocks[b].q[i];
  }
}

void DequantizeRowQ4_0(const BlockQ4_0* blocks, int64_t n, float* out) {
  constexpr int64_t kHalf = kQuantBlock / 2;
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    const float d = F16ToF32(blocks[b].d);
    for (int64_t i = 0; i < kHalf; ++i) {
      out[b * kQuantBlock + i] = d * ((blocks[b].q[i] & 0xf) - 8);
      out[b * kQuantBlock + i + kHalf] = d * ((blocks[b].q[i] >> 4) - 8);
    }
  }
}

void NarrowRow(DType dtype, const float* row, int64_t n, void* out) {
  switch (dtype) {
    case DType::kF32: std::memcpy(out, row, static_cast<size_t>(n) * sizeof(float)); return;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) static_cast<uint16_t*>(out)[i] = F32ToBf16(row[i]);
      return;
    case DType::kQ8_0: QuantizeRowQ8_0(row, n, static_cast<BlockQ8_0*>(out)); return;
    case DType::kQ4_0: QuantizeRowQ4_0(row, n, static_cast<BlockQ4_0*>(out)); return;
    case DType::kI32: break;
  }
  std::memset(out, 0xff, RowBytes(dtype, n));  // not a weight format: make the mistake visible
}

void WidenRow(DType dtype, const void* row, int64_t n, float* out) {
  switch (dtype) {
    case DType::kF32: std::memcpy(out, row, static_cast<size_t>(n) * sizeof(float)); return;
    case DType::kBF16: ConvertToF32(StorageType::kBF16, row, static_cast<size_t>(n), out); return;
    case DType::kQ8_0: DequantizeRowQ8_0(static_cast<const BlockQ8_0*>(row), n, out); return;
    case DType::kQ4_0: DequantizeRowQ4_0(static_cast<const BlockQ4_0*>(row), n, out); return;
    case DType::kI32: break;
  }
  std::fill(out, out + n, std::nanf(""));  // not a weight format: make the mistake visible
}

}  // namespace ds
