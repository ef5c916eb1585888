// NF4 and FP4: the 4-bit code books of bitsandbytes (QLoRA), with blockwise absmax scaling.
// The block is QuantSpec::group (the schemes use 64): blocks run along each row, the last one of a
// row shorter when the block does not divide cols (0: one block per row, -1: one for the tensor).
//
//   absmax = max |x| over the block
//   code   = index of the code value c nearest to x / absmax, i.e. argmin_j |x - c_j * absmax|
//            (ties: the lower index; an all-zero block gets the code of 0.0)
//   x^     = c[code] * absmax
//
// Parts without double quantization:
//   "q"       U8  [rows][ceil(cols / 2)]  4-bit codes, little-endian bit stream per row (format.h).
//                                         Note: bitsandbytes puts the first code in the *high*
//                                         nibble; this layout is ours, only the code values match.
//   "absmax"  F32 [rows][blocks per row]  ([1][1] per tensor)
//
// Double quantization (QuantSpec::double_quant, QLoRA section 3): the fp32 absmax values, minus
// their mean, are quantized to 8 bits in blocks of 256 consecutive absmax values (row-major):
//   offset = mean(absmax)                                       "absmax_offset" F32 [1]
//   s_b    = max |absmax_i - offset| over absmax block b        "absmax_scale"  F32 [ceil(n / 256)]
//   u_i    = clamp(round((absmax_i - offset) / s_b * 127), -127, 127) + 128
//                                                               "absmax_q" U8 [rows][blocks per row]
//   absmax'_i = offset + (u_i - 128) / 127 * s_b                (double_quant_absmax below)
// (bitsandbytes quantizes these with its 8-bit dynamic map; we use symmetric int8, same cost.)
// u = 0 is invalid. The 4-bit codes are chosen against absmax', the value dequantize will use.
//
// Bits per weight: 4 + 32 / block, or with double quantization 4 + 8 / block + 32 / (256 * block)
// (+ 32 bits per tensor): 4.127 at block 64.
#include <algorithm>
#include <cmath>

#include "format_internal.h"
#include "lowbit/core/error.h"

namespace lowbit {

namespace {

constexpr int64_t kDoubleQuantBlock = 256;

// bitsandbytes' NF4 code book, index = 4-bit code. Values from bitsandbytes/functional.py
// get_4bit_type("nf4") (also csrc/kernels.cu, dDequantizeNF4), built by create_normal_map(): the
// N(0, 1) quantiles normalised to [-1, 1]; listed in Dettmers et al., "QLoRA" (arXiv:2305.14314),
// appendix E.
constexpr float kNf4Values[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};
constexpr int kNf4Zero = 7;

// bitsandbytes' FP4 code book (E2M1 with bias, bit 3 = sign), index = 4-bit code. From
// bitsandbytes/functional.py get_4bit_type("fp4"): {0, 0.0625, 8, 12, 4, 6, 2, 3} / 12 for codes
// 0..7 and their negatives for 8..15; the same constants appear in csrc/kernels.cu,
// dDequantizeFP4Tree (0.00520833, 0.66666667, 1, 0.33333333, 0.5, 0.16666667, 0.25).
constexpr float kFp4Values[16] = {
    0.0f,  0.0625f / 12,  8.0f / 12,  12.0f / 12,  4.0f / 12,  6.0f / 12,  2.0f / 12,  3.0f / 12,
    -0.0f, -0.0625f / 12, -8.0f / 12, -12.0f / 12, -4.0f / 12, -6.0f / 12, -2.0f / 12, -3.0f / 12,
};
constexpr int kFp4Zero = 0;

struct CodeBook4 {
  std::string_view format;
  const float* values;  // [16]
  int zero_code;
};
constexpr CodeBook4 kNf4{"nf4", kNf4Values, kNf4Zero};
constexpr CodeBook4 kFp4{"fp4", kFp4Values, kFp4Zero};

// The absmax that dequantize reconstructs from a double-quantized code; quantize uses the same.
inline float double_quant_absmax(float offset, float scale, uint8_t u) {
  return offset + float(int(u) - 128) / 127.0f * scale;
}

int64_t double_quant_blocks(int64_t n_absmax) { return (n_absmax + kDoubleQuantBlock - 1) / kDoubleQuantBlock; }

QuantizedTensor quantize_codebook4(const CodeBook4& book, const float* w, int64_t rows, int64_t cols,
                                   const QuantSpec& spec) {
  check_quantize_args(book.format, rows, cols, spec, 4, 4);
  const Groups groups(rows, cols, spec.group);
  const int64_t n = groups.count();

  std::vector<float> absmax(size_t(n), 0.0f);
  for_each_group(groups, [&](int64_t r, int64_t, int64_t i, int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) absmax[i] = std::max(absmax[i], std::fabs(w[r * cols + c]));
  });

  QuantizedTensor out;
  out.format = std::string(book.format);
  out.spec = spec;
  out.rows = rows;
  out.cols = cols;

  // The absmax values dequantize will use: exact, or reconstructed from the 8-bit double quant.
  std::vector<float> used(absmax);
  if (spec.double_quant) {
    double sum = 0;
    for (float a : absmax) sum += a;
    const float offset = float(sum / double(n));
    const int64_t nblocks = double_quant_blocks(n);
    std::vector<float> scales(size_t(nblocks), 0.0f);
    std::vector<uint8_t> codes(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
      scales[i / kDoubleQuantBlock] = std::max(scales[i / kDoubleQuantBlock], std::fabs(absmax[i] - offset));
    for (int64_t i = 0; i < n; ++i) {
      const float s = scales[i / kDoubleQuantBlock];
      int q = 0;
      if (s > 0) q = int(std::clamp(std::round(double(absmax[i] - offset) / s * 127.0), -127.0, 127.0));
      codes[i] = uint8_t(q + 128);
      used[i] = double_quant_absmax(offset, s, codes[i]);
    }
    out.parts.push_back({"absmax_q", DType::U8, groups.param_shape(), codes});
    out.parts.push_back(make_param_part("absmax_scale", DType::F32, {nblocks}, scales));
    out.parts.push_back(make_param_part("absmax_offset", DType::F32, {1}, {offset}));
  } else {
    out.parts.push_back(make_param_part("absmax", DType::F32, groups.param_shape(), absmax));
  }

  std::vector<uint8_t> codes(static_cast<size_t>(rows * cols));
  for_each_group(groups, [&](int64_t r, int64_t, int64_t i, int64_t c0, int64_t c1) {
    const double a = used[i];
    for (int64_t c = c0; c < c1; ++c) {
      const double x = w[r * cols + c];
      int best = book.zero_code;
      if (a != 0) {
        double best_err = std::fabs(x - double(book.values[best]) * a);
        for (int j = 0; j < 16; ++j) {
          const double err = std::fabs(x - double(book.values[j]) * a);
          if (err < best_err || (err == best_err && j < best)) best = j, best_err = err;
        }
      }
      codes[r * cols + c] = uint8_t(best);
    }
  });
  out.parts.insert(out.parts.begin(), pack_code_rows(codes, rows, cols, 4));
  return out;
}

// The absmax of every block, validated (exact, or reconstructed from the double quantization).
std::vector<float> codebook4_absmax(const CodeBook4& book, const QuantizedTensor& q) {
  check_quantized_header(q, book.format, 4, 4);
  const Groups groups(q.rows, q.cols, q.spec.group);
  const int64_t n = groups.count();

  std::vector<float> absmax;
  if (q.spec.double_quant) {
    const QuantPart& codes = q.require("absmax_q", groups.param_shape(), DType::U8, DType::U8);
    const std::vector<float> scales =
        load_param_part(q, q.require("absmax_scale", {double_quant_blocks(n)}, DType::F32, DType::F32));
    const float offset = load_param_part(q, q.require("absmax_offset", {1}, DType::F32, DType::F32))[0];
    absmax.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      if (codes.bytes[i] == 0)
        fail("{} tensor [{} x {}]: part 'absmax_q' has code 0 at flat index {}, outside 1..255", q.format, q.rows,
             q.cols, i);
      absmax[i] = double_quant_absmax(offset, scales[i / kDoubleQuantBlock], codes.bytes[i]);
    }
  } else {
    absmax = load_param_part(q, q.require("absmax", groups.param_shape(), DType::F32, DType::F32));
  }
  return absmax;
}

void dequantize_codebook4(const CodeBook4& book, const QuantizedTensor& q, float* out) {
  const std::vector<float> absmax = codebook4_absmax(book, q);
  const Groups groups(q.rows, q.cols, q.spec.group);
  const std::vector<uint8_t> codes = unpack_code_rows(q, 4);  // every 4-bit code is valid
  for_each_group(groups, [&](int64_t r, int64_t, int64_t i, int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) out[r * q.cols + c] = book.values[codes[r * q.cols + c]] * absmax[i];
  });
}

}  // namespace

QuantizedTensor quantize_nf4_ref(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec) {
  return quantize_codebook4(kNf4, w, rows, cols, spec);
}
void dequantize_nf4_ref(const QuantizedTensor& q, float* out) { dequantize_codebook4(kNf4, q, out); }

QuantizedTensor quantize_fp4_ref(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec) {
  return quantize_codebook4(kFp4, w, rows, cols, spec);
}
void dequantize_fp4_ref(const QuantizedTensor& q, float* out) { dequantize_codebook4(kFp4, q, out); }

namespace {
CodeParams code_params_codebook4(const CodeBook4& book, const QuantizedTensor& q) {
  CodeParams p;
  p.scale = codebook4_absmax(book, q);
  p.table.assign(book.values, book.values + 16);
  return p;
}
}  // namespace

CodeParams code_params_nf4(const QuantizedTensor& q) { return code_params_codebook4(kNf4, q); }
CodeParams code_params_fp4(const QuantizedTensor& q) { return code_params_codebook4(kFp4, q); }

double bits_per_weight_codebook4(int64_t rows, int64_t cols, const QuantSpec& spec) {
  check_quantize_args("nf4/fp4", rows, cols, spec, 4, 4);
  const Groups groups(rows, cols, spec.group);
  std::vector<PartSize> parts = {{{rows, int64_t(packed_bytes(cols, 4))}, DType::U8}};
  if (spec.double_quant) {
    parts.push_back({groups.param_shape(), DType::U8});
    parts.push_back({{double_quant_blocks(groups.count())}, DType::F32});
    parts.push_back({{1}, DType::F32});
  } else {
    parts.push_back({groups.param_shape(), DType::F32});
  }
  return layout_bits_per_weight(rows, cols, parts);
}

}  // namespace lowbit
