#include "lowbit/io/gguf_writer.h"

#include <cstring>

#include "lowbit/core/error.h"
#include "lowbit/core/file.h"

namespace lowbit {

namespace {

constexpr uint64_t kAlignment = 32;
// GGUF value types (gguf.h: GgufType).
constexpr uint32_t kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7, kString = 8, kArray = 9;

template <class T>
void put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}
void put_string(std::string& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out += s;
}

}  // namespace

void GgufWriter::key(const std::string& k, uint32_t type) {
  put_string(kv_, k);
  put<uint32_t>(kv_, type);
  ++n_kv_;
}

void GgufWriter::set_string(const std::string& k, const std::string& v) {
  key(k, kString);
  put_string(kv_, v);
}
void GgufWriter::set_u32(const std::string& k, uint32_t v) {
  key(k, kU32);
  put(kv_, v);
}
void GgufWriter::set_i32(const std::string& k, int32_t v) {
  key(k, kI32);
  put(kv_, v);
}
void GgufWriter::set_f32(const std::string& k, float v) {
  key(k, kF32);
  put(kv_, v);
}
void GgufWriter::set_bool(const std::string& k, bool v) {
  key(k, kBool);
  put<uint8_t>(kv_, v ? 1 : 0);
}
void GgufWriter::set_strings(const std::string& k, const std::vector<std::string>& v) {
  key(k, kArray);
  put(kv_, kString);
  put<uint64_t>(kv_, v.size());
  for (const auto& s : v) put_string(kv_, s);
}
void GgufWriter::set_i32s(const std::string& k, const std::vector<int32_t>& v) {
  key(k, kArray);
  put(kv_, kI32);
  put<uint64_t>(kv_, v.size());
  for (int32_t x : v) put(kv_, x);
}
void GgufWriter::set_f32s(const std::string& k, const std::vector<float>& v) {
  key(k, kArray);
  put(kv_, kF32);
  put<uint64_t>(kv_, v.size());
  for (float x : v) put(kv_, x);
}

void GgufWriter::add_tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t bytes,
                            std::function<void(uint8_t*)> fill) {
  for (const auto& t : tensors_)
    if (t.name == name) fail("gguf writer: tensor '{}' added twice", name);
  tensors_.push_back({name, std::move(ne), type, bytes, std::move(fill)});
}

void GgufWriter::write(const std::filesystem::path& path) const {
  std::string head = "GGUF";
  put<uint32_t>(head, 3);
  put<uint64_t>(head, tensors_.size());
  put<uint64_t>(head, n_kv_);
  head += kv_;
  uint64_t offset = 0;
  std::vector<uint64_t> offsets;
  for (const auto& t : tensors_) {
    put_string(head, t.name);
    put<uint32_t>(head, uint32_t(t.ne.size()));
    for (uint64_t d : t.ne) put<uint64_t>(head, d);
    put<uint32_t>(head, t.type);
    put<uint64_t>(head, offset);
    offsets.push_back(offset);
    offset = (offset + t.bytes + kAlignment - 1) / kAlignment * kAlignment;
  }
  head.resize((head.size() + kAlignment - 1) / kAlignment * kAlignment, '\0');
  AtomicFileWriter w(path);
  w.write(head);
  uint64_t at = 0;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const std::string pad(size_t(offsets[i] - at), '\0');
    w.write(pad);
    std::vector<uint8_t> buf(tensors_[i].bytes);
    tensors_[i].fill(buf.data());
    w.write(buf.data(), buf.size());
    at = offsets[i] + tensors_[i].bytes;
  }
  w.commit();
}

}  // namespace lowbit
