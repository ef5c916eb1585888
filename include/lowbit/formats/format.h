#pragma once
// Quantized formats: each one is a file under src/formats/ with a scalar reference quantize /
// dequantize (the specification) and its bit packing, and one row in format_registry(), the table
// that the CLI, the checkpoint loader, tests and benchmarks loop over.
//
// A quantized weight W[rows][cols] (rows = output channels, cols = inputs) is stored as named parts,
// each written to safetensors as "<tensor name>.<suffix>":
//   "q"        packed codes, U8 [rows][ceil(cols * bits / 8)], each row a little-endian bit stream
//              (code i of a row occupies bits [i*bits, (i+1)*bits), LSB first; rows start on a byte)
//   "scale"    F16 (or F32) scales, [rows][groups_per_row] (per tensor: [1][1])
//   "min"      affine formats: the group minimum, same shape as "scale"
//   "codebook" code-book formats: F16/F32 centroids
//   ...        other format-specific parts (documented in the format's file)
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lowbit/core/dtype.h"

namespace lowbit {

// What a scheme asks of a format.
struct QuantSpec {
  int bits = 4;
  // Inputs per group along a row. 0: one group per row (per output channel). -1: one group for the
  // whole tensor. Otherwise any G >= 1; the last group of a row is shorter when G does not divide cols.
  int64_t group = 0;
  bool double_quant = false;  // NF4/FP4: block scales quantized to 8 bits in blocks of 256 (QLoRA)
  int iterations = 20;        // k-means: Lloyd iterations
};

struct QuantPart {
  std::string suffix;  // "q", "scale", "min", "codebook", ...
  DType dtype = DType::U8;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

struct QuantizedTensor {
  std::string format;  // a format_registry() name
  QuantSpec spec;
  int64_t rows = 0, cols = 0;
  std::vector<QuantPart> parts;

  const QuantPart* find(std::string_view suffix) const;
  // The part, checked: present, of dtype `dtype` (or `alt`) and of shape `shape`; throws lowbit::Error.
  const QuantPart& require(std::string_view suffix, std::vector<int64_t> shape, DType dtype, DType alt) const;
  uint64_t bytes() const;  // all parts
};

// Formats whose every value is table[code] * scale[group] + offset[group] (affine, symmetric, NF4,
// FP4) describe themselves with these, so kernels can compute on the stored codes directly.
struct CodeParams {
  std::vector<float> table;          // value of each code before scaling (2^bits entries)
  std::vector<float> scale, offset;  // per group as stored: [rows][groups per row], or [1] per tensor; offset may be empty
  int invalid_code = -1;             // a code the format never writes (symmetric: 0), or -1
  // The parts that hold scale / offset exactly as listed above (per group, as stored), so that a
  // kernel may read them in place; empty where they are computed (NF4's double-quantized absmax).
  std::string scale_part, offset_part;
};

struct FormatTraits {
  std::string_view name;         // "affine", "symmetric", "nf4", "fp4", "kmeans", "binary", "ternary", "f16", "bf16"
  std::string_view description;  // one line, with the formula
  int min_bits, max_bits;        // accepted QuantSpec::bits
  // Quantizes w[rows][cols]. The caller has checked that every value is finite.
  QuantizedTensor (*quantize)(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec);
  // Reconstructs out[rows][cols]. Validates every part first (presence, dtype, shape, code range) and
  // throws lowbit::Error saying which part is wrong: the input may come from an untrusted file.
  void (*dequantize)(const QuantizedTensor& q, float* out);
  // Storage cost in bits per weight, counting every scale, zero point and code book.
  double (*bits_per_weight)(int64_t rows, int64_t cols, const QuantSpec& spec);
  // The CodeParams of a tensor, from every part but "q" (validated as dequantize does; "q" itself
  // need not be loaded). nullptr for formats that are not table * scale + offset.
  CodeParams (*code_params)(const QuantizedTensor& q) = nullptr;
};

const std::vector<FormatTraits>& format_registry();
const FormatTraits& find_format(std::string_view name);  // throws, listing the known names

// Groups per row and the length of group g under spec.group (see QuantSpec::group).
int64_t groups_per_row(int64_t cols, int64_t group);

// k-bit little-endian bit streams (k = 1..8): packs n codes (each < 2^k) into ceil(n*k/8) bytes.
size_t packed_bytes(int64_t n, int bits);
void pack_bits(const uint8_t* codes, int64_t n, int bits, uint8_t* out);
void unpack_bits(const uint8_t* packed, int64_t n, int bits, uint8_t* codes);

// The grid of the uniform formats ("affine", "symmetric") for one group, as their quantize_*_ref
// choose and store it (F16 parameters rounded so the group's range stays inside the grid), for
// algorithms that pick codes themselves (GPTQ) and must produce the same layout.
struct UniformGrid {
  std::string_view format;  // "affine" or "symmetric"
  int bits = 4;
  float scale = 0, min = 0;  // symmetric: min is 0
  // The grid for values in [lo, hi] (symmetric: absmax = max(|lo|, |hi|)); F16 parameters.
  static UniformGrid fit(std::string_view format, int bits, double lo, double hi);
  // The grid for values v[0..n) that minimises sum_k weight[k] * (v[k] - dequantized v[k])^2 among
  // the ranges [p * lo, p * hi], p = 1, 1 - max_shrink / steps, ..., 1 - max_shrink (clipping the
  // extremes can cost them little and buy every other value a finer step). weight == nullptr: all 1.
  // steps == 0 is fit() on [min v, max v]. The search of GPTQ's authors (quant.py, "mse"), with
  // lowbit's weighted squared error in place of their |err|^2.4.
  static UniformGrid fit_search(std::string_view format, int bits, const double* v, const double* weight, int64_t n,
                                int steps, double max_shrink);
  uint8_t code(float x) const;        // nearest grid point's stored code
  float value(uint8_t code) const;    // what dequantize gives for that code
};
// A uniform-format tensor from codes[rows][cols] and one grid per group (Groups order: row-major
// [rows][groups per row], or one for the whole tensor).
QuantizedTensor pack_uniform(std::string_view format, const QuantSpec& spec, int64_t rows, int64_t cols,
                             const std::vector<uint8_t>& codes, const std::vector<UniformGrid>& grids);

// LLM.int8()'s weights (src/formats/llm_int8.cpp): int8 per output row, except the input columns
// `outlier_cols` (ascending; found on calibration activations), kept in 16 bits.
QuantizedTensor quantize_llm_int8(const float* w, int64_t rows, int64_t cols, const std::vector<int32_t>& outlier_cols);
struct LlmInt8Outliers {
  std::vector<int32_t> cols;   // ascending input columns
  std::vector<float> weights;  // [rows][cols.size()]
};
// The 16-bit columns of an "llm-int8" tensor, validated (none when the tensor has no outlier part).
LlmInt8Outliers llm_int8_outliers(const QuantizedTensor& q);

// Named schemes (what `lowbit quantize --scheme` accepts): a format plus its spec.
struct Scheme {
  std::string_view name;         // "int8", "int4", "int3", "int2", "nf4", "fp4", "kmeans4", "binary", "ternary", "f16", "bf16"
  std::string_view format;
  QuantSpec spec;
  std::string_view description;
  // What the scheme does to a linear layer's inputs at run time: "" (nothing: float activations),
  // "dynamic" (int8 per token, int8-dyn), "static" (int8 with a calibrated per-tensor scale, w8a8),
  // "outliers" (LLM.int8(): calibrated outlier columns in float, the rest int8 per token). The last
  // two need calibration data even with round-to-nearest weights.
  std::string_view activations = "";
};
const std::vector<Scheme>& scheme_registry();
const Scheme& find_scheme(std::string_view name);  // throws, listing the known names

}  // namespace lowbit
