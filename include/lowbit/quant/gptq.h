#pragma once
// GPTQ (Frantar, Ashkboos, Hoefler, Alistarh 2022, "GPTQ: Accurate Post-Training Quantization for
// Generative Pre-trained Transformers", arXiv:2210.17323, Algorithm 1): quantizes a linear weight
// W[rows=out][cols=in] column by column, each column's rounding error spread over the columns not
// yet quantized through the inverse Hessian of the layer's inputs, H = 2/N Σ x xᵀ:
//   H += damp · mean(diag H) · I;  U = chol(H⁻¹) (upper);  for column i:
//   q_i = grid(w_i);  e = (w_i - q_i) / U_ii;  w_j -= e · U_ij for j > i
// with the updates applied lazily in blocks of `block` columns (one GEMM per block). Group grids
// are fitted when a group's first column comes up, from the error-updated weights; with act-order
// (columns by decreasing diag H) every group's grid is fitted up front ("static groups"), so the
// stored layout stays that of the format (groups of consecutive inputs).
#include <string>
#include <vector>

#include "lowbit/formats/format.h"

namespace lowbit {

struct GptqOptions {
  double damp = 0.01;    // fraction of mean(diag H) added to the diagonal
  int block = 128;       // columns per lazy batch
  bool act_order = false;
  // Layer by layer: quantize a layer's linears in the order they read their inputs (q/k/v, o,
  // gate/up, down), each Hessian gathered after the earlier ones were quantized.
  bool true_sequential = true;
  // Clipping search for each group's grid (UniformGrid::fit_search) weighted by the Hessian's
  // diagonal (each input's mean square activation): 0 = off, else the number of shrink steps.
  int clip_steps = 0;
  double clip_max_shrink = 0.5;
  // Only diag(H) is used: no error feedback between columns, so each weight is rounded to the
  // nearest point of its group's grid, and with clip_steps the grids minimise the error weighted by
  // each input's mean square activation: importance-weighted RTN (llama.cpp's imatrix idea).
  bool diagonal_only = false;
  // The clipping search weighs each element's squared error by its input's importance (diag H)
  // times sqrt(σ² + w²), σ² = 2·mean w² over the group: large weights count more, as in llama.cpp's
  // k-quants with an importance matrix (ggml-quants.c, make_qx_quants with quant_weights; read, not
  // copied). Off: the input's importance alone. The imatrix default (measured in docs/status.md).
  bool element_weights = false;
};

struct GptqResult {
  QuantizedTensor quantized;      // the uniform format's parts
  std::vector<float> dequantized;  // [rows][cols]
};

// H: [cols][cols] row-major (only read); with diagonal_only also just diag(H) (cols values).
// format: "affine" or "symmetric".
GptqResult gptq_quantize(const float* w, int64_t rows, int64_t cols, const std::vector<double>& hessian,
                         const std::string& format, const QuantSpec& spec, const GptqOptions& opt);

// Round-to-nearest on the same grids (for comparisons): what gptq_quantize gives with H = I.
GptqResult rtn_uniform(const float* w, int64_t rows, int64_t cols, const std::string& format, const QuantSpec& spec);

// tr((W - Ŵ) H (W - Ŵ)ᵀ): the layer's output error ‖WX - ŴX‖² / N up to the factor 2 in H.
double output_error(const float* w, const float* w_hat, int64_t rows, int64_t cols, const std::vector<double>& hessian);

}  // namespace lowbit
