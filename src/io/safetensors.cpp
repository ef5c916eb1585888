#include "lowbit/io/safetensors.h"
#include "lowbit/io/json.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "lowbit/core/error.h"
#include "lowbit/core/numerics.h"

namespace lowbit {

using nlohmann::json;

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path) : map_(path) {
  const std::string file = path.string();
  if (map_.size() < 8)
    fail("{}: truncated safetensors file: {} bytes, need at least 8 for the header length", file, map_.size());
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | map_.data()[i];
  if (header_len > kMaxSafetensorsHeader)
    fail("{}: header length {} exceeds the limit of {} bytes (corrupt or hostile file)", file, header_len,
         kMaxSafetensorsHeader);
  if (header_len > map_.size() - 8)
    fail("{}: header length {} runs past the end of the file ({} bytes): file truncated?", file, header_len,
         map_.size());
  if (header_len < 2) fail("{}: header length {} is too small for a JSON object", file, header_len);
  const char* hdr = reinterpret_cast<const char*>(map_.data() + 8);
  data_section_ = map_.data() + 8 + header_len;
  const uint64_t data_size = map_.size() - 8 - header_len;

  json j;
  try {
    j = parse_json(std::string_view(hdr, size_t(header_len)), file);
  } catch (const json::exception& e) {
    fail("{}: header is not valid JSON: {}", file, e.what());
  }
  if (!j.is_object()) fail("{}: header must be a JSON object, found {}", file, j.type_name());
  if (j.size() > kMaxTensorsPerFile) fail("{}: header lists {} entries, more than the limit {}", file, j.size(), kMaxTensorsPerFile);

  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail("{}: __metadata__ must be an object of strings, found {}", file, v.type_name());
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          fail("{}: __metadata__ value of '{}' must be a string, found {}", file, m.key(), m.value().type_name());
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) fail("{}: tensor '{}': entry must be an object, found {}", file, name, v.type_name());
    TensorInfo t;
    t.name = name;
    auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string()) fail("{}: tensor '{}': missing string field 'dtype'", file, name);
    auto dtype = dtype_from_name(dt->get<std::string>());
    if (!dtype)
      fail("{}: tensor '{}': unknown dtype '{}' (expected F32, F16, BF16, I8, U8, I32, I64 or F64)", file, name,
           dt->get<std::string>());
    t.dtype = *dtype;
    auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array()) fail("{}: tensor '{}': missing array field 'shape'", file, name);
    if (sh->size() > kMaxTensorRank) fail("{}: tensor '{}': rank {} exceeds the limit {}", file, name, sh->size(), kMaxTensorRank);
    uint64_t numel = 1;
    for (const auto& d : *sh) {
      if (!d.is_number_unsigned())
        fail("{}: tensor '{}': shape entries must be non-negative integers, found {}", file, name, d.dump());
      uint64_t dim = d.get<uint64_t>();
      if (dim > (uint64_t(1) << 40) || !checked_mul(numel, dim, &numel))
        fail("{}: tensor '{}': shape {} overflows", file, name, sh->dump());
      t.shape.push_back(int64_t(dim));
    }
    auto off = v.find("data_offsets");
    if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      fail("{}: tensor '{}': 'data_offsets' must be [begin, end] with non-negative integers", file, name);
    t.begin = (*off)[0].get<uint64_t>();
    t.end = (*off)[1].get<uint64_t>();
    if (t.begin > t.end) fail("{}: tensor '{}': data_offsets begin {} > end {}", file, name, t.begin, t.end);
    if (t.end > data_size)
      fail("{}: tensor '{}': data_offsets [{}, {}] run past the data section ({} bytes): file truncated?", file, name,
           t.begin, t.end, data_size);
    uint64_t want = 0;
    if (!checked_mul(numel, dtype_size(t.dtype), &want) || want != t.end - t.begin)
      fail("{}: tensor '{}': shape {} of {} needs {} bytes but data_offsets give {}", file, name, sh->dump(),
           dtype_name(t.dtype), numel * dtype_size(t.dtype), t.end - t.begin);
    tensors_.push_back(std::move(t));
  }

  // No two tensors may share bytes.
  std::vector<const TensorInfo*> by_offset;
  for (const auto& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](auto* a, auto* b) { return a->begin != b->begin ? a->begin < b->begin : a->end < b->end; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const auto* a = by_offset[i - 1];
    const auto* b = by_offset[i];
    if (b->begin < a->end)
      fail("{}: tensors '{}' [{}, {}] and '{}' [{}, {}] overlap", file, a->name, a->begin, a->end, b->name, b->begin,
           b->end);
  }
  std::sort(tensors_.begin(), tensors_.end(), [](const auto& a, const auto& b) { return a.begin < b.begin; });
  for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

TensorView SafetensorsFile::view(const TensorInfo& info) const {
  return TensorView{&info, data_section_ + info.begin, map_.path()};
}

TensorStore::TensorStore(const std::filesystem::path& dir) : dir_(dir) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir)) fail("{}: not a checkpoint folder (expected a folder with config.json and *.safetensors)", dir.string());
  const fs::path single = dir / "model.safetensors";
  const fs::path index = dir / "model.safetensors.index.json";
  if (fs::exists(single)) {
    files_.push_back(std::make_unique<SafetensorsFile>(single));
    for (const auto& t : files_[0]->tensors()) where_[t.name] = {0, &t};
    return;
  }
  if (!fs::exists(index)) fail("{}: no model.safetensors or model.safetensors.index.json", dir.string());
  json j;
  try {
    j = parse_json(read_file(index, 64u << 20), index.string());
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", index.string(), e.what());
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    fail("{}: expected an object with a 'weight_map' object", index.string());
  std::map<std::string, size_t> shard_index;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    if (!it.value().is_string()) fail("{}: weight_map['{}'] must be a file name", index.string(), it.key());
    std::string shard = it.value().get<std::string>();
    if (shard.empty() || shard.size() > 255 || shard.find('/') != std::string::npos ||
        shard.find("..") != std::string::npos || shard.find('\0') != std::string::npos)
      fail("{}: weight_map['{}'] = '{}' must be a plain file name (at most 255 bytes) inside the folder", index.string(),
           it.key(), shard);
    auto s = shard_index.find(shard);
    if (s == shard_index.end()) {
      std::error_code ec;
      if (!fs::exists(dir / shard, ec))
        fail("{}: shard '{}' (for tensor '{}') does not exist", index.string(), shard, it.key());
      files_.push_back(std::make_unique<SafetensorsFile>(dir / shard));
      s = shard_index.emplace(shard, files_.size() - 1).first;
    }
    const TensorInfo* t = files_[s->second]->find(it.key());
    if (!t) fail("{}: tensor '{}' is listed in the index but not in shard {}", index.string(), it.key(), shard);
    where_[it.key()] = {s->second, t};
  }
}

TensorView TensorStore::get(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail("{}: missing tensor '{}'", dir_.string(), name);
  return files_[it->second.first]->view(*it->second.second);
}

void TensorStore::release(const std::string& name) const {
  if (auto it = where_.find(name); it != where_.end()) files_[it->second.first]->release(*it->second.second);
}

std::vector<TensorView> TensorStore::all() const {
  std::vector<TensorView> out;
  for (const auto& [name, w] : where_) out.push_back(files_[w.first]->view(*w.second));
  return out;
}

uint64_t TensorStore::total_bytes() const {
  uint64_t n = 0;
  for (const auto& [name, w] : where_) n += w.second->end - w.second->begin;
  return n;
}

static std::string shape_str(const std::vector<int64_t>& s) {
  return fmt::format("[{}]", fmt::join(s, ", "));
}

std::vector<float> TensorStore::load_f32(const std::string& name, const std::vector<int64_t>& shape) const {
  TensorView v = get(name);
  if (!shape.empty() && v.info->shape != shape)
    fail("{}: tensor '{}' has shape {}, expected {} from config.json", v.file.string(), name, shape_str(v.info->shape),
         shape_str(shape));
  switch (v.info->dtype) {
    case DType::F32: case DType::F16: case DType::BF16: break;
    default:
      fail("{}: tensor '{}' has dtype {}, expected a float type (F32, F16, BF16)", v.file.string(), name,
           dtype_name(v.info->dtype));
  }
  check_finite(v);
  std::vector<float> out(size_t(v.info->numel()));
  convert_to_f32(v.info->dtype, v.data, out.data(), out.size());
  return out;
}

void TensorStore::check_finite(const TensorView& v) {
  const DType t = v.info->dtype;
  if (t != DType::F32 && t != DType::F16 && t != DType::BF16) return;
  const uint32_t mask = t == DType::F32 ? 0x7f800000u : t == DType::F16 ? 0x7c00u : 0x7f80u;
  const int64_t bad = find_non_finite_bits(v.data, size_t(v.info->numel()), dtype_size(t), mask);
  if (bad < 0) return;
  float value = 0;
  convert_to_f32(t, v.data + size_t(bad) * dtype_size(t), &value, 1);
  const auto& sh = v.info->shape;
  const std::string where = sh.size() == 2 ? fmt::format("row {}, column {}", bad / sh[1], bad % sh[1])
                                           : fmt::format("flat index {}", bad);
  fail("{}: tensor '{}' holds a non-finite value ({}) at {} (a corrupt or diverged checkpoint)", v.file.string(),
       v.info->name, value, where);
}

namespace {

// Bytes of a tensor of this dtype and shape; checks the shape and that the name is new.
template <class Entries>
size_t checked_entry_bytes(const Entries& entries, const std::string& name, DType dtype, const std::vector<int64_t>& shape) {
  uint64_t numel = 1;
  for (auto d : shape) {
    if (d < 0 || !checked_mul(numel, uint64_t(d), &numel)) fail("safetensors writer: tensor '{}': bad shape", name);
  }
  for (const auto& e : entries)
    if (e.name == name) fail("safetensors writer: tensor '{}' added twice", name);
  return size_t(numel * dtype_size(dtype));
}

}  // namespace

SafetensorsWriter::~SafetensorsWriter() {
  if (spill_fd_ >= 0) ::close(spill_fd_);
}

void SafetensorsWriter::spill_to(const std::filesystem::path& dir) {
  if (spill_fd_ >= 0) return;
  const std::filesystem::path d = dir.empty() ? std::filesystem::path(".") : dir;
  spill_fd_ = ::open(d.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (spill_fd_ < 0) {  // file systems without O_TMPFILE: a named file, unlinked at once
    std::string tmpl = (d / ".lowbit-spill-XXXXXX").string();
    spill_fd_ = ::mkostemp(tmpl.data(), O_CLOEXEC);
    if (spill_fd_ >= 0) ::unlink(tmpl.c_str());
  }
  if (spill_fd_ < 0) fail("{}: cannot create a scratch file for the output tensors: {}", d.string(), std::strerror(errno));
  spill_dir_ = d;
}

void SafetensorsWriter::add(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data,
                            size_t bytes) {
  const size_t want = checked_entry_bytes(entries_, name, dtype, shape);
  if (want != bytes) fail("safetensors writer: tensor '{}': shape needs {} bytes, got {}", name, want, bytes);
  const auto* p = static_cast<const uint8_t*>(data);
  if (spill_fd_ < 0) {
    entries_.push_back(Entry{name, dtype, std::move(shape), std::vector<uint8_t>(p, p + bytes), bytes, {}, -1, nullptr});
    return;
  }
  for (size_t done = 0; done < bytes;) {
    const ssize_t n = ::pwrite(spill_fd_, p + done, bytes - done, off_t(spill_size_ + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      fail("{}: writing tensor '{}' to the scratch file failed: {}", spill_dir_.string(), name,
           n < 0 ? std::strerror(errno) : "no space written");
    done += size_t(n);
  }
  entries_.push_back(Entry{name, dtype, std::move(shape), {}, bytes, {}, int64_t(spill_size_), nullptr});
  spill_size_ += bytes;
}

void SafetensorsWriter::add_borrowed(const std::string& name, DType dtype, std::vector<int64_t> shape,
                                     const void* data, size_t bytes) {
  const size_t want = checked_entry_bytes(entries_, name, dtype, shape);
  if (want != bytes) fail("safetensors writer: tensor '{}': shape needs {} bytes, got {}", name, want, bytes);
  entries_.push_back(Entry{name, dtype, std::move(shape), {}, bytes, {}, -1, static_cast<const uint8_t*>(data)});
}

void SafetensorsWriter::add_generated(const std::string& name, DType dtype, std::vector<int64_t> shape,
                                      std::function<void(uint8_t*, size_t)> fill) {
  const size_t bytes = checked_entry_bytes(entries_, name, dtype, shape);
  entries_.push_back(Entry{name, dtype, std::move(shape), {}, bytes, std::move(fill), -1, nullptr});
}

void SafetensorsWriter::write(const std::filesystem::path& path) const {
  json header = json::object();
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  uint64_t offset = 0;
  for (const auto& e : entries_) {
    header[e.name] = {{"dtype", std::string(dtype_name(e.dtype))},
                      {"shape", e.shape},
                      {"data_offsets", {offset, offset + e.size}}};
    offset += e.size;
  }
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');  // keep the data section 8-byte aligned
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(text.size()) >> (8 * i));
  AtomicFileWriter w(path);
  w.write(len, 8);
  w.write(text);
  std::vector<uint8_t> chunk;
  for (const auto& e : entries_) {
    if (e.spill_offset >= 0) {  // copied back from the scratch file in pieces of up to 16 MB
      chunk.resize(std::min<size_t>(e.size, size_t(16) << 20));
      for (size_t done = 0; done < e.size;) {
        const size_t want = std::min(chunk.size(), e.size - done);
        const ssize_t n = ::pread(spill_fd_, chunk.data(), want, off_t(uint64_t(e.spill_offset) + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0)
          fail("{}: reading tensor '{}' back from the scratch file failed: {}", spill_dir_.string(), e.name,
               n < 0 ? std::strerror(errno) : "unexpected end");
        w.write(chunk.data(), size_t(n));
        done += size_t(n);
      }
      continue;
    }
    if (e.borrowed) {
      w.write(e.borrowed, e.size);
      continue;
    }
    if (!e.fill) {
      w.write(e.bytes.data(), e.bytes.size());
      continue;
    }
    std::vector<uint8_t> buf(e.size);
    e.fill(buf.data(), buf.size());
    w.write(buf.data(), buf.size());
  }
  w.commit();
}

}  // namespace lowbit
