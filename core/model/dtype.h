// The element types a checkpoint may store, and their conversion to float32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include "absl/strings/string_view.h"

namespace ds {

enum class StorageType { kF32, kF16, kBF16, kF8E4M3, kF64, kI64, kI32, kI16, kI8, kU8, kBool };

// The safetensors name ("F32", "BF16", "F8_E4M3", ...), or nullopt for one we do not know.
std::optional<StorageType> ParseStorageType(absl::string_view name);
absl::string_view StorageTypeName(StorageType t);
size_t StorageTypeSize(StorageType t);
// Whether ConvertToF32 reads it: the floating-point types weights come in.
bool IsFloatStorage(StorageType t);

float Bf16ToF32(uint16_t bits);
// Round to nearest even (NaN stays NaN).
uint16_t F32ToBf16(float f);
float F16ToF32(uint16_t bits);
// OCP FP8 E4M3 ("fn": no infinities, 0x7f/0xff are NaN, max 448), as torch.float8_e4m3fn.
float F8E4M3ToF32(uint8_t bits);

// Converts n elements of a float storage type to float32. `src` may be unaligned.
void ConvertToF32(StorageType type, const void* src, size_t n, float* dst);

}  // namespace ds
