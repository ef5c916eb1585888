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
#include "lowbit/quant/awq.h"
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

// AWQ over the same pipeline: each linear input's statistics from the float layer, the α search and
// the folds (awq.h), then the scaled weights rounded with `rounding` (grids searched against the
// scaled inputs' mean squares: GptqOptions::diagonal_only with clip_steps). The model ends with
// the effective (folded) float weights of the quantized model.
struct AwqLayerwise {
  // By name: the stored (scaled) weights, and as `dequantized` what they amount to in the input's
  // terms (the folds undone), to measure the error against the input.
  std::map<std::string, GptqResult> quantized;
  // Float tensors the folds changed that are not quantized (norm weights; readers or producers the
  // recipe keeps): to be written instead of the input's.
  std::map<std::string, std::vector<float>> folded;
  struct Search {
    std::string first_reader;
    double alpha, loss, loss_plain;
  };
  std::vector<Search> searches;
};
// Scales the input channels of `readers` by s (per producer channel; the producer's tie maps input
// columns to them) and divides the producer's output channels by s, so the float layer computes the
// same function. Returns s per input column.
std::vector<float> fold_input_scales(CausalLM& model, const std::vector<std::string>& readers,
                                     const CausalLM::InputProducer& producer, const std::vector<float>& s);

AwqLayerwise awq_layerwise(CausalLM& model, const std::vector<std::vector<int32_t>>& windows,
                           const std::function<std::optional<ResolvedScheme>(const std::string&)>& scheme_for,
                           const GptqOptions& rounding, const AwqOptions& opt, bool progress);

}  // namespace lowbit
