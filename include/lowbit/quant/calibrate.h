#pragma once
// Calibrated quantization, layer by layer: the float model runs one decoder layer at a time over the
// calibration windows; each linear layer's input Hessian (2/N Σ x xᵀ) is gathered, the layer's
// weights are quantized (GPTQ; with true-sequential one group of linears at a time, each Hessian
// taken after the earlier ones were quantized), and the *quantized* layer's outputs feed the next
// layer. Memory: the
// calibration activations [windows][ctx][hidden] plus one layer's Hessians.
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "lowbit/formats/format.h"
#include "lowbit/io/tokenizer.h"
#include "lowbit/models/model.h"
#include "lowbit/quant/gptq.h"
#include "lowbit/quant/recipe.h"

namespace lowbit {

struct CalibrationOptions {
  std::filesystem::path file;  // plain text; never the evaluation text
  int samples = 128;           // windows
  int ctx = 512;               // tokens per window (BOS included when the tokenizer adds one)
  uint64_t seed = 0;           // window positions are drawn with this seed
};

// `samples` windows at seeded random offsets of the tokenized file (BOS + ctx-1 tokens with a BOS).
std::vector<std::vector<int32_t>> calibration_windows(const Tokenizer& tok, const CalibrationOptions& opt);

// GPTQ over every linear weight for which scheme_for(name) gives a scheme; returns them quantized.
// `model` must be a float model with layer-by-layer access; its weights are replaced by the
// dequantized ones as it goes.
std::map<std::string, GptqResult> gptq_layerwise(
    CausalLM& model, const std::vector<std::vector<int32_t>>& windows,
    const std::function<std::optional<ResolvedScheme>(const std::string&)>& scheme_for, const GptqOptions& opt,
    bool progress);

}  // namespace lowbit
