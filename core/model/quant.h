// Weight-only quantization: the block formats the CPU backend stores int8 and int4 weights in.
// They are ggml's Q8_0 and Q4_0 byte for byte (a public format), so a model has the same bits per
// weight here as in llama.cpp: each row is cut into blocks of 32 weights, each block one f16
// scale d and 32 codes, w = d * q.
//   Q8_0: 2 + 32 bytes, q in [-127, 127]                    8.5 bits per weight
//   Q4_0: 2 + 16 bytes, q in [-8, 7] stored as q + 8, element i in the low nibble of byte i and
//         element i + 16 in the high nibble                 4.5 bits per weight
#pragma once

#include <cstddef>
#include <cstdint>

#include "backends/backend.h"

namespace ds {

constexpr int64_t kQuantBlock = 32;

struct BlockQ8_0 {
  uint16_t d;  // f16
  int8_t q[kQuantBlock];
};
static_assert(sizeof(BlockQ8_0) == 34);

struct BlockQ4_0 {
  uint16_t d;  // f16
  uint8_t q[kQuantBlock / 2];
};
static_assert(sizeof(BlockQ4_0) == 18);

uint16_t F32ToF16(float f);  // round to nearest even, saturating to ±inf as IEEE

// n (a multiple of kQuantBlock) floats into n / kQuantBlock blocks. Each block's scale maps its
// largest magnitude onto the largest code: 127 for Q8_0; -8 for Q4_0, with the sign of the
// value of largest magnitude (ggml's rule: the extreme lands exactly on a code).
// 32 values as int8 codes: returns the scale d = amax / 127, codes round(v / d). Q8_0 weights and
// the activations of the int8 dot products both use it.
float QuantizeBlockInt8(const float* v, int8_t* q);

void QuantizeRowQ8_0(const float* x, int64_t n, BlockQ8_0* out);
void QuantizeRowQ4_0(const float* x, int64_t n, BlockQ4_0* out);
void DequantizeRowQ8_0(const BlockQ8_0* blocks, int64_t n, float* out);
void DequantizeRowQ4_0(const BlockQ4_0* blocks, int64_t n, float* out);

// One row of n floats stored as a weight format (f32, bf16, Q8_0, Q4_0: RowBytes(dtype, n) bytes
// at out), and such a row read back as floats.
void NarrowRow(DType dtype, const float* row, int64_t n, void* out);
void WidenRow(DType dtype, const void* row, int64_t n, float* out);

}  // namespace ds
