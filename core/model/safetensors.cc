#include "core/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/model/text_file.h"
#include "core/status.h"
#include "nlohmann/json.hpp"

namespace ds {
namespace {

using json = nlohmann::json;

// A header larger than this is not a checkpoint header (real ones are a few MB at most).
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

bool MulOverflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}

}  // namespace

int64_t TensorEntry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorEntry::ShapeString() const {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", strerror(errno)));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return absl::NotFoundError(absl::StrCat(path, ": cannot stat: ", strerror(errno)));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return FormatError(absl::StrCat(path, ": ", size, " bytes is too small for a safetensors file"));
  }
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) return absl::InternalError(absl::StrCat(path, ": mmap failed: ", strerror(errno)));
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->bytes_ = static_cast<const uint8_t*>(p);
  file->size_ = size;
  file->mapped_ = true;
  DS_RETURN_IF_ERROR(file->ParseHeader());
  return file;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::FromBytes(
    const uint8_t* bytes, size_t size, const std::string& name) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = name;
  file->bytes_ = bytes;
  file->size_ = size;
  if (size < 8) return FormatError(absl::StrCat(name, ": ", size, " bytes is too small for a safetensors file"));
  DS_RETURN_IF_ERROR(file->ParseHeader());
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapped_) ::munmap(const_cast<uint8_t*>(bytes_), size_);
}

absl::Status SafetensorsFile::ParseHeader() {
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes_[i];
  if (header_len > size_ - 8 || header_len > kMaxHeaderBytes)
    return FormatError(absl::StrCat(path_, ": header length ", header_len,
                                    " does not fit the file of ", size_, " bytes"));
  const char* text = reinterpret_cast<const char*>(bytes_ + 8);
  json header = json::parse(text, text + header_len, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object())
    return FormatError(absl::StrCat(path_, ": the header is not a JSON object"));

  const uint8_t* data = bytes_ + 8 + header_len;
  const uint64_t data_size = size_ - 8 - header_len;
  tensors_.reserve(header.size());
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") continue;
    const std::string where = absl::StrCat(path_, ": tensor '", name, "'");
    if (!info.is_object()) return FormatError(absl::StrCat(where, ": entry is not an object"));
    const auto dtype_it = info.find("dtype");
    const auto shape_it = info.find("shape");
    const auto offsets_it = info.find("data_offsets");
    if (dtype_it == info.end() || !dtype_it->is_string())
      return FormatError(absl::StrCat(where, ": missing 'dtype'"));
    if (shape_it == info.end() || !shape_it->is_array())
      return FormatError(absl::StrCat(where, ": missing 'shape'"));
    if (offsets_it == info.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
        !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned())
      return FormatError(absl::StrCat(where, ": 'data_offsets' must be two unsigned integers"));

    TensorEntry e;
    e.name = name;
    const std::string dtype = dtype_it->get<std::string>();
    const auto type = ParseStorageType(dtype);
    if (!type) return FormatError(absl::StrCat(where, ": unknown dtype '", dtype, "'"));
    e.type = *type;
    uint64_t numel = 1;
    for (const auto& d : *shape_it) {
      if (!d.is_number_unsigned())
        return FormatError(absl::StrCat(where, ": shape entries must be unsigned integers"));
      const uint64_t dim = d.get<uint64_t>();
      if (dim > (uint64_t{1} << 40) || MulOverflows(numel, dim, &numel))
        return FormatError(absl::StrCat(where, ": shape is too large"));
      e.shape.push_back(static_cast<int64_t>(dim));
    }
    uint64_t nbytes = 0;
    if (MulOverflows(numel, StorageTypeSize(e.type), &nbytes))
      return FormatError(absl::StrCat(where, ": shape is too large"));
    const uint64_t begin = (*offsets_it)[0].get<uint64_t>();
    const uint64_t end = (*offsets_it)[1].get<uint64_t>();
    if (begin > end || end > data_size)
      return FormatError(absl::StrCat(where, ": data_offsets [", begin, ", ", end,
                                      ") point past the data section of ", data_size, " bytes"));
    if (end - begin != nbytes)
      return FormatError(absl::StrCat(where, ": data_offsets hold ", end - begin, " bytes but ",
                                      dtype, " ", e.ShapeString(), " needs ", nbytes));
    e.data = data + begin;
    e.nbytes = nbytes;
    e.file = &path_;
    tensors_.push_back(std::move(e));
  }
  for (size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
  return absl::OkStatus();
}

const TensorEntry* SafetensorsFile::Find(absl::string_view name) const {
  const auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<std::vector<std::string>> ParseShardIndex(absl::string_view json_text, const std::string& path) {
  const json j = json::parse(json_text.data(), json_text.data() + json_text.size(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    return FormatError(absl::StrCat(path, ": expected an object with a 'weight_map'"));
  std::vector<std::string> shards;
  std::map<std::string, bool> seen;
  for (const auto& [tensor, file] : j["weight_map"].items()) {
    if (!file.is_string())
      return FormatError(absl::StrCat(path, ": weight_map['", tensor, "'] is not a file name"));
    const std::string f = file.get<std::string>();
    // A shard is a file in this folder, nothing else.
    if (f.empty() || f.find('/') != std::string::npos || f.find('\0') != std::string::npos || f == "." || f == "..")
      return FormatError(absl::StrCat(path, ": shard name '", f, "' is not a file in the model folder"));
    if (!seen[f]) {
      seen[f] = true;
      shards.push_back(f);
    }
  }
  if (shards.empty()) return FormatError(absl::StrCat(path, ": weight_map is empty"));
  return shards;
}

absl::StatusOr<Checkpoint> Checkpoint::Open(const std::string& dir) {
  namespace fs = std::filesystem;
  Checkpoint ckpt;
  ckpt.dir_ = dir;
  const fs::path root(dir);
  const fs::path single = root / "model.safetensors";
  const fs::path index = root / "model.safetensors.index.json";
  std::error_code ec;
  std::vector<std::string> shard_names;
  if (fs::exists(index, ec)) {
    auto text = ReadTextFile(index.string());
    if (!text.ok()) return text.status();
    DS_ASSIGN_OR_RETURN(shard_names, ParseShardIndex(*text, index.string()));
  } else if (fs::exists(single, ec)) {
    shard_names.push_back("model.safetensors");
  } else if (!fs::is_directory(root, ec)) {
    return absl::NotFoundError(absl::StrCat(dir, ": no such model folder"));
  } else {
    return absl::NotFoundError(
        absl::StrCat(dir, ": no model.safetensors or model.safetensors.index.json in the folder"));
  }
  for (const auto& name : shard_names) {
    DS_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open((root / name).string()));
    ckpt.files_.push_back(std::move(file));
  }
  for (const auto& file : ckpt.files_) {
    for (const auto& t : file->tensors()) {
      if (!ckpt.by_name_.emplace(t.name, &t).second)
        return FormatError(absl::StrCat(file->path(), ": tensor '", t.name, "' appears in two shards"));
    }
  }
  return ckpt;
}

const TensorEntry* Checkpoint::Find(absl::string_view name) const {
  const auto it = by_name_.find(std::string(name));
  return it == by_name_.end() ? nullptr : it->second;
}

std::vector<const TensorEntry*> Checkpoint::AllTensors() const {
  std::vector<const TensorEntry*> all;
  for (const auto& f : files_)
    for (const auto& t : f->tensors()) all.push_back(&t);
  return all;
}

uint64_t Checkpoint::TotalBytes() const {
  uint64_t total = 0;
  for (const auto& f : files_)
    for (const auto& t : f->tensors()) total += t.nbytes;
  return total;
}

}  // namespace ds
