// Symmetric ("absmax") quantization, k = 2..8 bits, per group of a row, per row or per tensor:
//
//   qmax  = 2^(k-1) - 1
//   scale = absmax / qmax                       (rounded up to the stored type)
//   q     = clamp(round(x / scale), -qmax, qmax)
//   x^    = q * scale
//
// Parts:
//   "q"      U8        [rows][ceil(cols * k / 8)]  codes u = q + 2^(k-1), so u in [1, 2^k - 1];
//                                                  u = 0 is invalid and rejected by dequantize
//   "scale"  F16 (F32) [rows][groups per row]      ([1][1] per tensor)
//
// Rounding the scale up keeps |x| / scale <= qmax, hence |x - x^| <= scale / 2 for the stored scale.
// An all-zero group gets scale 0 and q = 0.
//
// Bits per weight: k (each row padded to a byte) + 16 / group size.
#include <algorithm>
#include <cmath>

#include "format_internal.h"
#include "lowbit/core/error.h"

namespace lowbit {

namespace {
constexpr int kMinBits = 2, kMaxBits = 8;
}  // namespace

QuantizedTensor quantize_symmetric_ref(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec) {
  check_quantize_args("symmetric", rows, cols, spec, kMinBits, kMaxBits);
  const Groups groups(rows, cols, spec.group);
  const int64_t n = groups.count();
  const int qmax = (1 << (spec.bits - 1)) - 1;
  const int zero_code = 1 << (spec.bits - 1);

  std::vector<double> raw(size_t(n), 0.0);  // absmax / qmax
  for_each_group(groups, [&](int64_t r, int64_t, int64_t i, int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) raw[i] = std::max(raw[i], std::fabs(double(w[r * cols + c])));
  });
  for (double& v : raw) v /= qmax;

  const DType dtype = choose_param_dtype(raw, Round::up);
  std::vector<float> scales(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) scales[i] = round_param(raw[i], dtype, Round::up);
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(scales[i])) fail("quantize symmetric: group {} has absmax {} beyond float32", i, raw[i] * qmax);

  std::vector<uint8_t> codes(static_cast<size_t>(rows * cols));
  for_each_group(groups, [&](int64_t r, int64_t, int64_t i, int64_t c0, int64_t c1) {
    const double s = scales[i];
    for (int64_t c = c0; c < c1; ++c) {
      int q = 0;
      if (s > 0) q = int(std::clamp(std::round(double(w[r * cols + c]) / s), double(-qmax), double(qmax)));
      codes[r * cols + c] = uint8_t(q + zero_code);
    }
  });

  QuantizedTensor out;
  out.format = "symmetric";
  out.spec = spec;
  out.rows = rows;
  out.cols = cols;
  out.parts.push_back(pack_code_rows(codes, rows, cols, spec.bits));
  out.parts.push_back(make_param_part("scale", dtype, groups.param_shape(), scales));
  return out;
}

void dequantize_symmetric_ref(const QuantizedTensor& q, float* out) {
  check_quantized_header(q, "symmetric", kMinBits, kMaxBits);
  const Groups groups(q.rows, q.cols, q.spec.group);
  const std::vector<float> scales =
      load_param_part(q, q.require("scale", groups.param_shape(), DType::F16, DType::F32));
  const std::vector<uint8_t> codes = unpack_code_rows(q, q.spec.bits);
  for (size_t i = 0; i < codes.size(); ++i)
    if (codes[i] == 0)
      fail("symmetric tensor [{} x {}]: part 'q' has code 0 at [{}, {}], outside 1..{} for {} bits", q.rows, q.cols,
           int64_t(i) / q.cols, int64_t(i) % q.cols, (1 << q.spec.bits) - 1, q.spec.bits);
  const int zero_code = 1 << (q.spec.bits - 1);
  for_each_group(groups, [&](int64_t r, int64_t, int64_t i, int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) out[r * q.cols + c] = float(int(codes[r * q.cols + c]) - zero_code) * scales[i];
  });
}

CodeParams code_params_symmetric(const QuantizedTensor& q) {
  check_quantized_header(q, "symmetric", kMinBits, kMaxBits);
  const Groups groups(q.rows, q.cols, q.spec.group);
  CodeParams p;
  p.scale = load_param_part(q, q.require("scale", groups.param_shape(), DType::F16, DType::F32));
  p.scale_part = "scale";
  const int zero_code = 1 << (q.spec.bits - 1);
  for (int c = 0; c < (1 << q.spec.bits); ++c) p.table.push_back(float(c - zero_code));
  p.invalid_code = 0;
  return p;
}

double bits_per_weight_symmetric(int64_t rows, int64_t cols, const QuantSpec& spec) {
  check_quantize_args("symmetric", rows, cols, spec, kMinBits, kMaxBits);
  const Groups groups(rows, cols, spec.group);
  return layout_bits_per_weight(
      rows, cols, {{{rows, int64_t(packed_bytes(cols, spec.bits))}, DType::U8}, {groups.param_shape(), DType::F16}});
}

}  // namespace lowbit
