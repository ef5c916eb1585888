#pragma once
// Private helpers shared by the format files (src/formats/*.cpp) and the per-format entry points
// that registry.cpp puts into format_registry(). Implemented in pack.cpp.
//
// Conventions every format follows:
//   - Groups: QuantSpec::group splits each row into groups of G inputs (0: the whole row, -1: the
//     whole tensor); parameters ("scale", "min", ...) have shape param_shape() = [rows][groups per
//     row], or [1][1] per tensor, and are indexed by Groups::index(row, group).
//   - Parameters are stored as F16 unless that would overflow (|v| > 65504) or every parameter of
//     the tensor lies below F16's normal range (2^-14), where F16 keeps too few significant bits;
//     then the whole tensor's parameters are F32. bits_per_weight() counts the F16 case.
//   - Quantization always uses the *stored* (rounded) parameters, so the codes are the best ones for
//     what dequantize will see.
#include <cstdint>
#include <string_view>
#include <vector>

#include "lowbit/formats/format.h"

namespace lowbit {

// ---- groups -------------------------------------------------------------------------------------

struct Groups {
  int64_t rows = 0, cols = 0;
  int64_t size = 0;     // inputs per group (the last group of a row may be shorter)
  int64_t per_row = 0;  // groups per row
  bool per_tensor = false;

  Groups(int64_t rows, int64_t cols, int64_t group);  // group as in QuantSpec::group; checked
  int64_t count() const { return per_tensor ? 1 : rows * per_row; }  // number of parameter sets
  int64_t index(int64_t row, int64_t g) const { return per_tensor ? 0 : row * per_row + g; }
  int64_t begin(int64_t g) const { return g * size; }                          // first column
  int64_t end(int64_t g) const { return g + 1 == per_row ? cols : (g + 1) * size; }  // one past last
  std::vector<int64_t> param_shape() const {
    return per_tensor ? std::vector<int64_t>{1, 1} : std::vector<int64_t>{rows, per_row};
  }
};

// Calls fn(row, g, param_index, first_col, end_col) for every group of every row, in row-major order.
template <typename Fn>
void for_each_group(const Groups& groups, Fn&& fn) {
  for (int64_t r = 0; r < groups.rows; ++r)
    for (int64_t g = 0; g < groups.per_row; ++g) fn(r, g, groups.index(r, g), groups.begin(g), groups.end(g));
}

// ---- argument checks ----------------------------------------------------------------------------

// Checks what quantize() receives: rows, cols >= 1 (and a sane product), bits in [min_bits, max_bits],
// group >= -1, iterations >= 0. Throws lowbit::Error naming the format.
void check_quantize_args(std::string_view format, int64_t rows, int64_t cols, const QuantSpec& spec,
                         int min_bits, int max_bits);
// Checks a QuantizedTensor's header before its parts: format name, rows, cols, bits, group.
void check_quantized_header(const QuantizedTensor& q, std::string_view format, int min_bits, int max_bits);

// ---- parameter storage --------------------------------------------------------------------------

enum class Round { nearest, up, down };

// v rounded to a value representable in `dtype` (F16 or F32), in the given direction. The result
// may be +-Inf when v is beyond the type's range.
float round_param(double v, DType dtype, Round mode);

// F16 if every value rounds to a finite F16 and the largest magnitude is 0 or >= 2^-14; else F32.
DType choose_param_dtype(const std::vector<double>& values, Round mode);

// A part holding `values` (already representable in dtype) as F16 or F32, of the given shape.
QuantPart make_param_part(std::string_view suffix, DType dtype, std::vector<int64_t> shape,
                          const std::vector<float>& values);
// The float values of a validated F16/F32/BF16 part. Throws if one is not finite.
std::vector<float> load_param_part(const QuantizedTensor& q, const QuantPart& part);

// ---- codes --------------------------------------------------------------------------------------

// Packs codes[rows][cols] (each < 2^bits) into part "q": U8 [rows][packed_bytes(cols, bits)].
QuantPart pack_code_rows(const std::vector<uint8_t>& codes, int64_t rows, int64_t cols, int bits);
// Validates part "q" of q (U8, [rows][packed_bytes(cols, bits)]) and unpacks it to codes[rows][cols].
std::vector<uint8_t> unpack_code_rows(const QuantizedTensor& q, int bits);

// Bits per weight of a layout: every part's element count times its element size, over rows*cols.
struct PartSize {
  std::vector<int64_t> shape;
  DType dtype;
};
double layout_bits_per_weight(int64_t rows, int64_t cols, const std::vector<PartSize>& parts);

// ---- the formats (one file each; registry.cpp lists them) ---------------------------------------

// affine.cpp
QuantizedTensor quantize_affine_ref(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec);
void dequantize_affine_ref(const QuantizedTensor& q, float* out);
CodeParams code_params_affine(const QuantizedTensor& q);
CodeParams code_params_symmetric(const QuantizedTensor& q);
CodeParams code_params_nf4(const QuantizedTensor& q);
CodeParams code_params_fp4(const QuantizedTensor& q);
double bits_per_weight_affine(int64_t rows, int64_t cols, const QuantSpec& spec);
// symmetric.cpp
QuantizedTensor quantize_symmetric_ref(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec);
void dequantize_symmetric_ref(const QuantizedTensor& q, float* out);
double bits_per_weight_symmetric(int64_t rows, int64_t cols, const QuantSpec& spec);
// llm_int8.cpp
QuantizedTensor quantize_llm_int8_ref(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec);
void dequantize_llm_int8_ref(const QuantizedTensor& q, float* out);
double bits_per_weight_llm_int8(int64_t rows, int64_t cols, const QuantSpec& spec);
// codebook4.cpp
QuantizedTensor quantize_nf4_ref(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec);
void dequantize_nf4_ref(const QuantizedTensor& q, float* out);
QuantizedTensor quantize_fp4_ref(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec);
void dequantize_fp4_ref(const QuantizedTensor& q, float* out);
double bits_per_weight_codebook4(int64_t rows, int64_t cols, const QuantSpec& spec);
// kmeans.cpp
QuantizedTensor quantize_kmeans_ref(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec);
void dequantize_kmeans_ref(const QuantizedTensor& q, float* out);
double bits_per_weight_kmeans(int64_t rows, int64_t cols, const QuantSpec& spec);
// binary.cpp
QuantizedTensor quantize_binary_ref(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec);
void dequantize_binary_ref(const QuantizedTensor& q, float* out);
double bits_per_weight_binary(int64_t rows, int64_t cols, const QuantSpec& spec);
QuantizedTensor quantize_ternary_ref(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec);
void dequantize_ternary_ref(const QuantizedTensor& q, float* out);
double bits_per_weight_ternary(int64_t rows, int64_t cols, const QuantSpec& spec);
// cast.cpp
QuantizedTensor quantize_f16_ref(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec);
void dequantize_f16_ref(const QuantizedTensor& q, float* out);
QuantizedTensor quantize_bf16_ref(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec);
void dequantize_bf16_ref(const QuantizedTensor& q, float* out);
double bits_per_weight_cast16(int64_t rows, int64_t cols, const QuantSpec& spec);

}  // namespace lowbit
