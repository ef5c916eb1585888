// Uniform asymmetric ("affine") quantization, k = 1..8 bits, per group of a row, per row or per
// tensor (QuantSpec::group):
//
//   scale = (max - min) / (2^k - 1)
//   q     = clamp(round((x - min) / scale), 0, 2^k - 1)
//   x^    = q * scale + min
//
// Parts:
//   "q"      U8        [rows][ceil(cols * k / 8)]  k-bit codes, little-endian bit stream per row
//   "scale"  F16 (F32) [rows][groups per row]      ([1][1] per tensor)
//   "min"    F16 (F32) same shape as "scale"
//
// Stored parameters keep the guarantee |x - x^| <= scale / 2 for every x of the group (scale being
// the stored one): min is rounded *down* to F16, then scale = (max - min_stored) / (2^k - 1) is
// rounded *up*, so (x - min_stored) / scale lies in [0, 2^k - 1] and its rounding stays in range.
// The codes are computed from those stored values. A group with max == min (exactly representable)
// gets scale 0 and codes 0, so x^ = min. Parameters switch to F32 for the whole tensor when F16
// cannot hold them (see format_internal.h).
//
// Bits per weight: k (each row padded to a byte) + 2 * 16 / group size.
#include <algorithm>
#include <cmath>
#include <limits>

#include "format_internal.h"
#include "lowbit/core/error.h"

namespace lowbit {

namespace {
constexpr int kMinBits = 1, kMaxBits = 8;
}  // namespace

QuantizedTensor quantize_affine_ref(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec) {
  check_quantize_args("affine", rows, cols, spec, kMinBits, kMaxBits);
  const Groups groups(rows, cols, spec.group);
  const int64_t n = groups.count();
  const int max_code = (1 << spec.bits) - 1;

  // 1. Range of every group.
  std::vector<double> lo(size_t(n), std::numeric_limits<double>::infinity());
  std::vector<double> hi(size_t(n), -std::numeric_limits<double>::infinity());
  for_each_group(groups, [&](int64_t r, int64_t, int64_t i, int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      lo[i] = std::min(lo[i], double(w[r * cols + c]));
      hi[i] = std::max(hi[i], double(w[r * cols + c]));
    }
  });

  // 2. Stored parameters: min rounded down, then scale from the stored min rounded up.
  std::vector<float> mins(static_cast<size_t>(n)), scales(static_cast<size_t>(n));
  auto store = [&](DType dtype) -> int64_t {  // the first group that does not fit, or -1
    for (int64_t i = 0; i < n; ++i) {
      mins[i] = round_param(lo[i], dtype, Round::down);
      scales[i] = round_param((hi[i] - double(mins[i])) / max_code, dtype, Round::up);
      if (!std::isfinite(mins[i]) || !std::isfinite(scales[i])) return i;
    }
    return -1;
  };
  std::vector<double> raw(lo);
  for (int64_t i = 0; i < n; ++i) raw.push_back((hi[i] - lo[i]) / max_code);
  DType dtype = choose_param_dtype(raw, Round::nearest);
  if (store(dtype) >= 0) {
    dtype = DType::F32;
    if (int64_t bad = store(dtype); bad >= 0)
      fail("quantize affine: group {} spans {} .. {}, too wide for a float32 scale at {} bits", bad, lo[bad],
           hi[bad], spec.bits);
  }

  // 3. Codes from the stored parameters.
  std::vector<uint8_t> codes(static_cast<size_t>(rows * cols));
  for_each_group(groups, [&](int64_t r, int64_t, int64_t i, int64_t c0, int64_t c1) {
    const double m = mins[i], s = scales[i];
    for (int64_t c = c0; c < c1; ++c) {
      int q = 0;
      if (s > 0) q = int(std::clamp(std::round((double(w[r * cols + c]) - m) / s), 0.0, double(max_code)));
      codes[r * cols + c] = uint8_t(q);
    }
  });

  QuantizedTensor out;
  out.format = "affine";
  out.spec = spec;
  out.rows = rows;
  out.cols = cols;
  out.parts.push_back(pack_code_rows(codes, rows, cols, spec.bits));
  out.parts.push_back(make_param_part("scale", dtype, groups.param_shape(), scales));
  out.parts.push_back(make_param_part("min", dtype, groups.param_shape(), mins));
  return out;
}

void dequantize_affine_ref(const QuantizedTensor& q, float* out) {
  check_quantized_header(q, "affine", kMinBits, kMaxBits);
  const Groups groups(q.rows, q.cols, q.spec.group);
  const std::vector<float> scales =
      load_param_part(q, q.require("scale", groups.param_shape(), DType::F16, DType::F32));
  const std::vector<float> mins = load_param_part(q, q.require("min", groups.param_shape(), DType::F16, DType::F32));
  const std::vector<uint8_t> codes = unpack_code_rows(q, q.spec.bits);  // every k-bit code is valid
  for_each_group(groups, [&](int64_t r, int64_t, int64_t i, int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) out[r * q.cols + c] = float(codes[r * q.cols + c]) * scales[i] + mins[i];
  });
}

CodeParams code_params_affine(const QuantizedTensor& q) {
  check_quantized_header(q, "affine", kMinBits, kMaxBits);
  const Groups groups(q.rows, q.cols, q.spec.group);
  CodeParams p;
  p.scale = load_param_part(q, q.require("scale", groups.param_shape(), DType::F16, DType::F32));
  p.offset = load_param_part(q, q.require("min", groups.param_shape(), DType::F16, DType::F32));
  p.scale_part = "scale";
  p.offset_part = "min";
  for (int c = 0; c < (1 << q.spec.bits); ++c) p.table.push_back(float(c));
  return p;
}

double bits_per_weight_affine(int64_t rows, int64_t cols, const QuantSpec& spec) {
  check_quantize_args("affine", rows, cols, spec, kMinBits, kMaxBits);
  const Groups groups(rows, cols, spec.group);
  return layout_bits_per_weight(rows, cols,
                                {{{rows, int64_t(packed_bytes(cols, spec.bits))}, DType::U8},
                                 {groups.param_shape(), DType::F16},
                                 {groups.param_shape(), DType::F16}});
}

}  // namespace lowbit
