#pragma once
// Writes GGUF version 3 files (ggml docs/gguf.md; the layout GgufFile reads): metadata key/values,
// tensor infos, then each tensor's bytes at a multiple of the alignment (32). Tensor bytes come from
// callbacks at write time, one tensor in memory at a time. The file is written atomically.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace lowbit {

inline constexpr uint32_t kGgmlF32 = 0, kGgmlF16 = 1, kGgmlBF16 = 30;

class GgufWriter {
 public:
  void set_string(const std::string& key, const std::string& v);
  void set_u32(const std::string& key, uint32_t v);
  void set_i32(const std::string& key, int32_t v);
  void set_f32(const std::string& key, float v);
  void set_bool(const std::string& key, bool v);
  void set_strings(const std::string& key, const std::vector<std::string>& v);
  void set_i32s(const std::string& key, const std::vector<int32_t>& v);
  void set_f32s(const std::string& key, const std::vector<float>& v);

  // ne: GGUF order (ne[0] is the contiguous dimension). fill writes exactly `bytes` bytes.
  void add_tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t ggml_type, uint64_t bytes,
                  std::function<void(uint8_t*)> fill);
  void write(const std::filesystem::path& path) const;

 private:
  void key(const std::string& k, uint32_t type);
  std::string kv_;  // serialized key/values
  uint64_t n_kv_ = 0;
  struct Tensor {
    std::string name;
    std::vector<uint64_t> ne;
    uint32_t type;
    uint64_t bytes;
    std::function<void(uint8_t*)> fill;
  };
  std::vector<Tensor> tensors_;
};

}  // namespace lowbit
