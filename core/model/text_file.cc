#include "core/model/text_file.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace ds {
namespace {

absl::StatusOr<std::string> ReadAll(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path.string(), ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  auto text = ReadAll(path);
  if (!text.ok()) return text;
  const std::string& t = *text;
  const bool looks_like_link = !t.empty() && t.size() < 1024 && t.find_first_of("{\n") == std::string::npos;
  if (looks_like_link) {
    const auto target = std::filesystem::path(path).parent_path() / t;
    std::error_code ec;
    if (std::filesystem::is_regular_file(target, ec)) return ReadAll(target);
  }
  return text;
}

}  // namespace ds
