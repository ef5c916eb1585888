#pragma once
// AWQ (Lin, Tang, Tang, Yang, Dang, Gan, Han 2023, "AWQ: Activation-aware Weight Quantization for
// LLM Compression and Acceleration", arXiv:2306.00978, section 3.2): the weights that meet large
// activations matter most, so each input channel c of the linears that read one input is scaled up
// before rounding and the input scaled down by the same factor, folded into whatever produces the
// input (an RMSNorm's weight, or the rows of the linear before):
//   W x = (W diag(s)) (diag(s)⁻¹ x),   s_c = mean|x_c|^α / sqrt(max_c · min_c)   (α in [0, 1])
// α is searched on a grid, minimising the output error of the quantized linears on the calibration
// inputs, Σ_i ‖W_i X − Q(W_i diag(s)) diag(s)⁻¹ X‖² = Σ_i tr(E_i H Eᵀ_i) with H = Σ x xᵀ / N
// (output_error). The quantized model then rounds W diag(s) (with the grid clipping search the
// paper's auto-clip also does, here weighted by each input's mean square, as imatrix).
#include <string>
#include <vector>

#include "lowbit/formats/format.h"

namespace lowbit {

struct AwqOptions {
  int grid = 20;  // α = 0, 1/grid, ..., (grid-1)/grid (the paper's grid of 20)
};

struct AwqScales {
  std::vector<float> s;  // per producer channel (what gets folded)
  double alpha = 0;
  double loss = 0;        // Σ output_error at the chosen α
  double loss_plain = 0;  // the same at α = 0 (s = 1: the search's rounding alone)
};

// One input shared by `weights` (each [rows_i][cols], row-major). mean_abs: mean |x| per producer
// channel; tie[c]: the producer channel of input column c (several columns may share one, e.g. the
// value heads that grouped-query attention repeats); empty: the identity (mean_abs.size() == cols).
// H: [cols][cols] (symmetric). Rounding while searching: the format's own quantize (round to
// nearest), or with `rounding` gptq_quantize against the scaled input's Hessian diag(s)⁻¹ H diag(s)⁻¹
// (imatrix's weighted grid search when rounding->diagonal_only): the α chosen for the rounding the
// model will get. α = 0 (s = 1) is on the grid, so the result never loses to the search's rounding
// alone on the calibration inputs (awq_layerwise searches with imatrix's rounding also when GPTQ
// rounds the result: it stands in for it).
AwqScales awq_search(const std::vector<std::pair<const float*, int64_t>>& weights, int64_t cols,
                     const std::vector<double>& mean_abs, const std::vector<int>& tie, const std::vector<double>& h,
                     const std::string& format, const QuantSpec& spec, const AwqOptions& opt,
                     const struct GptqOptions* rounding = nullptr);

}  // namespace lowbit
