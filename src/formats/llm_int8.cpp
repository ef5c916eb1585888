// LLM.int8() weights (Dettmers, Lewis, Belkada, Zettlemoyer 2022, "LLM.int8(): 8-bit Matrix
// Multiplication for Transformers at Scale", arXiv:2208.07339, section 3.2 "mixed-precision
// decomposition"): the input columns whose activations reach a threshold (the "outlier features",
// found on calibration data: quant/calibrate.h) stay in 16 bits; every other column is int8 with one
// absmax scale per output row ("vector-wise"), as the 8-bit symmetric format stores it:
//
//   scale[r] = max over non-outlier c of |w[r][c]| / 127     (rounded up to the stored type)
//   q[r][c]  = round(w[r][c] / scale[r]) for non-outlier c;  0 for outlier c
//   x^[r][c] = q[r][c] * scale[r];  x^[r][cols[j]] = outlier[r][j]
//
// Parts:
//   "q"        U8        [rows][cols]   codes u = q + 128 (as "symmetric" 8-bit); outlier columns hold 128
//   "scale"    F16 (F32) [rows][1]
//   "cols"     I32       [k]            the outlier columns, strictly ascending, each < cols
//   "outlier"  F16 (F32) [rows][k]      their weights
// With no outlier column (k = 0) the last two parts are absent and the tensor is 8-bit symmetric
// per row. Bits per weight: 8 + 16 / cols + k * (16 * rows + 32) / (rows * cols).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "format_internal.h"
#include "lowbit/core/error.h"

namespace lowbit {

namespace {

void check_spec(const QuantSpec& spec) {
  if (spec.bits != 8) fail("llm-int8: bits must be 8, got {}", spec.bits);
  if (spec.group != 0) fail("llm-int8: group must be 0 (one scale per output row), got {}", spec.group);
}

// The "q" and "scale" parts as an 8-bit symmetric tensor, for symmetric.cpp to quantize / validate.
QuantizedTensor as_symmetric(const QuantizedTensor& q) {
  QuantizedTensor s;
  s.format = "symmetric";
  s.spec = {.bits = 8, .group = 0};
  s.rows = q.rows;
  s.cols = q.cols;
  for (const auto& p : q.parts)
    if (p.suffix == "q" || p.suffix == "scale") s.parts.push_back(p);
  return s;
}

}  // namespace

QuantizedTensor quantize_llm_int8(const float* w, int64_t rows, int64_t cols, const std::vector<int32_t>& outlier_cols) {
  const QuantSpec spec{.bits = 8, .group = 0};
  check_quantize_args("llm-int8", rows, cols, spec, 8, 8);
  for (size_t j = 0; j < outlier_cols.size(); ++j)
    if (outlier_cols[j] < 0 || outlier_cols[j] >= cols || (j > 0 && outlier_cols[j] <= outlier_cols[j - 1]))
      fail("llm-int8: outlier columns must be ascending and below {}; column {} is {}", cols, j, outlier_cols[j]);
  const size_t k = outlier_cols.size();
  std::vector<float> inliers(w, w + rows * cols);
  std::vector<double> kept(static_cast<size_t>(rows) * k);
  for (int64_t r = 0; r < rows; ++r)
    for (size_t j = 0; j < k; ++j) {
      float& v = inliers[size_t(r * cols + outlier_cols[j])];
      kept[size_t(r) * k + j] = v;
      v = 0.0f;
    }
  QuantizedTensor out = quantize_symmetric_ref(inliers.data(), rows, cols, spec);
  out.format = "llm-int8";
  if (k == 0) return out;
  QuantPart idx{"cols", DType::I32, {int64_t(k)}, std::vector<uint8_t>(k * sizeof(int32_t))};
  std::memcpy(idx.bytes.data(), outlier_cols.data(), idx.bytes.size());
  out.parts.push_back(std::move(idx));
  const DType dtype = choose_param_dtype(kept, Round::nearest);
  std::vector<float> values(kept.size());
  for (size_t i = 0; i < kept.size(); ++i) values[i] = round_param(kept[i], dtype, Round::nearest);
  out.parts.push_back(make_param_part("outlier", dtype, {rows, int64_t(k)}, values));
  return out;
}

QuantizedTensor quantize_llm_int8_ref(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec) {
  check_spec(spec);
  return quantize_llm_int8(w, rows, cols, {});  // no activations seen: no outlier column
}

LlmInt8Outliers llm_int8_outliers(const QuantizedTensor& q) {
  check_quantized_header(q, "llm-int8", 8, 8);
  check_spec(q.spec);
  LlmInt8Outliers o;
  const QuantPart* idx = q.find("cols");
  const QuantPart* vals = q.find("outlier");
  if (!idx && !vals) return o;
  if (!idx || !vals) fail("llm-int8 tensor [{} x {}]: parts 'cols' and 'outlier' come together; one is missing", q.rows, q.cols);
  if (idx->dtype != DType::I32 || idx->shape.size() != 1 || idx->shape[0] < 1 || idx->shape[0] > q.cols ||
      idx->bytes.size() != size_t(idx->shape[0]) * sizeof(int32_t))
    fail("llm-int8 tensor [{} x {}]: part 'cols' must be I32 [k] with 1 <= k <= {}", q.rows, q.cols, q.cols);
  const int64_t k = idx->shape[0];
  o.cols.resize(size_t(k));
  std::memcpy(o.cols.data(), idx->bytes.data(), idx->bytes.size());
  for (int64_t j = 0; j < k; ++j)
    if (o.cols[size_t(j)] < 0 || o.cols[size_t(j)] >= q.cols || (j > 0 && o.cols[size_t(j)] <= o.cols[size_t(j - 1)]))
      fail("llm-int8 tensor [{} x {}]: part 'cols' entry {} is {}: expected strictly ascending columns below {}", q.rows,
           q.cols, j, o.cols[size_t(j)], q.cols);
  o.weights = load_param_part(q, q.require("outlier", {q.rows, k}, DType::F16, DType::F32));
  return o;
}

void dequantize_llm_int8_ref(const QuantizedTensor& q, float* out) {
  const LlmInt8Outliers o = llm_int8_outliers(q);
  const QuantizedTensor s = as_symmetric(q);
  const std::vector<uint8_t> codes = unpack_code_rows(s, 8);
  for (int64_t r = 0; r < q.rows; ++r)
    for (int32_t c : o.cols)
      if (codes[size_t(r * q.cols + c)] != 128)
        fail("llm-int8 tensor [{} x {}]: part 'q' has code {} at [{}, {}], an outlier column (expected 128)", q.rows,
             q.cols, codes[size_t(r * q.cols + c)], r, c);
  dequantize_symmetric_ref(s, out);
  const size_t k = o.cols.size();
  for (int64_t r = 0; r < q.rows; ++r)
    for (size_t j = 0; j < k; ++j) out[r * q.cols + o.cols[j]] = o.weights[size_t(r) * k + j];
}

double bits_per_weight_llm_int8(int64_t rows, int64_t cols, const QuantSpec& spec) {
  check_quantize_args("llm-int8", rows, cols, spec, 8, 8);
  check_spec(spec);
  return bits_per_weight_symmetric(rows, cols, spec);  // before calibration: no outlier column
}

}  // namespace lowbit
