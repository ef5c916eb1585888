#pragma once
// Round-to-nearest quantization of a whole checkpoint into a new folder:
//   OUT/config.json        the input's, plus "quantization_config"
//   OUT/model.safetensors  kept tensors as stored; quantized ones as their format's parts, described
//                          in __metadata__ (see formats/weights.h)
//   OUT/<tokenizer files>  copied
// The folder is assembled under a temporary name beside OUT and renamed into place when complete;
// the input is only read.
#include <filesystem>
#include <string>
#include <vector>

#include "lowbit/formats/weights.h"
#include "lowbit/quant/calibrate.h"
#include "lowbit/quant/hqq.h"
#include "lowbit/quant/recipe.h"

namespace lowbit {

struct QuantizeOptions {
  std::string scheme = "int4";  // a scheme name, optionally "@G" (see resolve_scheme)
  int64_t group_size = 0;       // > 0: overrides the group of every scheme written without "@G"
  bool quantize_embeddings = false, quantize_lm_head = false;
  std::vector<RecipeRule> rules;  // --keep / --override, in order
  std::string method = "rtn";     // "rtn", "hqq" (calibration-free), "gptq", "imatrix" or "awq" (calibrated)
  CalibrationOptions calib;       // for the calibrated methods
  GptqOptions gptq;
  AwqOptions awq;
  HqqOptions hqq;
  ActivationOptions act;          // schemes that quantize activations with calibration (w8a8, llm-int8)
  std::string awq_rounding = "imatrix";  // how AWQ rounds its scaled weights: "imatrix" or "gptq" (with `gptq`)
  // What weighs each element's error in the clipping search: "input" (its input's mean square
  // activation), "element" (that times sqrt(σ² + w²): GptqOptions::element_weights) or "" for the
  // method's default: element for imatrix and AWQ's imatrix rounding, input for GPTQ.
  std::string clip_weights;
  bool force = false;             // replace an existing OUT
  bool progress = true;
  int threads = 0;
};

struct TensorReport {
  std::string name, cls, scheme;  // scheme empty: kept
  std::vector<int64_t> shape;
  bool transposed = false;  // stored [in, out]: quantized as [out, in]
  DType dtype_in = DType::F32;
  uint64_t bytes_in = 0, bytes_out = 0;
  QuantError error;
  int64_t numel() const;
};

struct QuantizeReport {
  std::vector<TensorReport> tensors;
  uint64_t bytes_in = 0, bytes_out = 0;  // tensor data only
  int64_t params = 0, params_quantized = 0;
  double seconds = 0;
  std::vector<ActivationLayerwise::Input> activation_inputs;  // w8a8 / llm-int8: what calibration saw per input
  double bits_per_weight() const { return params ? 8.0 * double(bytes_out) / double(params) : 0; }
  // Bits per weight over the quantized tensors only (scales, zero points, code books included).
  double quantized_bits_per_weight() const;
};

QuantizeReport quantize_checkpoint(const std::filesystem::path& in, const std::filesystem::path& out,
                                   const QuantizeOptions& opt);

}  // namespace lowbit
