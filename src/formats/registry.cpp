// The two tables: format_registry() (a format's name -> its functions) and scheme_registry() (what
// `lowbit quantize --scheme` accepts: a format plus its QuantSpec). Adding a format is one file in
// src/formats/ plus one row here.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "format_internal.h"
#include "lowbit/core/error.h"

namespace lowbit {

const std::vector<FormatTraits>& format_registry() {
  static const std::vector<FormatTraits> formats = {
      {"affine", "uniform asymmetric: x = q*scale + min, scale = (max-min)/(2^k-1), q in [0, 2^k-1], per group", 1, 8,
       quantize_affine_ref, dequantize_affine_ref, bits_per_weight_affine, code_params_affine},
      {"symmetric", "uniform absmax: x = q*scale, scale = absmax/(2^(k-1)-1), |q| <= 2^(k-1)-1, per group", 2, 8,
       quantize_symmetric_ref, dequantize_symmetric_ref, bits_per_weight_symmetric, code_params_symmetric},
      {"llm-int8", "LLM.int8(): x = q*scale per row (int8), input columns with outlier activations kept as F16", 8, 8,
       quantize_llm_int8_ref, dequantize_llm_int8_ref, bits_per_weight_llm_int8},
      {"nf4", "bitsandbytes NormalFloat4: x = nf4[q]*absmax per block, optional 8-bit double-quantized absmax", 4, 4,
       quantize_nf4_ref, dequantize_nf4_ref, bits_per_weight_codebook4, code_params_nf4},
      {"fp4", "bitsandbytes FP4 (E2M1): x = fp4[q]*absmax per block, optional 8-bit double-quantized absmax", 4, 4,
       quantize_fp4_ref, dequantize_fp4_ref, bits_per_weight_codebook4, code_params_fp4},
      {"kmeans", "Lloyd code book: x = codebook[q], 2^k centroids per row or per tensor", 1, 8, quantize_kmeans_ref,
       dequantize_kmeans_ref, bits_per_weight_kmeans},
      {"binary", "x = sign(x)*scale, scale = mean|x| per group", 1, 1, quantize_binary_ref, dequantize_binary_ref,
       bits_per_weight_binary},
      {"ternary", "TWN: x = t*scale, t in {-1,0,1} by |x| > 0.7*mean|x|, scale = mean of those |x|", 2, 2,
       quantize_ternary_ref, dequantize_ternary_ref, bits_per_weight_ternary},
      {"f16", "float16 cast, round to nearest even", 16, 16, quantize_f16_ref, dequantize_f16_ref,
       bits_per_weight_cast16},
      {"bf16", "bfloat16 cast, round to nearest even", 16, 16, quantize_bf16_ref, dequantize_bf16_ref,
       bits_per_weight_cast16},
  };
  return formats;
}

const FormatTraits& find_format(std::string_view name) {
  for (const auto& f : format_registry())
    if (f.name == name) return f;
  std::vector<std::string_view> names;
  for (const auto& f : format_registry()) names.push_back(f.name);
  fail("unknown quantized format '{}'; known formats: {}", name, fmt::join(names, ", "));
}

const std::vector<Scheme>& scheme_registry() {
  static const std::vector<Scheme> schemes = {
      {"int8", "symmetric", {.bits = 8, .group = 0}, "8-bit symmetric (absmax), one F16 scale per output channel"},
      {"int8-dyn", "symmetric", {.bits = 8, .group = 0},
       "int8 per channel, activations quantized to int8 per token at run time (int32 accumulation)", "dynamic"},
      {"w8a8", "symmetric", {.bits = 8, .group = 0},
       "int8 per channel, activations int8 with a static per-tensor scale calibrated by an observer (SmoothQuant-able)",
       "static"},
      {"llm-int8", "llm-int8", {.bits = 8, .group = 0},
       "LLM.int8(): int8 per channel, input columns whose calibration activations reach 6.0 kept F16 (and run in float)",
       "outliers"},
      {"int4", "affine", {.bits = 4, .group = 128}, "4-bit affine, F16 scale and min per group of 128 inputs"},
      {"int4-sym", "symmetric", {.bits = 4, .group = 32}, "4-bit symmetric (absmax), F16 scale per group of 32 inputs"},
      {"int3", "affine", {.bits = 3, .group = 64}, "3-bit affine, F16 scale and min per group of 64 inputs"},
      {"int2", "affine", {.bits = 2, .group = 64}, "2-bit affine, F16 scale and min per group of 64 inputs"},
      {"nf4", "nf4", {.bits = 4, .group = 64, .double_quant = true},
       "bitsandbytes NF4, block 64, double-quantized absmax (QLoRA)"},
      {"fp4", "fp4", {.bits = 4, .group = 64, .double_quant = true},
       "bitsandbytes FP4, block 64, double-quantized absmax"},
      {"kmeans4", "kmeans", {.bits = 4, .group = 0, .iterations = 100},
       "16-centroid k-means code book per output channel (up to 100 Lloyd iterations)"},
      {"binary", "binary", {.bits = 1, .group = 0}, "sign times mean |x| per output channel"},
      {"ternary", "ternary", {.bits = 2, .group = 0}, "{-1, 0, +1} times a scale per output channel (TWN)"},
      {"f16", "f16", {.bits = 16, .group = 0}, "float16 cast"},
      {"bf16", "bf16", {.bits = 16, .group = 0}, "bfloat16 cast"},
  };
  return schemes;
}

const Scheme& find_scheme(std::string_view name) {
  for (const auto& s : scheme_registry())
    if (s.name == name) return s;
  std::vector<std::string_view> names;
  for (const auto& s : scheme_registry()) names.push_back(s.name);
  fail("unknown quantization scheme '{}'; known schemes: {}", name, fmt::join(names, ", "));
}

}  // namespace lowbit
