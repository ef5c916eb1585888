// Binary and ternary weights with one scale per group (QuantSpec::group: per group of a row, per
// row, or per tensor).
//
// binary (1 bit):  x^ = sign(x) * scale,  scale = mean |x| over the group
//   (for a fixed sign pattern the L2-optimal scale; sign(0) = +1). Codes: 0 = -1, 1 = +1.
//
// ternary (2 bits), TWN (Li et al., "Ternary Weight Networks", arXiv:1605.04711):
//   delta = 0.7 * mean |x|,  t = +1 if x > delta, -1 if x < -delta, else 0
//   scale = mean |x| over the x with |x| > delta (0 when there are none),  x^ = t * scale.
//   Codes: 0 = -1, 1 = 0, 2 = +1; code 3 is invalid and rejected by dequantize.
//
// Parts:
//   "q"      U8        [rows][ceil(cols * bits / 8)]  codes, little-endian bit stream per row
//   "scale"  F16 (F32) [rows][groups per row]         ([1][1] per tensor), rounded to nearest
//
// Bits per weight: 1 or 2 (each row padded to a byte) + 16 / group size.
#include <algorithm>
#include <cmath>

#include "format_internal.h"
#include "lowbit/core/error.h"

namespace lowbit {

namespace {

QuantizedTensor finish(std::string_view format, const QuantSpec& spec, int64_t rows, int64_t cols, const Groups& groups,
                       const std::vector<uint8_t>& codes, const std::vector<double>& raw_scales) {
  const DType dtype = choose_param_dtype(raw_scales, Round::nearest);
  std::vector<float> scales(raw_scales.size());
  for (size_t i = 0; i < scales.size(); ++i) scales[i] = round_param(raw_scales[i], dtype, Round::nearest);
  QuantizedTensor out;
  out.format = std::string(format);
  out.spec = spec;
  out.rows = rows;
  out.cols = cols;
  out.parts.push_back(pack_code_rows(codes, rows, cols, spec.bits));
  out.parts.push_back(make_param_part("scale", dtype, groups.param_shape(), scales));
  return out;
}

// Validates the header and "scale" of q, and returns its groups, scales and codes.
struct Loaded {
  Groups groups;
  std::vector<float> scales;
  std::vector<uint8_t> codes;
};
Loaded load(const QuantizedTensor& q, std::string_view format, int bits) {
  check_quantized_header(q, format, bits, bits);
  Groups groups(q.rows, q.cols, q.spec.group);
  std::vector<float> scales = load_param_part(q, q.require("scale", groups.param_shape(), DType::F16, DType::F32));
  return {groups, std::move(scales), unpack_code_rows(q, bits)};
}

double bits_per_weight_sign(std::string_view format, int bits, int64_t rows, int64_t cols, const QuantSpec& spec) {
  check_quantize_args(format, rows, cols, spec, bits, bits);
  const Groups groups(rows, cols, spec.group);
  return layout_bits_per_weight(
      rows, cols, {{{rows, int64_t(packed_bytes(cols, bits))}, DType::U8}, {groups.param_shape(), DType::F16}});
}

}  // namespace

// ---- binary -------------------------------------------------------------------------------------

QuantizedTensor quantize_binary_ref(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec) {
  check_quantize_args("binary", rows, cols, spec, 1, 1);
  const Groups groups(rows, cols, spec.group);
  std::vector<double> sum_abs(size_t(groups.count()), 0.0), count(size_t(groups.count()), 0.0);
  std::vector<uint8_t> codes(static_cast<size_t>(rows * cols));
  for_each_group(groups, [&](int64_t r, int64_t, int64_t i, int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const float x = w[r * cols + c];
      sum_abs[i] += std::fabs(double(x));
      count[i] += 1;
      codes[r * cols + c] = x >= 0 ? 1 : 0;
    }
  });
  for (size_t i = 0; i < sum_abs.size(); ++i) sum_abs[i] /= count[i];
  return finish("binary", spec, rows, cols, groups, codes, sum_abs);
}

void dequantize_binary_ref(const QuantizedTensor& q, float* out) {
  const auto [groups, scales_, codes_] = load(q, "binary", 1);
  const auto& scales = scales_;  // named copies: lambdas may not capture structured bindings before C++20 in clang 14
  const auto& codes = codes_;
  for_each_group(groups, [&](int64_t r, int64_t, int64_t i, int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) out[r * q.cols + c] = codes[r * q.cols + c] ? scales[i] : -scales[i];
  });
}

double bits_per_weight_binary(int64_t rows, int64_t cols, const QuantSpec& spec) {
  return bits_per_weight_sign("binary", 1, rows, cols, spec);
}

// ---- ternary ------------------------------------------------------------------------------------

QuantizedTensor quantize_ternary_ref(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec) {
  check_quantize_args("ternary", rows, cols, spec, 2, 2);
  const Groups groups(rows, cols, spec.group);
  const int64_t n = groups.count();

  std::vector<double> sum_abs(size_t(n), 0.0), count(size_t(n), 0.0);
  for_each_group(groups, [&](int64_t r, int64_t, int64_t i, int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) sum_abs[i] += std::fabs(double(w[r * cols + c]));
    count[i] += double(c1 - c0);
  });
  std::vector<double> delta(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) delta[i] = 0.7 * (sum_abs[i] / count[i]);

  std::vector<double> kept_sum(size_t(n), 0.0), kept(size_t(n), 0.0);
  std::vector<uint8_t> codes(static_cast<size_t>(rows * cols));
  for_each_group(groups, [&](int64_t r, int64_t, int64_t i, int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const double x = w[r * cols + c];
      uint8_t code = 1;  // 0
      if (x > delta[i]) code = 2;
      if (x < -delta[i]) code = 0;
      if (code != 1) kept_sum[i] += std::fabs(x), kept[i] += 1;
      codes[r * cols + c] = code;
    }
  });
  std::vector<double> scales(size_t(n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    if (kept[i] > 0) scales[i] = kept_sum[i] / kept[i];
  return finish("ternary", spec, rows, cols, groups, codes, scales);
}

void dequantize_ternary_ref(const QuantizedTensor& q, float* out) {
  const auto [groups, scales_, codes_] = load(q, "ternary", 2);
  const auto& scales = scales_;  // see dequantize_binary_ref
  const auto& codes = codes_;
  for (size_t i = 0; i < codes.size(); ++i)
    if (codes[i] == 3)
      fail("ternary tensor [{} x {}]: part 'q' has code 3 at [{}, {}]; valid codes are 0 (-1), 1 (0), 2 (+1)", q.rows,
           q.cols, int64_t(i) / q.cols, int64_t(i) % q.cols);
  for_each_group(groups, [&](int64_t r, int64_t, int64_t i, int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) out[r * q.cols + c] = float(int(codes[r * q.cols + c]) - 1) * scales[i];
  });
}

double bits_per_weight_ternary(int64_t rows, int64_t cols, const QuantSpec& spec) {
  return bits_per_weight_sign("ternary", 2, rows, cols, spec);
}

}  // namespace lowbit
