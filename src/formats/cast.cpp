// Float16 and bfloat16 "formats": plain casts, round to nearest even, no packing and no scales.
//
// Parts:
//   "q"  F16 (f16) or BF16 (bf16) [rows][cols]  the cast values
//
// A value whose cast would overflow to Inf (|x| > 65504 for f16, beyond bfloat16's range for bf16)
// is an error, not a silent Inf: the message names the position and suggests another format.
// Values below f16's subnormal range become 0. Bits per weight: 16.
#include <cmath>
#include <cstring>

#include "format_internal.h"
#include "lowbit/core/error.h"

namespace lowbit {

namespace {

struct Cast16 {
  std::string_view format;
  DType dtype;
  uint16_t (*encode)(float);
  float (*decode)(uint16_t);
  std::string_view type_name;  // for messages
  std::string_view hint;       // what to use instead when a value does not fit
};
constexpr Cast16 kF16{"f16", DType::F16, f32_to_f16, f16_to_f32, "float16", "use bf16 or a quantized format"};
constexpr Cast16 kBF16{"bf16", DType::BF16, f32_to_bf16, bf16_to_f32, "bfloat16", "use f16 or a quantized format"};

QuantizedTensor quantize_cast16(const Cast16& cast, const float* w, int64_t rows, int64_t cols, const QuantSpec& spec) {
  check_quantize_args(cast.format, rows, cols, spec, 16, 16);
  QuantPart part{"q", cast.dtype, {rows, cols}, std::vector<uint8_t>(size_t(rows * cols) * 2)};
  for (int64_t i = 0; i < rows * cols; ++i) {
    const uint16_t h = cast.encode(w[i]);
    if (!std::isfinite(cast.decode(h)))
      fail("quantize {}: value {} at [{}, {}] is beyond the {} range; {}", cast.format, w[i], i / cols, i % cols,
           cast.type_name, cast.hint);
    std::memcpy(part.bytes.data() + 2 * i, &h, 2);
  }
  QuantizedTensor out;
  out.format = std::string(cast.format);
  out.spec = spec;
  out.rows = rows;
  out.cols = cols;
  out.parts.push_back(std::move(part));
  return out;
}

void dequantize_cast16(const Cast16& cast, const QuantizedTensor& q, float* out) {
  check_quantized_header(q, cast.format, 16, 16);
  const QuantPart& part = q.require("q", {q.rows, q.cols}, cast.dtype, cast.dtype);
  const int64_t n = q.rows * q.cols;
  for (int pass = 0; pass < 2; ++pass) {  // validate everything, then write
    for (int64_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, part.bytes.data() + 2 * i, 2);
      const float x = cast.decode(h);
      if (pass == 1) {
        out[i] = x;
      } else if (!std::isfinite(x)) {
        fail("{} tensor [{} x {}]: part 'q' holds a non-finite value at [{}, {}]", q.format, q.rows, q.cols,
             i / q.cols, i % q.cols);
      }
    }
  }
}

}  // namespace

QuantizedTensor quantize_f16_ref(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec) {
  return quantize_cast16(kF16, w, rows, cols, spec);
}
void dequantize_f16_ref(const QuantizedTensor& q, float* out) { dequantize_cast16(kF16, q, out); }

QuantizedTensor quantize_bf16_ref(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec) {
  return quantize_cast16(kBF16, w, rows, cols, spec);
}
void dequantize_bf16_ref(const QuantizedTensor& q, float* out) { dequantize_cast16(kBF16, q, out); }

double bits_per_weight_cast16(int64_t rows, int64_t cols, const QuantSpec& spec) {
  check_quantize_args("f16/bf16", rows, cols, spec, 16, 16);
  return layout_bits_per_weight(rows, cols, {{{rows, cols}, DType::F16}});
}

}  // namespace lowbit
