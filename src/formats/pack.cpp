// Bit packing, groups, QuantizedTensor's members and the helpers that every format file shares
// (argument checks, parameter rounding and storage). See format_internal.h.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cassert>
#include <cmath>
#include <cstring>
#include <limits>

#include "format_internal.h"
#include "lowbit/core/error.h"

namespace lowbit {

namespace {

// Largest rows and cols accepted, and largest rows*cols: keeps every size product (times 16 bits)
// far from int64 overflow, also for headers read from untrusted files.
constexpr int64_t kMaxDim = int64_t(1) << 40;
constexpr int64_t kMaxElements = int64_t(1) << 48;

constexpr double kF16MinNormal = 0x1p-14;

std::string shape_string(const std::vector<int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

std::string dtype_string(DType t) {
  return uint8_t(t) <= uint8_t(DType::F64) ? std::string(dtype_name(t)) : fmt::format("<dtype {}>", int(t));
}

// The f16 value next to h towards +Inf (up) or -Inf (down); h is finite.
uint16_t f16_next_up(uint16_t h) {
  if ((h & 0x7fffu) == 0) return 0x0001;     // +-0 -> smallest positive subnormal
  return (h & 0x8000u) ? uint16_t(h - 1) : uint16_t(h + 1);  // 0x7bff + 1 = +Inf
}
uint16_t f16_next_down(uint16_t h) {
  if ((h & 0x7fffu) == 0) return 0x8001;     // +-0 -> largest negative subnormal
  return (h & 0x8000u) ? uint16_t(h + 1) : uint16_t(h - 1);  // 0xfbff + 1 = -Inf
}

}  // namespace

// ---- bit packing --------------------------------------------------------------------------------

size_t packed_bytes(int64_t n, int bits) {
  if (bits < 1 || bits > 8) fail("packed_bytes: bits must be 1..8, got {}", bits);
  if (n < 0) fail("packed_bytes: negative count {}", n);
  return size_t((uint64_t(n) * uint64_t(bits) + 7) / 8);
}

// Code i occupies bits [i*bits, (i+1)*bits) of the stream, least significant bit first: a 64-bit
// accumulator collects codes and is flushed a byte at a time.
void pack_bits(const uint8_t* codes, int64_t n, int bits, uint8_t* out) {
  const size_t nbytes = packed_bytes(n, bits);
  const unsigned mask = (1u << bits) - 1;
  uint64_t acc = 0;
  int filled = 0;  // valid bits in acc
  size_t o = 0;
  for (int64_t i = 0; i < n; ++i) {
    assert(codes[i] <= mask && "pack_bits: code does not fit in `bits`");
    acc |= uint64_t(codes[i] & mask) << filled;
    filled += bits;
    while (filled >= 8) {
      out[o++] = uint8_t(acc);
      acc >>= 8;
      filled -= 8;
    }
  }
  if (filled > 0) out[o++] = uint8_t(acc);  // the unused high bits of the last byte are 0
  assert(o == nbytes);
  (void)nbytes;
}

// Reads exactly packed_bytes(n, bits) bytes.
void unpack_bits(const uint8_t* packed, int64_t n, int bits, uint8_t* codes) {
  (void)packed_bytes(n, bits);  // checks bits and n
  if (bits == 8) {  // one code per byte
    std::memcpy(codes, packed, size_t(n));
    return;
  }
  const unsigned mask = (1u << bits) - 1;
  uint64_t acc = 0;
  int filled = 0;
  size_t p = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (filled < bits) {  // bits <= 8, so one byte is always enough
      acc |= uint64_t(packed[p++]) << filled;
      filled += 8;
    }
    codes[i] = uint8_t(acc & mask);
    acc >>= bits;
    filled -= bits;
  }
}

// ---- groups -------------------------------------------------------------------------------------

int64_t groups_per_row(int64_t cols, int64_t group) {
  if (group < -1) fail("group size must be -1 (per tensor), 0 (per row) or >= 1, got {}", group);
  if (group <= 0 || cols <= 0) return group <= 0 ? 1 : 0;
  return cols / group + (cols % group != 0);  // no overflow for any group
}

Groups::Groups(int64_t rows_, int64_t cols_, int64_t group) : rows(rows_), cols(cols_) {
  per_row = groups_per_row(cols, group);
  per_tensor = group == -1;
  size = group >= 1 ? group : cols;
}

// ---- QuantizedTensor ----------------------------------------------------------------------------

const QuantPart* QuantizedTensor::find(std::string_view suffix) const {
  for (const auto& p : parts)
    if (p.suffix == suffix) return &p;
  return nullptr;
}

const QuantPart& QuantizedTensor::require(std::string_view suffix, std::vector<int64_t> shape, DType dtype,
                                          DType alt) const {
  const std::string where = fmt::format("{} tensor [{} x {}]: part '{}'", format, rows, cols, suffix);
  const QuantPart* p = find(suffix);
  if (!p) {
    std::vector<std::string> have;
    for (const auto& q : parts) have.push_back("'" + q.suffix + "'");
    fail("{} is missing (parts present: {}); the file was not written by this format", where,
         have.empty() ? std::string("none") : fmt::format("{}", fmt::join(have, ", ")));
  }
  if (p->dtype != dtype && p->dtype != alt)
    fail("{} has dtype {}, expected {}", where, dtype_string(p->dtype),
         dtype == alt ? dtype_string(dtype) : dtype_string(dtype) + " or " + dtype_string(alt));
  if (p->shape != shape) fail("{} has shape {}, expected {}", where, shape_string(p->shape), shape_string(shape));
  uint64_t want = dtype_size(p->dtype);
  for (int64_t d : shape)
    if (d < 0 || !checked_mul(want, uint64_t(d), &want)) fail("{}: shape {} is invalid", where, shape_string(shape));
  if (p->bytes.size() != want)
    fail("{} holds {} bytes, expected {} ({} {}): truncated or corrupt", where, p->bytes.size(), want,
         dtype_string(p->dtype), shape_string(shape));
  return *p;
}

uint64_t QuantizedTensor::bytes() const {
  uint64_t n = 0;
  for (const auto& p : parts) n += p.bytes.size();
  return n;
}

// ---- argument checks ----------------------------------------------------------------------------

namespace {
void check_dims(std::string_view what, int64_t rows, int64_t cols) {
  if (rows < 1 || cols < 1 || rows > kMaxDim || cols > kMaxDim || rows > kMaxElements / cols)
    fail("{}: shape [{} x {}] is not supported (rows and cols must be >= 1, at most 2^48 elements)", what, rows,
         cols);
}
}  // namespace

void check_quantize_args(std::string_view format, int64_t rows, int64_t cols, const QuantSpec& spec,
                         int min_bits, int max_bits) {
  const std::string what = fmt::format("quantize {}", format);
  check_dims(what, rows, cols);
  if (spec.bits < min_bits || spec.bits > max_bits)
    fail("{}: bits must be in {}..{}, got {}", what, min_bits, max_bits, spec.bits);
  if (spec.group < -1) fail("{}: group must be -1 (per tensor), 0 (per row) or >= 1, got {}", what, spec.group);
  if (spec.iterations < 0) fail("{}: iterations must be >= 0, got {}", what, spec.iterations);
}

void check_quantized_header(const QuantizedTensor& q, std::string_view format, int min_bits, int max_bits) {
  if (q.format != format) fail("dequantize {}: the tensor is in format '{}'", format, q.format);
  const std::string what = fmt::format("{} tensor [{} x {}]", format, q.rows, q.cols);
  check_dims(what, q.rows, q.cols);
  if (q.spec.bits < min_bits || q.spec.bits > max_bits)
    fail("{}: bits {} out of range {}..{}", what, q.spec.bits, min_bits, max_bits);
  if (q.spec.group < -1) fail("{}: group {} is invalid (must be -1, 0 or >= 1)", what, q.spec.group);
}

// ---- parameter storage --------------------------------------------------------------------------

float round_param(double v, DType dtype, Round mode) {
  if (dtype == DType::F32) {
    float f = float(v);  // nearest; +-Inf beyond the range
    if (mode == Round::up && double(f) < v) f = std::nextafter(f, std::numeric_limits<float>::infinity());
    if (mode == Round::down && double(f) > v) f = std::nextafter(f, -std::numeric_limits<float>::infinity());
    return f;
  }
  assert(dtype == DType::F16);
  uint16_t h = f32_to_f16(float(v));
  // Rounding v to float first may land on the wrong side of v; step once to correct it (a double
  // rounding is off by at most one f16 step).
  if ((h & 0x7c00u) != 0x7c00u) {
    if (mode == Round::up && double(f16_to_f32(h)) < v) h = f16_next_up(h);
    if (mode == Round::down && double(f16_to_f32(h)) > v) h = f16_next_down(h);
  }
  return f16_to_f32(h);
}

DType choose_param_dtype(const std::vector<double>& values, Round mode) {
  double largest = 0;
  for (double v : values) {
    if (!std::isfinite(round_param(v, DType::F16, mode))) return DType::F32;
    largest = std::max(largest, std::fabs(v));
  }
  return largest == 0 || largest >= kF16MinNormal ? DType::F16 : DType::F32;
}

QuantPart make_param_part(std::string_view suffix, DType dtype, std::vector<int64_t> shape,
                          const std::vector<float>& values) {
  QuantPart part{std::string(suffix), dtype, std::move(shape), {}};
  if (dtype == DType::F32) {
    part.bytes.resize(values.size() * 4);
    std::memcpy(part.bytes.data(), values.data(), part.bytes.size());
  } else {
    assert(dtype == DType::F16);
    part.bytes.resize(values.size() * 2);
    for (size_t i = 0; i < values.size(); ++i) {
      const uint16_t h = f32_to_f16(values[i]);
      assert(f16_to_f32(h) == values[i] || std::isnan(values[i]));
      std::memcpy(part.bytes.data() + 2 * i, &h, 2);
    }
  }
  return part;
}

std::vector<float> load_param_part(const QuantizedTensor& q, const QuantPart& part) {
  const size_t n = part.bytes.size() / dtype_size(part.dtype);
  std::vector<float> v(n);
  convert_to_f32(part.dtype, part.bytes.data(), v.data(), n);
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(v[i]))
      fail("{} tensor [{} x {}]: part '{}' holds a non-finite value ({}) at flat index {}", q.format, q.rows,
           q.cols, part.suffix, v[i], i);
  return v;
}

// ---- codes --------------------------------------------------------------------------------------

QuantPart pack_code_rows(const std::vector<uint8_t>& codes, int64_t rows, int64_t cols, int bits) {
  const int64_t row_bytes = int64_t(packed_bytes(cols, bits));
  QuantPart part{"q", DType::U8, {rows, row_bytes}, std::vector<uint8_t>(size_t(rows * row_bytes))};
  for (int64_t r = 0; r < rows; ++r) pack_bits(codes.data() + r * cols, cols, bits, part.bytes.data() + r * row_bytes);
  return part;
}

std::vector<uint8_t> unpack_code_rows(const QuantizedTensor& q, int bits) {
  const int64_t row_bytes = int64_t(packed_bytes(q.cols, bits));
  const QuantPart& part = q.require("q", {q.rows, row_bytes}, DType::U8, DType::U8);
  std::vector<uint8_t> codes(static_cast<size_t>(q.rows * q.cols));
  for (int64_t r = 0; r < q.rows; ++r)
    unpack_bits(part.bytes.data() + r * row_bytes, q.cols, bits, codes.data() + r * q.cols);
  return codes;
}

double layout_bits_per_weight(int64_t rows, int64_t cols, const std::vector<PartSize>& parts) {
  check_dims("bits_per_weight", rows, cols);
  uint64_t bytes = 0;
  for (const auto& p : parts) {
    uint64_t n = dtype_size(p.dtype);
    for (int64_t d : p.shape) n *= uint64_t(d);
    bytes += n;
  }
  return double(bytes * 8) / double(rows * cols);
}

}  // namespace lowbit
