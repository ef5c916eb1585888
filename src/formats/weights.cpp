#include "lowbit/formats/weights.h"
#include "lowbit/io/json.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "lowbit/core/aligned.h"
#include "lowbit/core/env.h"
#include "lowbit/core/error.h"

namespace lowbit {

using nlohmann::json;

int64_t LogicalTensor::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

QuantError measure_quant_error(const float* x, const float* y, size_t n) {
  double err = 0, sig = 0, mx = 0;
  for (size_t i = 0; i < n; ++i) {
    double d = double(x[i]) - double(y[i]);
    err += d * d;
    sig += double(x[i]) * double(x[i]);
    mx = std::max(mx, std::fabs(d));
  }
  QuantError e;
  e.mse = n ? err / double(n) : 0;
  e.max_abs = mx;
  e.sqnr_db = err > 0 ? 10 * std::log10(sig / err) : (sig > 0 ? INFINITY : 0);
  return e;
}

namespace {

template <typename T>
T field(const json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end()) fail("{}: missing field '{}'", where, key);
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    fail("{}: field '{}' has the wrong type: {}", where, key, it->dump());
  }
}

}  // namespace

WeightStore::WeightStore(const std::filesystem::path& dir) : store_(std::make_shared<const TensorStore>(dir)) {
  // Quantized tensors first (from each file's metadata), then every tensor not a part of one.
  std::map<std::string, std::string> part_owner;
  for (const auto& file : store_->files()) {
    for (const auto& [key, value] : file->metadata()) {
      if (key.rfind(kQuantMetaPrefix, 0) != 0) continue;
      const std::string name = key.substr(kQuantMetaPrefix.size());
      const std::string where = fmt::format("{}: __metadata__ '{}'", file->path().string(), key);
      json j;
      try {
        j = parse_json(value, where);
      } catch (const json::exception& e) {
        fail("{}: not valid JSON: {}", where, e.what());
      }
      if (!j.is_object()) fail("{}: expected a JSON object", where);
      LogicalTensor t;
      t.name = name;
      t.format = field<std::string>(j, "format", where);
      const FormatTraits& traits = find_format(t.format);
      t.spec.bits = field<int>(j, "bits", where);
      if (t.spec.bits < traits.min_bits || t.spec.bits > traits.max_bits)
        fail("{}: bits {} outside {}'s range {}..{}", where, t.spec.bits, t.format, traits.min_bits, traits.max_bits);
      t.spec.group = field<int64_t>(j, "group", where);
      if (t.spec.group < -1) fail("{}: group {} must be -1, 0 or positive", where, t.spec.group);
      t.spec.double_quant = j.value("double_quant", false);
      t.transposed = j.value("transposed", false);
      t.scheme = j.value("scheme", "");
      t.spec.iterations = j.value("iterations", 20);
      t.shape = field<std::vector<int64_t>>(j, "shape", where);
      if (t.shape.size() != 2 || t.shape[0] <= 0 || t.shape[1] <= 0 || t.shape[0] > (int64_t(1) << 31) ||
          t.shape[1] > (int64_t(1) << 31))
        fail("{}: shape must be [rows, cols] with positive sizes, found {}", where, j["shape"].dump());
      auto dtype = dtype_from_name(field<std::string>(j, "dtype", where));
      if (!dtype) fail("{}: unknown dtype {}", where, j["dtype"].dump());
      t.dtype = *dtype;
      if (j.contains("act_scale")) {
        const double a = field<double>(j, "act_scale", where);
        if (!std::isfinite(a) || a <= 0 || a > 3.0e38)
          fail("{}: field 'act_scale' is {}, expected a positive finite activation scale", where, j["act_scale"].dump());
        t.act_scale = float(a);
      }
      if (j.contains("mse"))
        t.error = QuantError{j.value("mse", 0.0), j.value("sqnr_db", 0.0), j.value("max_abs_err", 0.0)};
      if (tensors_.count(name)) fail("{}: tensor '{}' is described twice", where, name);
      // Its parts: every tensor named "<name>.<suffix>".
      const std::string prefix = name + ".";
      for (const auto& ti : file->tensors()) {
        if (ti.name.rfind(prefix, 0) != 0 || ti.name.find('.', prefix.size()) != std::string::npos) continue;
        parts_[name].push_back(ti.name);
        part_owner[ti.name] = name;
        t.bytes += ti.end - ti.begin;
      }
      if (parts_[name].empty()) fail("{}: no stored parts ('{}.q', ...) for quantized tensor '{}'", where, name, name);
      tensors_[name] = std::move(t);
      ++n_quantized_;
    }
  }
  for (const auto& v : store_->all()) {
    const std::string& name = v.info->name;
    if (part_owner.count(name)) continue;
    if (tensors_.count(name)) fail("{}: tensor '{}' is stored both quantized and as a plain tensor", v.file.string(), name);
    LogicalTensor t;
    t.name = name;
    t.shape = v.info->shape;
    t.dtype = v.info->dtype;
    t.bytes = v.bytes();
    tensors_[name] = std::move(t);
  }
}

std::vector<LogicalTensor> WeightStore::tensors() const {
  std::vector<LogicalTensor> out;
  for (const auto& [name, t] : tensors_) out.push_back(t);
  return out;
}

const LogicalTensor& WeightStore::get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) fail("{}: missing tensor '{}'", dir().string(), name);
  return it->second;
}

QuantizedTensor WeightStore::load_quantized(const std::string& name, bool with_codes) const {
  const LogicalTensor& t = get(name);
  if (t.format.empty()) fail("{}: tensor '{}' is not quantized", dir().string(), name);
  QuantizedTensor q;
  q.format = t.format;
  q.spec = t.spec;
  // A weight stored [in, out] (GPT-2's Conv1D) was quantized as its transpose, [out, in].
  q.rows = t.transposed ? t.shape[1] : t.shape[0];
  q.cols = t.transposed ? t.shape[0] : t.shape[1];
  for (const auto& part : parts_.at(name)) {
    if (!with_codes && part == name + ".q") continue;
    TensorView v = store_->get(part);
    QuantPart p;
    p.suffix = part.substr(name.size() + 1);
    p.dtype = v.info->dtype;
    p.shape = v.info->shape;
    p.bytes.assign(v.data, v.data + v.bytes());
    q.parts.push_back(std::move(p));
  }
  return q;
}

std::vector<float> WeightStore::load_f32(const std::string& name, const std::vector<int64_t>& shape) const {
  const LogicalTensor& t = get(name);
  if (!shape.empty() && t.shape != shape)
    fail("{}: tensor '{}' has shape [{}], expected [{}] from config.json", dir().string(), name,
         fmt::join(t.shape, ", "), fmt::join(shape, ", "));
  if (t.format.empty()) return store_->load_f32(name, shape);
  QuantizedTensor q = load_quantized(name);
  std::vector<float> out(static_cast<size_t>(t.numel()));
  try {
    find_format(q.format).dequantize(q, out.data());
  } catch (const Error& e) {
    fail("{}: quantized tensor '{}' ({}): {}", dir().string(), name, q.format, e.what());
  }
  if (t.transposed) {  // back to the stored [in, out] layout
    std::vector<float> back(out.size());
    for (int64_t r = 0; r < q.rows; ++r)
      for (int64_t c = 0; c < q.cols; ++c) back[size_t(c * q.rows + r)] = out[size_t(r * q.cols + c)];
    out.swap(back);
  }
  return out;
}

namespace {

// What a packed weight points to besides the mapped codes: the store (keeps the maps) and its
// group scales and offsets as float32 where they are not read in place (F16 parts).
struct PackedOwner {
  std::shared_ptr<const TensorStore> store;
  std::vector<float> scale, offset;
};

}  // namespace

namespace {

// LOWBIT_FLOAT_WEIGHTS=copy (default) | map: float weights (F32 / F16 / BF16) decoded from a copy on
// huge pages, or read where the file maps them (for comparisons).
bool float_weights_copied() {
  static const bool copy = env_switch("LOWBIT_FLOAT_WEIGHTS", "copy", "map");
  return copy;
}

}  // namespace

// A packed LinearWeights for `t` ([out, in] = out_in), or an empty one when its format has no
// packed kernel (other bit widths, k-means, binary, ...).
LinearWeights WeightStore::load_linear_packed(const LogicalTensor& t, const std::vector<int64_t>& out_in) const {
  PackedMatrix m;
  m.rows = out_in[0];
  m.cols = out_in[1];
  if (t.format.empty()) {
    switch (t.dtype) {
      case DType::F32: m.kind = PackedKind::F32; break;
      case DType::F16: m.kind = PackedKind::F16; break;
      case DType::BF16: m.kind = PackedKind::BF16; break;
      default: return {};
    }
    const TensorView v = store_->get(t.name);
    TensorStore::check_finite(v);
    m.data = v.data;
    m.row_bytes = size_t(m.cols) * dtype_size(t.dtype);
    if (!float_weights_copied()) return LinearWeights::from_packed(m, store_);
    // Copied onto 2 MB pages (core/aligned.h) and the map's pages released: peak RSS stays the file's
    // size, and decode streams them at 87-91 % of the read test where it read the map's 4 KB pages at
    // 43-51 % (tinyllama bf16, bench/NOTES.md, 18th session: a TLB miss and a stop of the hardware
    // prefetcher at every 4 KB).
    auto copy = std::make_shared<stream_vector<uint8_t>>(v.data, v.data + v.bytes());
    m.data = copy->data();
    LinearWeights l = LinearWeights::from_packed(m, std::move(copy));
    store_->release(t.name);
    return l;
  }
  const FormatTraits& format = find_format(t.format);
  if (!format.code_params || (t.spec.bits != 4 && t.spec.bits != 8)) return {};
  // The parameter parts are small: copied to be checked. The codes stay in the map.
  QuantizedTensor q;
  q.format = t.format;
  q.spec = t.spec;
  q.rows = m.rows;
  q.cols = m.cols;
  const std::string codes_name = t.name + ".q";
  for (const auto& part : parts_.at(t.name)) {
    if (part == codes_name) continue;
    const TensorView v = store_->get(part);
    q.parts.push_back({part.substr(t.name.size() + 1), v.info->dtype, v.info->shape, {v.data, v.data + v.bytes()}});
  }
  auto owner = std::make_shared<PackedOwner>();
  owner->store = store_;
  CodeParams params;
  try {
    params = format.code_params(q);
  } catch (const Error& e) {
    fail("{}: quantized tensor '{}' ({}): {}", dir().string(), t.name, t.format, e.what());
  }
  const int bits = t.spec.bits;
  if (!store_->has(codes_name)) fail("{}: quantized tensor '{}' ({}): part 'q' is missing", dir().string(), t.name, t.format);
  const TensorView codes = store_->get(codes_name);
  const std::vector<int64_t> codes_shape{m.rows, int64_t(packed_bytes(m.cols, bits))};
  if (codes.info->dtype != DType::U8 || codes.info->shape != codes_shape)
    fail("{}: quantized tensor '{}' ({}): part 'q' is {} [{}], expected U8 [{}]", dir().string(), t.name, t.format,
         dtype_name(codes.info->dtype), fmt::join(codes.info->shape, ", "), fmt::join(codes_shape, ", "));
  m.kind = bits == 4 ? PackedKind::U4 : PackedKind::U8;
  m.data = codes.data;
  m.row_bytes = size_t(codes_shape[1]);
  if (params.invalid_code >= 0)  // a code the format never writes: corrupt, refused here as dequantize would
    for (int64_t r = 0; r < m.rows; ++r) {
      // A pass without branches finds whether the row has one (a call per code was half of a load).
      const uint8_t* row = m.data + size_t(r) * m.row_bytes;
      const uint8_t k = uint8_t(params.invalid_code);
      bool any = false;
      if (bits == 8) {
        any = std::memchr(row, k, m.row_bytes) != nullptr;
      } else {  // two codes per byte, low nibble first; an odd row's last high nibble is padding
        const size_t whole = size_t(m.cols / 2);
        for (size_t i = 0; i < whole; ++i) any |= ((row[i] & 15) == k) | ((row[i] >> 4) == k);
        if (m.cols % 2) any |= (row[whole] & 15) == k;
      }
      if (any)
        for (int64_t c = 0; c < m.cols; ++c)
          if (packed_code(m, row, c) == params.invalid_code)
            fail("{}: quantized tensor '{}' ({}): part 'q' has code {} at [{}, {}], which the format never writes",
                 dir().string(), t.name, t.format, params.invalid_code, r, c);
    }
  // Per tensor (one parameter): one group per row, the parameter repeated.
  const bool per_tensor = params.scale.size() == 1 && m.rows > 1;
  m.group = t.spec.group > 0 ? t.spec.group : m.cols;
  owner->scale = per_tensor ? std::vector<float>(size_t(m.rows), params.scale[0]) : std::move(params.scale);
  if (!params.offset.empty())
    owner->offset = per_tensor ? std::vector<float>(size_t(m.rows), params.offset[0]) : std::move(params.offset);
  if (owner->scale.size() != size_t(m.rows * m.groups()))
    fail("{}: quantized tensor '{}' ({}): {} scales for {} groups", dir().string(), t.name, t.format,
         owner->scale.size(), m.rows * m.groups());
  m.scale = owner->scale.data();
  m.offset = owner->offset.empty() ? nullptr : owner->offset.data();
  // F16 parameter parts stored per group are read in place (half the bytes of a float32 copy per
  // decode step: 0.25 of int4's 4.5 bits per weight).
  auto in_place = [&](const std::string& part) -> const uint16_t* {
    if (part.empty() || per_tensor) return nullptr;
    const TensorView v = store_->get(t.name + "." + part);
    if (v.info->dtype != DType::F16 || reinterpret_cast<uintptr_t>(v.data) % alignof(uint16_t) != 0) return nullptr;
    return reinterpret_cast<const uint16_t*>(v.data);
  };
  if (const uint16_t* s = in_place(params.scale_part)) {
    m.scale_f16 = s;
    m.scale = nullptr;
    owner->scale = {};
  }
  if (const uint16_t* o = m.offset ? in_place(params.offset_part) : nullptr) {
    m.offset_f16 = o;
    m.offset = nullptr;
    owner->offset = {};
  }
  if (bits == 8) {
    m.zero = int(-params.table[0]);  // 8-bit tables are code - zero
  } else {
    for (int c = 0; c < 16; ++c) m.lut[c] = params.table[size_t(c)];
  }
  LinearWeights l = LinearWeights::from_packed(m, owner);
  // Re-laid for the decode kernels (linear.h): the codes in the map are not read again.
  if (l.packed.front().m.lanes) store_->release(codes_name);
  return l;
}

LinearWeights WeightStore::load_linear(const std::string& name, const std::vector<int64_t>& out_in,
                                       bool stored_in_out) const {
  const LogicalTensor& t = get(name);
  const std::vector<int64_t> stored = stored_in_out ? std::vector<int64_t>{out_in[1], out_in[0]} : out_in;
  // Schemes that quantize activations run on the int8 kernels (linear.h): int8-dyn, w8a8 (with the
  // input's calibrated scale) and LLM.int8() (with its float outlier columns).
  const bool llm_int8 = t.format == "llm-int8";
  if (t.scheme == "int8-dyn" || t.scheme == "w8a8" || llm_int8) {
    if (t.shape != stored)
      fail("{}: tensor '{}' has shape [{}], expected [{}]", dir().string(), name, fmt::join(t.shape, ", "),
           fmt::join(stored, ", "));
    QuantizedTensor q = load_quantized(name, llm_int8);  // the codes of the others are read in the map
    if ((q.format != "symmetric" && !llm_int8) || q.spec.bits != 8 || q.spec.group != 0 || q.rows != out_in[0] ||
        q.cols != out_in[1])
      fail("{}: tensor '{}' is marked {} but is not 8-bit symmetric per row [{}, {}]", dir().string(), name, t.scheme,
           out_in[0], out_in[1]);
    if (t.scheme == "w8a8" && !(t.act_scale > 0))
      fail("{}: tensor '{}' is marked w8a8 but its metadata '{}{}' has no 'act_scale' (the calibrated activation "
           "scale); re-quantize it with lowbit quantize --scheme w8a8",
           dir().string(), name, kQuantMetaPrefix, name);
    // Every part validated as dequantize would, without a float copy of the tensor (4 bytes per
    // weight: it was most of the load time): the parameters by code_params, the codes here.
    // LLM.int8()'s outlier parts are checked by its dequantize.
    std::vector<float> s;
    try {
      if (llm_int8) {
        std::vector<float> check(size_t(q.rows * q.cols));
        find_format(q.format).dequantize(q, check.data());
        const QuantPart& scale = *q.find("scale");
        s.resize(size_t(q.rows));
        convert_to_f32(scale.dtype, scale.bytes.data(), s.data(), s.size());
      } else {
        s = find_format(q.format).code_params(q).scale;
      }
    } catch (const Error& e) {
      fail("{}: quantized tensor '{}' ({}): {}", dir().string(), name, q.format, e.what());
    }
    const std::string codes_name = name + ".q";
    const std::vector<int64_t> codes_shape{q.rows, q.cols};
    if (!store_->has(codes_name) || s.size() != size_t(q.rows))
      fail("{}: quantized tensor '{}' ({}): part 'q' is missing or the scales are not one per row", dir().string(),
           name, q.format);
    const TensorView codes = store_->get(codes_name);
    if (codes.info->dtype != DType::U8 || codes.info->shape != codes_shape)
      fail("{}: quantized tensor '{}' ({}): part 'q' is {} [{}], expected U8 [{}]", dir().string(), name, q.format,
           dtype_name(codes.info->dtype), fmt::join(codes.info->shape, ", "), fmt::join(codes_shape, ", "));
    if (!llm_int8)  // (LLM.int8()'s codes were checked by its dequantize)
      if (const void* z = std::memchr(codes.data, 0, codes.bytes())) {
        const int64_t i = static_cast<const uint8_t*>(z) - codes.data;
        fail("{}: quantized tensor '{}' ({}): part 'q' has code 0 at [{}, {}], outside 1..255 for 8 bits",
             dir().string(), name, q.format, i / q.cols, i % q.cols);
      }
    LinearWeights l = LinearWeights::from_q8_codes(codes.data, std::move(s), q.rows, q.cols);
    for (const auto& part : parts_.at(name)) store_->release(part);  // copied: the map's pages can go
    if (t.scheme == "w8a8") l.set_act_scale(t.act_scale);
    if (llm_int8) {
      LlmInt8Outliers o = llm_int8_outliers(q);  // validated by dequantize above
      l.outlier_cols = std::move(o.cols);
      l.outlier_w = std::move(o.weights);
    }
    return l;
  }
  if (packed_ && (!stored_in_out || t.transposed)) {
    if (t.shape != stored)
      fail("{}: tensor '{}' has shape [{}], expected [{}]", dir().string(), name, fmt::join(t.shape, ", "),
           fmt::join(stored, ", "));
    LinearWeights l = load_linear_packed(t, out_in);
    if (l.rows > 0) return l;
  }
  std::vector<float> w = load_f32(name, stored);
  if (stored_in_out) {
    std::vector<float> tr(w.size());
    for (int64_t a = 0; a < stored[0]; ++a)
      for (int64_t b = 0; b < stored[1]; ++b) tr[size_t(b * stored[0] + a)] = w[size_t(a * stored[1] + b)];
    w.swap(tr);
  }
  return LinearWeights::from_f32(std::move(w), out_in[0], out_in[1]);
}

}  // namespace lowbit
