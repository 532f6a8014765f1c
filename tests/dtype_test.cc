// Conversions against values from the format definitions (IEEE 754 half, bfloat16, OCP FP8).
#include <cmath>

#include "core/model/dtype.h"
#include "gtest/gtest.h"

namespace ds {
namespace {

TEST(Dtype, Bf16IsTheTopHalfOfAFloat) {
  EXPECT_EQ(Bf16ToF32(0x3f80), 1.0f);
  EXPECT_EQ(Bf16ToF32(0xc000), -2.0f);
  EXPECT_EQ(Bf16ToF32(0x3e20), 0.15625f);
}

TEST(Dtype, F16NormalsSubnormalsAndSpecials) {
  EXPECT_EQ(F16ToF32(0x3c00), 1.0f);
  EXPECT_EQ(F16ToF32(0xc100), -2.5f);
  EXPECT_EQ(F16ToF32(0x7bff), 65504.0f);
  EXPECT_EQ(F16ToF32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(F16ToF32(0x8000), -0.0f);
  EXPECT_TRUE(std::isinf(F16ToF32(0x7c00)));
  EXPECT_TRUE(std::isnan(F16ToF32(0x7e00)));
}

TEST(Dtype, F8E4M3fnAsTorchDecodesIt) {
  EXPECT_EQ(F8E4M3ToF32(0x38), 1.0f);                    // exponent 7 = bias
  EXPECT_EQ(F8E4M3ToF32(0x7e), 448.0f);                  // the largest finite value
  EXPECT_EQ(F8E4M3ToF32(0xfe), -448.0f);
  EXPECT_EQ(F8E4M3ToF32(0x01), std::ldexp(1.0f, -9));    // smallest subnormal
  EXPECT_EQ(F8E4M3ToF32(0x08), std::ldexp(1.0f, -6));    // smallest normal
  EXPECT_EQ(F8E4M3ToF32(0x3c), 1.5f);
  EXPECT_TRUE(std::isnan(F8E4M3ToF32(0x7f)));            // no infinities in "fn"
  EXPECT_TRUE(std::isnan(F8E4M3ToF32(0xff)));
  EXPECT_EQ(F8E4M3ToF32(0x78), 256.0f);                  // exponent 15 is a number, not inf
}

TEST(Dtype, ConvertReadsUnalignedInput) {
  const unsigned char bytes[] = {0xff, 0x80, 0x3f, 0x00, 0x40};  // bf16 1.0, 2.0 at offset 1
  float out[2];
  ConvertToF32(StorageType::kBF16, bytes + 1, 2, out);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], 2.0f);
}

TEST(Dtype, NamesRoundTrip) {
  for (const char* name : {"F32", "F16", "BF16", "F8_E4M3", "I64", "BOOL"}) {
    auto t = ParseStorageType(name);
    ASSERT_TRUE(t.has_value()) << name;
    EXPECT_EQ(StorageTypeName(*t), name);
  }
  EXPECT_FALSE(ParseStorageType("F8_E5M3").has_value());
}

}  // namespace
}  // namespace ds
