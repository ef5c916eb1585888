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
#include "lowbit/quant/observer.h"
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

// A weight quantized by a layer-by-layer pipeline, handed over when its layer is done.
struct CalibratedTensor {
  std::string name;
  QuantizedTensor quantized;     // as stored (AWQ / SmoothQuant: the scaled weight)
  std::vector<float> effective;  // what it amounts to in the input's terms (folds undone); empty: as stored
  float act_scale = 0;           // w8a8: the input's static int8 step (0: none)
};
// Where the pipelines hand over each weight, so that the results of a large model never pile up in
// memory (quantize writes each one out at once). Without a sink they are collected in what the
// pipeline returns.
using TensorSink = std::function<void(CalibratedTensor&&)>;

// GPTQ over every linear weight for which scheme_for(name) gives a scheme; returns them quantized
// (GptqResult::dequantized left empty), or hands them to `sink` (the map then stays empty). `model`
// must be a float model with layer-by-layer access; its weights are replaced by the dequantized
// ones as it goes, and each layer is released (CausalLM::release_layer) once its outputs are computed.
std::map<std::string, GptqResult> gptq_layerwise(
    CausalLM& model, const std::vector<std::vector<int32_t>>& windows,
    const std::function<std::optional<ResolvedScheme>(const std::string&)>& scheme_for, const GptqOptions& opt,
    bool progress, const TensorSink& sink = {});

// AWQ over the same pipeline: each linear input's statistics from the float layer, the α search and
// the folds (awq.h), then the scaled weights rounded with `rounding` (grids searched against the
// scaled inputs' mean squares: GptqOptions::diagonal_only with clip_steps). Layers are released as
// the pipeline passes them.
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
                           const GptqOptions& rounding, const AwqOptions& opt, bool progress,
                           const TensorSink& sink = {});  // sink: AwqLayerwise::quantized stays empty

// Calibrated activation quantization, layer by layer, for the schemes whose activations are
// "static" (w8a8) or "outliers" (llm-int8) in scheme_registry(). Per decoder layer:
//   1. the float layer runs over the windows; each linear input's per-column max |x| is gathered;
//   2. SmoothQuant (Xiao et al. 2022, "SmoothQuant: Accurate and Efficient Post-Training
//      Quantization for Large Language Models", arXiv:2211.10438, eq. 4), for inputs whose every
//      quantized reader is w8a8 and that have a producer to fold into (norm weights, v rows for
//      o_proj, up rows for down_proj): s_j = max|X_j|^α / max|W_j|^(1-α), the readers' columns
//      multiplied by s, the producer's channels divided (the float layer computes the same function);
//   3. LLM.int8(): the input columns where |x| reaches the threshold in at least a given fraction of
//      the calibration tokens (0.1 % by default; 0: any token, as LLM.int8() decides per batch) are
//      the outlier columns;
//   4. every reader is rounded to nearest (w8a8: int8 per row; llm-int8: int8 per row but the outlier
//      columns in F16; other schemes as their format does) and the model takes the dequantized weights;
//   5. the layer runs again with them and an observer (observer.h) picks each input's clipping
//      threshold T from its |x| histogram: the static int8 scale is T / 127;
//   6. the quantized layer's outputs feed the next layer.
struct ActivationOptions {
  // Defaults: the best of the observers x α measured on llama-16m-wiki (docs/status.md: KLD 0.0066 vs
  // 0.059 for the best observer without smoothing).
  Observer observer = Observer::Mse;
  ObserverOptions observer_opt;
  double smooth_alpha = 0.9;       // SmoothQuant's α in [0, 1]; < 0: no smoothing
  double outlier_threshold = 6.0;  // LLM.int8(): |x| from which an input column stays in 16 bits ...
  double outlier_fraction = 0.001; // ... in at least this fraction of the calibration tokens (0: any token)
};

struct ActivationLayerwise {
  struct Tensor {
    QuantizedTensor quantized;       // the stored (smoothed) weights
    std::vector<float> dequantized;  // what they amount to in the input's terms (smoothing undone)
    float act_scale = 0;             // static: the input's int8 step T / 127
  };
  std::map<std::string, Tensor> quantized;
  // Float tensors the smoothing folds changed that are not quantized (norm weights; readers or
  // producers the recipe keeps): to be written instead of the input's.
  std::map<std::string, std::vector<float>> folded;
  struct Input {  // one linear input, for reports
    std::string first_reader;
    double absmax = 0;     // max |x| seen (after smoothing)
    double threshold = 0;  // the observer's T (static readers only)
    int outliers = 0;      // columns kept in 16 bits (outlier readers only)
    double smooth_min = 1, smooth_max = 1;  // range of the SmoothQuant scales (1, 1: not smoothed)
  };
  std::vector<Input> inputs;
};

// SmoothQuant's per-channel scales s_j = max|X_j|^α / max|W_j|^(1-α) (clamped to [1e-5, 1e5]; 1 where
// either maximum is 0). Dividing X_j and multiplying W_j by s_j leaves max|X_j| / s_j =
// max|X_j|^(1-α) · max|W_j|^(1-α) and max|W_j| · s_j = max|X_j|^α · max|W_j|^α: equal at α = 0.5.
std::vector<float> smoothquant_scales(const std::vector<double>& max_abs_x, const std::vector<double>& max_abs_w,
                                      double alpha);

// The Scheme::activations of a resolved scheme ("" for weight-only schemes).
std::string_view scheme_activations(const ResolvedScheme& s);

ActivationLayerwise activation_layerwise(CausalLM& model, const std::vector<std::vector<int32_t>>& windows,
                                         const std::function<std::optional<ResolvedScheme>(const std::string&)>& scheme_for,
                                         const ActivationOptions& opt, bool progress,
                                         const TensorSink& sink = {});  // sink: ::quantized stays empty

}  // namespace lowbit
