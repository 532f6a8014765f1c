// Safetensors checkpoints, read by mmap: one file, or the shards a
// model.safetensors.index.json names. Every size and offset in a header is checked against the
// file before anything points into it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/dtype.h"

namespace ds {

struct TensorEntry {
  std::string name;
  StorageType type;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // into the mapped file, valid while the file is open
  size_t nbytes = 0;
  const std::string* file = nullptr;  // the path it came from, for messages

  int64_t numel() const;
  std::string ShapeString() const;  // "[512, 64]"
};

class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  // Parses a file already in memory (tests and fuzzers); `bytes` must outlive the object.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> FromBytes(const uint8_t* bytes,
                                                                    size_t size,
                                                                    const std::string& name);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorEntry>& tensors() const { return tensors_; }
  const TensorEntry* Find(absl::string_view name) const;

 private:
  SafetensorsFile() = default;
  absl::Status ParseHeader();

  std::string path_;
  const uint8_t* bytes_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
  std::vector<TensorEntry> tensors_;
  std::unordered_map<std::string, size_t> index_;
};

// The shard files a model.safetensors.index.json names, in first-seen order; each is a plain
// file name in the model folder. `path` names the index in messages.
absl::StatusOr<std::vector<std::string>> ParseShardIndex(absl::string_view json_text, const std::string& path);

// All tensors of a model folder.
class Checkpoint {
 public:
  static absl::StatusOr<Checkpoint> Open(const std::string& dir);

  const TensorEntry* Find(absl::string_view name) const;
  // Every tensor of every file, in file order.
  std::vector<const TensorEntry*> AllTensors() const;
  uint64_t TotalBytes() const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::unordered_map<std::string, const TensorEntry*> by_name_;
};

}  // namespace ds
