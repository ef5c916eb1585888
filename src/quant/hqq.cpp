#include "lowbit/quant/hqq.h"

#include <algorithm>
#include <cmath>

#include "lowbit/core/dtype.h"
#include "lowbit/core/error.h"

namespace lowbit {

namespace {

// One group's grid: the min/max step of round to nearest, then the zero point searched.
UniformGrid fit_group(const float* v, int64_t n, int bits, const HqqOptions& opt, std::vector<double>& err) {
  double lo = INFINITY, hi = -INFINITY;
  for (int64_t k = 0; k < n; ++k) lo = std::min(lo, double(v[k])), hi = std::max(hi, double(v[k]));
  UniformGrid g = UniformGrid::fit("affine", bits, lo, hi);
  if (!(g.scale > 0)) return g;  // a constant group: nothing to search
  const double s = g.scale;
  UniformGrid best = g;
  double best_err = INFINITY, beta = opt.beta, z = -double(g.min) / s;
  err.resize(size_t(n));
  for (int it = 0; it <= opt.iterations; ++it) {
    // Q and Ŵ of the current zero point, as the stored (F16) min gives them.
    g.min = f16_to_f32(f32_to_f16(float(-z * s)));
    double mean_abs = 0;
    for (int64_t k = 0; k < n; ++k) {
      err[size_t(k)] = double(v[k]) - double(g.value(g.code(v[k])));
      mean_abs += std::fabs(err[size_t(k)]);
    }
    mean_abs /= double(n);
    if (mean_abs < best_err) {
      best_err = mean_abs;
      best = g;
    } else if (it > 0) {
      break;  // the authors stop at the first iterate that does not improve
    }
    if (it == opt.iterations) break;
    // E = shrink_p(W − Ŵ), then the zero point that makes s·(Q − z) fit W − E best in l2.
    double zsum = 0;
    for (int64_t k = 0; k < n; ++k) {
      const double x = err[size_t(k)], a = std::fabs(x);
      const double e = a > 0 ? std::copysign(std::max(a - std::pow(a, opt.p - 1.0) / beta, 0.0), x) : 0.0;
      zsum += double(g.code(v[k])) - (double(v[k]) - e) / s;
    }
    z = zsum / double(n);
    beta *= opt.kappa;
  }
  return best;
}

}  // namespace

GptqResult hqq_quantize(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec, const HqqOptions& opt) {
  if (opt.iterations < 0 || !(opt.p > 0 && opt.p <= 1) || !(opt.beta > 0) || !(opt.kappa >= 1))
    fail("hqq: iterations >= 0, p in (0, 1], beta > 0 and kappa >= 1 expected");
  const bool per_tensor = spec.group < 0;
  const int64_t size = spec.group > 0 ? std::min(spec.group, cols) : cols;
  const int64_t per_row = per_tensor ? 1 : (cols + size - 1) / size;
  std::vector<UniformGrid> grids(size_t(per_tensor ? 1 : rows * per_row));
  if (per_tensor) {
    std::vector<double> err;
    grids[0] = fit_group(w, rows * cols, spec.bits, opt, err);
  } else {
    // Serial: quantize_checkpoint already runs one tensor per thread.
    std::vector<double> err;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t g = 0; g < per_row; ++g) {
        const int64_t c0 = g * size, c1 = std::min(cols, c0 + size);
        grids[size_t(r * per_row + g)] = fit_group(w + r * cols + c0, c1 - c0, spec.bits, opt, err);
      }
  }
  GptqResult out;
  std::vector<uint8_t> codes(size_t(rows * cols));
  out.dequantized.resize(codes.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const UniformGrid& g = grids[per_tensor ? 0 : size_t(r * per_row + c / size)];
      const size_t i = size_t(r * cols + c);
      codes[i] = g.code(w[i]);
      out.dequantized[i] = g.value(codes[i]);
    }
  out.quantized = pack_uniform("affine", spec, rows, cols, codes, grids);
  return out;
}

}  // namespace lowbit
