#pragma once
// HQQ, half-quadratic quantization (Badri & Shaji 2023, "Half-Quadratic Quantization of Large
// Machine Learning Models", mobiusml.github.io/hqq_blog): calibration-free. Each group keeps its
// min/max step and searches its zero point to minimise an l_p error with p < 1, which lets a few
// outlying weights keep a large error instead of dragging every other weight's rounding:
//   min_z ‖W − s·(Q(W/s + z) − z)‖_p^p,  solved by half-quadratic splitting with an auxiliary error E:
//   Q = round(W/s + z);  E = shrink_p(W − s·(Q − z), β);  z = mean(Q − (W − E)/s);  β ← κ·β
// with shrink_p(x, β) = sign(x)·max(|x| − |x|^(p−1)/β, 0) (generalised soft thresholding). The
// iterate with the smallest mean |W − Ŵ| is kept (the first is round to nearest), as the authors'
// code does. Output: the affine format (F16 scale and min per group; min = −z·s).
#include "lowbit/formats/format.h"
#include "lowbit/quant/gptq.h"

namespace lowbit {

struct HqqOptions {
  int iterations = 20;
  double p = 0.7, beta = 10.0, kappa = 1.01;  // the authors' defaults
};

// w [rows][cols]; spec.group as for the formats (> 0 groups along a row, 0 one per row, -1 one per
// tensor). Affine only.
GptqResult hqq_quantize(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec, const HqqOptions& opt);

}  // namespace lowbit
