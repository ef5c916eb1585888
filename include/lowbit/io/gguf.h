#pragma once
// GGUF (llama.cpp's model file, versions 2 and 3, little-endian) read strictly: every length and
// count is checked against the bytes that remain and against fixed caps before it is used, so a
// truncated or hostile file gives a lowbit::Error naming the file, the offset and the problem.
//
// Layout (ggml docs/gguf.md):
//   "GGUF" u32 version, u64 n_tensors, u64 n_kv
//   n_kv x  { string key, u32 type, value }          string = u64 length + bytes (no NUL)
//   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset }
//   padding to general.alignment (default 32), then tensor data; offsets are relative to it.
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "lowbit/core/file.h"

namespace lowbit {

enum class GgufType : uint32_t {
  uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6, boolean = 7,
  string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12,
};
std::string_view gguf_type_name(GgufType t);

// One metadata value. Scalars: unsigned types (and bool) in `u`, signed in `i`, floats in `f`,
// strings in `s`. Arrays (of one non-array type; nested arrays are rejected) in the vector that
// matches their element type, with elem_type saying which.
struct GgufValue {
  GgufType type = GgufType::uint8;
  GgufType elem_type = GgufType::uint8;  // arrays only
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0;
  std::string s;
  std::vector<uint64_t> uints;   // uint8/16/32/64 and bool arrays
  std::vector<int64_t> ints;     // int8/16/32/64 arrays
  std::vector<double> floats;    // float32/64 arrays
  std::vector<std::string> strings;
  size_t array_size() const;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> ne;  // GGUF order: ne[0] is the contiguous (innermost) dimension
  uint32_t ggml_type = 0;
  uint64_t offset = 0;       // from the start of the data section
  uint64_t nbytes = 0;
};

// Block size (elements) and bytes per block of a ggml tensor type; false for unknown types.
bool ggml_type_layout(uint32_t ggml_type, uint64_t* block_elems, uint64_t* block_bytes);

class GgufFile {
 public:
  // Caps on what a file may declare (far above any real model, far below what breaks us).
  static constexpr uint64_t kMaxKv = uint64_t(1) << 20;
  static constexpr uint64_t kMaxTensors = uint64_t(1) << 20;
  static constexpr uint64_t kMaxStringBytes = uint64_t(1) << 24;  // one key or string value
  static constexpr uint64_t kMaxArrayElems = uint64_t(1) << 28;
  static constexpr uint32_t kMaxDims = 4;

  explicit GgufFile(const std::filesystem::path& path);

  uint32_t version() const { return version_; }
  const std::filesystem::path& path() const { return map_.path(); }
  const std::map<std::string, GgufValue>& metadata() const { return kv_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  uint64_t alignment() const { return alignment_; }
  const uint8_t* tensor_data(const GgufTensorInfo& t) const { return data_ + t.offset; }

  // nullptr when absent.
  const GgufValue* find(std::string_view key) const;
  // Typed getters: fail (naming the file and key) when the key is absent or of another type.
  // get_uint/get_int accept any integer type whose value fits; get_float any float type.
  std::string get_string(std::string_view key) const;
  uint64_t get_uint(std::string_view key) const;
  int64_t get_int(std::string_view key) const;
  double get_float(std::string_view key) const;
  bool get_bool(std::string_view key) const;
  std::vector<std::string> get_string_array(std::string_view key) const;
  std::vector<int64_t> get_int_array(std::string_view key) const;  // any integer element type
  std::vector<double> get_float_array(std::string_view key) const;  // any float element type

 private:
  const GgufValue& need(std::string_view key) const;

  MappedFile map_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::map<std::string, GgufValue> kv_;
  std::vector<GgufTensorInfo> tensors_;
  const uint8_t* data_ = nullptr;
};

}  // namespace lowbit
