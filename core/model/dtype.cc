#include "core/model/dtype.h"

#include <array>
#include <cmath>
#include <cstring>

namespace ds {
namespace {

struct StorageTypeEntry {
  absl::string_view name;
  StorageType type;
  size_t size;
};

constexpr StorageTypeEntry kStorageTypes[] = {
    {"F32", StorageType::kF32, 4},       {"F16", StorageType::kF16, 2},
    {"BF16", StorageType::kBF16, 2},     {"F8_E4M3", StorageType::kF8E4M3, 1},
    {"F64", StorageType::kF64, 8},       {"I64", StorageType::kI64, 8},
    {"I32", StorageType::kI32, 4},       {"I16", StorageType::kI16, 2},
    {"I8", StorageType::kI8, 1},         {"U8", StorageType::kU8, 1},
    {"BOOL", StorageType::kBool, 1},
};

template <typename T>
T LoadUnaligned(const void* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// All 256 E4M3 values, decoded once.
std::array<float, 256> MakeF8E4M3Table() {
  std::array<float, 256> table{};
  for (int bits = 0; bits < 256; ++bits) {
    const int sign = bits >> 7, exponent = (bits >> 3) & 0xf, mantissa = bits & 0x7;
    float v;
    if (exponent == 0xf && mantissa == 0x7) {
      v = std::nanf("");
    } else if (exponent == 0) {
      v = std::ldexp(static_cast<float>(mantissa) / 8.0f, -6);  // subnormal
    } else {
      v = std::ldexp(1.0f + static_cast<float>(mantissa) / 8.0f, exponent - 7);
    }
    table[bits] = sign ? -v : v;
  }
  return table;
}

}  // namespace

std::optional<StorageType> ParseStorageType(absl::string_view name) {
  for (const auto& e : kStorageTypes)
    if (e.name == name) return e.type;
  return std::nullopt;
}

absl::string_view StorageTypeName(StorageType t) {
  for (const auto& e : kStorageTypes)
    if (e.type == t) return e.name;
  return "?";
}

size_t StorageTypeSize(StorageType t) {
  for (const auto& e : kStorageTypes)
    if (e.type == t) return e.size;
  return 0;
}

bool IsFloatStorage(StorageType t) {
  return t == StorageType::kF32 || t == StorageType::kF16 || t == StorageType::kBF16 ||
         t == StorageType::kF8E4M3;
}

float Bf16ToF32(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t F32ToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fff + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}

float F16ToF32(uint16_t bits) {
  const int sign = bits >> 15, exponent = (bits >> 10) & 0x1f, mantissa = bits & 0x3ff;
  float v;
  if (exponent == 0x1f) {
    v = mantissa ? std::nanf("") : INFINITY;
  } else if (exponent == 0) {
    v = std::ldexp(static_cast<float>(mantissa), -24);  // subnormal: m * 2^-14 / 1024
  } else {
    v = std::ldexp(1.0f + static_cast<float>(mantissa) / 1024.0f, exponent - 15);
  }
  return sign ? -v : v;
}

float F8E4M3ToF32(uint8_t bits) {
  static const std::array<float, 256> table = MakeF8E4M3Table();
  return table[bits];
}

void ConvertToF32(StorageType type, const void* src, size_t n, float* dst) {
  const auto* bytes = static_cast<const uint8_t*>(src);
  switch (type) {
    case StorageType::kF32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case StorageType::kBF16:
      for (size_t i = 0; i < n; ++i) dst[i] = Bf16ToF32(LoadUnaligned<uint16_t>(bytes + 2 * i));
      return;
    case StorageType::kF16:
      for (size_t i = 0; i < n; ++i) dst[i] = F16ToF32(LoadUnaligned<uint16_t>(bytes + 2 * i));
      return;
    case StorageType::kF8E4M3:
      for (size_t i = 0; i < n; ++i) dst[i] = F8E4M3ToF32(bytes[i]);
      return;
    default:
      // Callers check IsFloatStorage first; make a mistake visible rather than silent.
      for (size_t i = 0; i < n; ++i) dst[i] = std::nanf("");
  }
}

}  // namespace ds
