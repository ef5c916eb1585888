#include "lowbit/io/gguf.h"

#include <cstring>
#include <limits>
#include <set>

#include "lowbit/core/error.h"

namespace lowbit {

std::string_view gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::uint8: return "uint8";
    case GgufType::int8: return "int8";
    case GgufType::uint16: return "uint16";
    case GgufType::int16: return "int16";
    case GgufType::uint32: return "uint32";
    case GgufType::int32: return "int32";
    case GgufType::float32: return "float32";
    case GgufType::boolean: return "bool";
    case GgufType::string: return "string";
    case GgufType::array: return "array";
    case GgufType::uint64: return "uint64";
    case GgufType::int64: return "int64";
    case GgufType::float64: return "float64";
  }
  return "unknown";
}

size_t GgufValue::array_size() const {
  return uints.size() + ints.size() + floats.size() + strings.size();
}

bool ggml_type_layout(uint32_t type, uint64_t* block_elems, uint64_t* block_bytes) {
  // ggml's type numbers and block layouts (ggml/include/ggml.h, ggml/src/ggml-common.h);
  // removed numbers (4, 5, 31-33, 36-38) are unknown.
  struct Layout {
    uint32_t type;
    uint64_t elems, bytes;
  };
  static constexpr Layout kLayouts[] = {
      {0, 1, 4},      // F32
      {1, 1, 2},      // F16
      {2, 32, 18},    // Q4_0
      {3, 32, 20},    // Q4_1
      {6, 32, 22},    // Q5_0
      {7, 32, 24},    // Q5_1
      {8, 32, 34},    // Q8_0
      {9, 32, 36},    // Q8_1
      {10, 256, 84},  // Q2_K
      {11, 256, 110}, // Q3_K
      {12, 256, 144}, // Q4_K
      {13, 256, 176}, // Q5_K
      {14, 256, 210}, // Q6_K
      {15, 256, 292}, // Q8_K
      {16, 256, 66},  // IQ2_XXS
      {17, 256, 74},  // IQ2_XS
      {18, 256, 98},  // IQ3_XXS
      {19, 256, 50},  // IQ1_S
      {20, 32, 18},   // IQ4_NL
      {21, 256, 110}, // IQ3_S
      {22, 256, 82},  // IQ2_S
      {23, 256, 136}, // IQ4_XS
      {24, 1, 1},     // I8
      {25, 1, 2},     // I16
      {26, 1, 4},     // I32
      {27, 1, 8},     // I64
      {28, 1, 8},     // F64
      {29, 256, 56},  // IQ1_M
      {30, 1, 2},     // BF16
      {34, 256, 54},  // TQ1_0
      {35, 256, 66},  // TQ2_0
      {39, 32, 17},   // MXFP4
  };
  for (const Layout& l : kLayouts) {
    if (l.type == type) {
      *block_elems = l.elems, *block_bytes = l.bytes;
      return true;
    }
  }
  return false;
}

namespace {

// A bounds-checked little-endian cursor over the mapped file.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size, std::string file) : p_(data), size_(size), file_(std::move(file)) {}

  size_t offset() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  void need(uint64_t n, std::string_view what) const {
    if (n > remaining())
      fail("{}: truncated at offset {}: {} needs {} bytes but only {} remain", file_, pos_, what, n, remaining());
  }
  template <typename T>
  T read(std::string_view what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));  // the file is little-endian, as is every host we build for
    pos_ += sizeof(T);
    return v;
  }
  std::string read_string(std::string_view what) {
    const size_t at = pos_;
    const uint64_t n = read<uint64_t>(what);
    if (n > GgufFile::kMaxStringBytes)
      fail("{}: {} at offset {} declares a length of {} bytes, above the limit of {} (corrupt file?)", file_, what, at,
           n, GgufFile::kMaxStringBytes);
    if (n > remaining())
      fail("{}: {} at offset {} declares a length of {} bytes, past the end of the file ({} bytes remain)", file_,
           what, at, n, remaining());
    std::string s(reinterpret_cast<const char*>(p_ + pos_), size_t(n));
    pos_ += size_t(n);
    return s;
  }
  const std::string& file() const { return file_; }

 private:
  const uint8_t* p_;
  size_t size_, pos_ = 0;
  std::string file_;
};

bool is_valid_type(uint32_t t) { return t <= uint32_t(GgufType::float64); }

// Smallest encoded size of one element, to bound array counts by the bytes that remain.
uint64_t min_elem_bytes(GgufType t) {
  switch (t) {
    case GgufType::uint8: case GgufType::int8: case GgufType::boolean: return 1;
    case GgufType::uint16: case GgufType::int16: return 2;
    case GgufType::uint32: case GgufType::int32: case GgufType::float32: return 4;
    default: return 8;  // 64-bit scalars; strings are at least their u64 length
  }
}

// Reads one scalar of type t into v (v.type is set by the caller).
void read_scalar(Reader& r, GgufType t, const std::string& key, uint64_t* u, int64_t* i, double* f, std::string* s) {
  const std::string what = "value of '" + key + "'";
  switch (t) {
    case GgufType::uint8: *u = r.read<uint8_t>(what); break;
    case GgufType::uint16: *u = r.read<uint16_t>(what); break;
    case GgufType::uint32: *u = r.read<uint32_t>(what); break;
    case GgufType::uint64: *u = r.read<uint64_t>(what); break;
    case GgufType::int8: *i = r.read<int8_t>(what); break;
    case GgufType::int16: *i = r.read<int16_t>(what); break;
    case GgufType::int32: *i = r.read<int32_t>(what); break;
    case GgufType::int64: *i = r.read<int64_t>(what); break;
    case GgufType::float32: *f = r.read<float>(what); break;
    case GgufType::float64: *f = r.read<double>(what); break;
    case GgufType::boolean: {
      const size_t at = r.offset();
      const uint8_t b = r.read<uint8_t>(what);
      if (b > 1) fail("{}: bool {} at offset {} is {}, not 0 or 1", r.file(), what, at, b);
      *u = b;
      break;
    }
    case GgufType::string: *s = r.read_string(what); break;
    case GgufType::array: break;  // handled by the caller
  }
}

bool is_unsigned(GgufType t) {
  return t == GgufType::uint8 || t == GgufType::uint16 || t == GgufType::uint32 || t == GgufType::uint64 ||
         t == GgufType::boolean;
}
bool is_signed(GgufType t) {
  return t == GgufType::int8 || t == GgufType::int16 || t == GgufType::int32 || t == GgufType::int64;
}
bool is_float(GgufType t) { return t == GgufType::float32 || t == GgufType::float64; }

}  // namespace

GgufFile::GgufFile(const std::filesystem::path& path) : map_(path) {
  Reader r(map_.data(), map_.size(), path.string());
  const std::string& file = r.file();
  r.need(4, "the magic \"GGUF\"");
  if (std::memcmp(map_.data(), "GGUF", 4) != 0) fail("{}: not a GGUF file (the first 4 bytes are not \"GGUF\")", file);
  r.read<uint32_t>("magic");
  version_ = r.read<uint32_t>("the version");
  if (version_ == 1) fail("{}: GGUF version 1 is not supported (convert it again with a newer llama.cpp)", file);
  if (version_ != 2 && version_ != 3) {
    if ((version_ & 0xFFFF) == 0 && version_ != 0)
      fail("{}: GGUF version field is {:#x}: a big-endian file? Only little-endian GGUF is supported", file, version_);
    fail("{}: unsupported GGUF version {} (lowbit reads versions 2 and 3)", file, version_);
  }
  const uint64_t n_tensors = r.read<uint64_t>("the tensor count");
  const uint64_t n_kv = r.read<uint64_t>("the metadata count");
  if (n_tensors > kMaxTensors) fail("{}: header declares {} tensors, above the limit of {} (corrupt file?)", file, n_tensors, kMaxTensors);
  if (n_kv > kMaxKv) fail("{}: header declares {} metadata entries, above the limit of {} (corrupt file?)", file, n_kv, kMaxKv);

  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key = r.read_string(fmt::format("key of metadata entry {}", k));
    if (key.empty()) fail("{}: metadata entry {} has an empty key", file, k);
    const size_t type_at = r.offset();
    const uint32_t type = r.read<uint32_t>("value type of '" + key + "'");
    if (!is_valid_type(type)) fail("{}: metadata '{}' has unknown value type {} at offset {}", file, key, type, type_at);
    GgufValue v;
    v.type = GgufType(type);
    if (v.type == GgufType::array) {
      const size_t elem_at = r.offset();
      const uint32_t et = r.read<uint32_t>("array type of '" + key + "'");
      if (!is_valid_type(et)) fail("{}: metadata '{}' is an array of unknown type {} at offset {}", file, key, et, elem_at);
      v.elem_type = GgufType(et);
      if (v.elem_type == GgufType::array) fail("{}: metadata '{}' is an array of arrays, which lowbit does not read", file, key);
      const size_t count_at = r.offset();
      const uint64_t count = r.read<uint64_t>("array length of '" + key + "'");
      if (count > kMaxArrayElems)
        fail("{}: metadata '{}' declares {} array elements at offset {}, above the limit of {} (corrupt file?)", file,
             key, count, count_at, kMaxArrayElems);
      if (count > r.remaining() / min_elem_bytes(v.elem_type))
        fail("{}: metadata '{}' declares {} array elements of {} at offset {}, more than the {} bytes left in the file "
             "can hold (truncated?)", file, key, count, gguf_type_name(v.elem_type), count_at, r.remaining());
      auto& vec_u = v.uints;
      auto& vec_i = v.ints;
      auto& vec_f = v.floats;
      auto& vec_s = v.strings;
      if (is_unsigned(v.elem_type)) vec_u.reserve(count);
      else if (is_signed(v.elem_type)) vec_i.reserve(count);
      else if (is_float(v.elem_type)) vec_f.reserve(count);
      else vec_s.reserve(count);
      for (uint64_t e = 0; e < count; ++e) {
        uint64_t u = 0;
        int64_t i = 0;
        double f = 0;
        std::string s;
        read_scalar(r, v.elem_type, key, &u, &i, &f, &s);
        if (is_unsigned(v.elem_type)) vec_u.push_back(u);
        else if (is_signed(v.elem_type)) vec_i.push_back(i);
        else if (is_float(v.elem_type)) vec_f.push_back(f);
        else vec_s.push_back(std::move(s));
      }
    } else {
      read_scalar(r, v.type, key, &v.u, &v.i, &v.f, &v.s);
    }
    if (!kv_.emplace(key, std::move(v)).second) fail("{}: metadata key '{}' appears twice", file, key);
  }

  if (const GgufValue* a = find("general.alignment")) {
    if (a->type != GgufType::uint32) fail("{}: general.alignment must be uint32, found {}", file, gguf_type_name(a->type));
    if (a->u == 0 || (a->u & (a->u - 1)) != 0 || a->u > 1024 * 1024)
      fail("{}: general.alignment is {}, not a power of two up to 1 MiB", file, a->u);
    alignment_ = a->u;
  }

  std::set<std::string> names;
  tensors_.reserve(n_tensors);
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensorInfo t;
    t.name = r.read_string(fmt::format("name of tensor {}", k));
    if (t.name.empty()) fail("{}: tensor {} has an empty name", file, k);
    if (!names.insert(t.name).second) fail("{}: tensor '{}' appears twice", file, t.name);
    const uint32_t n_dims = r.read<uint32_t>("dimension count of tensor '" + t.name + "'");
    if (n_dims == 0 || n_dims > kMaxDims) fail("{}: tensor '{}' has {} dimensions; expected 1 to {}", file, t.name, n_dims, kMaxDims);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t ne = r.read<uint64_t>("shape of tensor '" + t.name + "'");
      if (ne > uint64_t(std::numeric_limits<int64_t>::max()) || !checked_mul(numel, ne, &numel))
        fail("{}: tensor '{}' has dimension {} = {}: the element count overflows", file, t.name, d, ne);
      t.ne.push_back(ne);
    }
    t.ggml_type = r.read<uint32_t>("type of tensor '" + t.name + "'");
    uint64_t block_elems = 0, block_bytes = 0;
    if (!ggml_type_layout(t.ggml_type, &block_elems, &block_bytes))
      fail("{}: tensor '{}' has unknown ggml type {}", file, t.name, t.ggml_type);
    if (t.ne[0] % block_elems != 0)
      fail("{}: tensor '{}': its first dimension {} is not a multiple of the type's block of {}", file, t.name, t.ne[0], block_elems);
    if (!checked_mul(numel / block_elems, block_bytes, &t.nbytes))
      fail("{}: tensor '{}': its byte size overflows", file, t.name);
    t.offset = r.read<uint64_t>("offset of tensor '" + t.name + "'");
    if (t.offset % alignment_ != 0)
      fail("{}: tensor '{}' has offset {}, not a multiple of the alignment {}", file, t.name, t.offset, alignment_);
    tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment (a vocab-only file may end before it).
  uint64_t data_start = (uint64_t(r.offset()) + alignment_ - 1) / alignment_ * alignment_;
  const uint64_t data_size = data_start <= map_.size() ? map_.size() - data_start : 0;
  for (const auto& t : tensors_) {
    uint64_t end = 0;
    if (!checked_add(t.offset, t.nbytes, &end) || end > data_size)
      fail("{}: tensor '{}' (offset {}, {} bytes) runs past the end of the data section ({} bytes): file truncated?",
           file, t.name, t.offset, t.nbytes, data_size);
  }
  data_ = map_.data() + std::min<uint64_t>(data_start, map_.size());
}

const GgufValue* GgufFile::find(std::string_view key) const {
  auto it = kv_.find(std::string(key));
  return it == kv_.end() ? nullptr : &it->second;
}

const GgufValue& GgufFile::need(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) fail("{}: metadata key '{}' is missing", path().string(), key);
  return *v;
}

std::string GgufFile::get_string(std::string_view key) const {
  const GgufValue& v = need(key);
  if (v.type != GgufType::string) fail("{}: metadata '{}' is {}, expected a string", path().string(), key, gguf_type_name(v.type));
  return v.s;
}

uint64_t GgufFile::get_uint(std::string_view key) const {
  const GgufValue& v = need(key);
  if (is_unsigned(v.type) && v.type != GgufType::boolean) return v.u;
  if (is_signed(v.type) && v.i >= 0) return uint64_t(v.i);
  fail("{}: metadata '{}' is {}, expected a non-negative integer", path().string(), key, gguf_type_name(v.type));
}

int64_t GgufFile::get_int(std::string_view key) const {
  const GgufValue& v = need(key);
  if (is_signed(v.type)) return v.i;
  if (is_unsigned(v.type) && v.type != GgufType::boolean && v.u <= uint64_t(std::numeric_limits<int64_t>::max()))
    return int64_t(v.u);
  fail("{}: metadata '{}' is {}, expected an integer", path().string(), key, gguf_type_name(v.type));
}

double GgufFile::get_float(std::string_view key) const {
  const GgufValue& v = need(key);
  if (!is_float(v.type)) fail("{}: metadata '{}' is {}, expected a float", path().string(), key, gguf_type_name(v.type));
  return v.f;
}

bool GgufFile::get_bool(std::string_view key) const {
  const GgufValue& v = need(key);
  if (v.type != GgufType::boolean) fail("{}: metadata '{}' is {}, expected a bool", path().string(), key, gguf_type_name(v.type));
  return v.u != 0;
}

std::vector<std::string> GgufFile::get_string_array(std::string_view key) const {
  const GgufValue& v = need(key);
  if (v.type != GgufType::array || v.elem_type != GgufType::string)
    fail("{}: metadata '{}' is {}, expected an array of strings", path().string(), key, gguf_type_name(v.type));
  return v.strings;
}

std::vector<int64_t> GgufFile::get_int_array(std::string_view key) const {
  const GgufValue& v = need(key);
  if (v.type == GgufType::array && is_signed(v.elem_type)) return v.ints;
  if (v.type == GgufType::array && is_unsigned(v.elem_type) && v.elem_type != GgufType::boolean) {
    std::vector<int64_t> out;
    out.reserve(v.uints.size());
    for (uint64_t u : v.uints) {
      if (u > uint64_t(std::numeric_limits<int64_t>::max())) fail("{}: metadata '{}' holds {}, too large", path().string(), key, u);
      out.push_back(int64_t(u));
    }
    return out;
  }
  fail("{}: metadata '{}' is {}, expected an array of integers", path().string(), key, gguf_type_name(v.type));
}

std::vector<double> GgufFile::get_float_array(std::string_view key) const {
  const GgufValue& v = need(key);
  if (v.type == GgufType::array && is_float(v.elem_type)) return v.floats;
  fail("{}: metadata '{}' is {}, expected an array of floats", path().string(), key, gguf_type_name(v.type));
}

}  // namespace lowbit
