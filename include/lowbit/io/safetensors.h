#pragma once
// safetensors: an 8-byte little-endian header length N, N bytes of JSON
// ({"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}),
// then the data section; offsets are relative to the data section.
// Format: https://github.com/huggingface/safetensors (README, "Format").
//
// Everything in the header is validated before any byte of data is used (see SafetensorsFile).
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "lowbit/core/dtype.h"
#include "lowbit/core/file.h"

namespace lowbit {

inline constexpr uint64_t kMaxSafetensorsHeader = 100ull << 20;  // 100 MB of JSON header
inline constexpr size_t kMaxTensorRank = 8;
inline constexpr size_t kMaxTensorsPerFile = 1u << 20;

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range within the data section
  int64_t numel() const;
};

// A view of one stored tensor: its description and its bytes (inside a mapped file).
struct TensorView {
  const TensorInfo* info = nullptr;
  const uint8_t* data = nullptr;
  std::filesystem::path file;
  size_t bytes() const { return size_t(info->end - info->begin); }
};

class SafetensorsFile {
 public:
  // Maps and validates the file; throws lowbit::Error naming the file and the problem.
  explicit SafetensorsFile(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return map_.path(); }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // in file order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const TensorInfo* find(const std::string& name) const;
  TensorView view(const TensorInfo& info) const;
  size_t file_size() const { return map_.size(); }
  // Drops the tensor's whole pages from memory (MappedFile::release): its bytes were copied.
  void release(const TensorInfo& info) const { map_.release(data_section_ + info.begin, size_t(info.end - info.begin)); }

 private:
  MappedFile map_;
  const uint8_t* data_section_ = nullptr;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a checkpoint folder: model.safetensors, or the shards that
// model.safetensors.index.json lists (its weight_map must name existing tensors in existing shards).
class TensorStore {
 public:
  explicit TensorStore(const std::filesystem::path& dir);

  const std::filesystem::path& dir() const { return dir_; }
  bool has(const std::string& name) const { return where_.count(name) != 0; }
  // Throws, naming the checkpoint and tensor, when the tensor is missing.
  TensorView get(const std::string& name) const;
  // SafetensorsFile::release of a tensor (no-op for a name it does not have).
  void release(const std::string& name) const;
  std::vector<TensorView> all() const;  // sorted by name
  uint64_t total_bytes() const;         // bytes of tensor data
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

  // Fails, naming the file, tensor and position, when a float tensor holds NaN or Inf.
  static void check_finite(const TensorView& v);
  // Reads a tensor as float32, checking its shape (an empty `shape` accepts any).
  std::vector<float> load_f32(const std::string& name, const std::vector<int64_t>& shape = {}) const;

 private:
  std::filesystem::path dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::pair<size_t, const TensorInfo*>> where_;
};

// Builds a safetensors file; write() goes to a temporary file renamed into place when complete.
class SafetensorsWriter {
 public:
  SafetensorsWriter() = default;
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }
  // From here on add() writes each tensor's bytes to an unnamed scratch file in `dir` (removed when
  // the writer goes) instead of holding them: memory stays flat however large the checkpoint
  // (quantizing a 7B model layer by layer). write() copies them into place.
  void spill_to(const std::filesystem::path& dir);
  // Copies `data` (which must be numel(shape) * dtype_size(dtype) bytes).
  void add(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data, size_t bytes);
  // Refers to `data` without copying it (nor spilling): it must stay valid until write() (e.g. a
  // tensor of a mapped input file passed through unchanged).
  void add_borrowed(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data, size_t bytes);
  // A tensor whose bytes `fill` writes at write() time (one tensor in memory at a time: for
  // checkpoints larger than memory, e.g. lowbit synth's 7B shapes).
  void add_generated(const std::string& name, DType dtype, std::vector<int64_t> shape,
                     std::function<void(uint8_t* out, size_t bytes)> fill);
  void write(const std::filesystem::path& path) const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
    size_t size = 0;  // bytes.size(), or what fill writes
    std::function<void(uint8_t*, size_t)> fill;
    int64_t spill_offset = -1;  // >= 0: the bytes are in the scratch file from here
    const uint8_t* borrowed = nullptr;  // add_borrowed: the caller's bytes
  };
  std::vector<Entry> entries_;
  int spill_fd_ = -1;
  std::filesystem::path spill_dir_;
  uint64_t spill_size_ = 0;
  std::map<std::string, std::string> metadata_;
};

}  // namespace lowbit
