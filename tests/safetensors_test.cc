// The safetensors reader on hostile headers: every bad size or offset is a format error.
#include <cstring>
#include <string>

#include "core/model/safetensors.h"
#include "gtest/gtest.h"

namespace ds {
namespace {

std::string File(const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + std::string(data_bytes, '\x01');
}

absl::Status Parse(const std::string& bytes) {
  return SafetensorsFile::FromBytes(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "t.safetensors").status();
}

TEST(Safetensors, ReadsAWellFormedFile) {
  const std::string f = File(R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]}})", 32);
  auto file = SafetensorsFile::FromBytes(reinterpret_cast<const uint8_t*>(f.data()), f.size(), "t");
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ((*file)->tensors().size(), 2u);
  const TensorEntry* b = (*file)->Find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->type, StorageType::kBF16);
  EXPECT_EQ(b->nbytes, 8u);
  EXPECT_EQ((*file)->Find("c"), nullptr);
}

TEST(Safetensors, RejectsBadHeaders) {
  struct Case { std::string bytes; const char* mention; };
  const Case cases[] = {
      {std::string("\x05\x00\x00", 3), "too small"},
      {File("{", 0), "not a JSON object"},
      {std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8) + "{}", "header length"},
      {File(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4), "point past"},
      {File(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "needs 12"},
      {File(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8), "point past"},
      {File(R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", 8), "unknown dtype"},
      {File(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8), "unsigned"},
      {File(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8), "too large"},
      {File(R"({"a":{"dtype":"F32","shape":[2]}})", 8), "data_offsets"},
      {File(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", 8), "dtype"},
      {File(R"({"a":[1,2]})", 8), "not an object"},
  };
  for (const auto& c : cases) {
    const absl::Status s = Parse(c.bytes);
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << c.mention << ": " << s;
    EXPECT_NE(s.message().find(c.mention), absl::string_view::npos) << s;
  }
}

}  // namespace
}  // namespace ds
