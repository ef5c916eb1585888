// The uniform formats' grid as a public API (see format.h: UniformGrid), following exactly the
// parameter rounding of affine.cpp and symmetric.cpp.
#include <algorithm>
#include <cmath>

#include "format_internal.h"
#include "lowbit/core/error.h"

namespace lowbit {

UniformGrid UniformGrid::fit(std::string_view format, int bits, double lo, double hi) {
  UniformGrid g;
  g.format = format;
  g.bits = bits;
  if (format == "affine") {
    if (bits < 1 || bits > 8) fail("affine grid: bits {} outside 1..8", bits);
    g.min = round_param(lo, DType::F16, Round::down);
    g.scale = round_param((hi - double(g.min)) / double((1 << bits) - 1), DType::F16, Round::up);
  } else if (format == "symmetric") {
    if (bits < 2 || bits > 8) fail("symmetric grid: bits {} outside 2..8", bits);
    const double absmax = std::max(std::fabs(lo), std::fabs(hi));
    g.scale = round_param(absmax / double((1 << (bits - 1)) - 1), DType::F16, Round::up);
  } else {
    fail("'{}' is not a uniform format (expected affine or symmetric)", format);
  }
  if (!std::isfinite(g.scale) || !std::isfinite(g.min))
    fail("{} grid: values {} .. {} are beyond float16 parameters", format, lo, hi);
  return g;
}

UniformGrid UniformGrid::fit_search(std::string_view format, int bits, const double* v, const double* weight, int64_t n,
                                    int steps, double max_shrink) {
  double lo = INFINITY, hi = -INFINITY;
  for (int64_t k = 0; k < n; ++k) {
    lo = std::min(lo, v[k]);
    hi = std::max(hi, v[k]);
  }
  if (n == 0) lo = hi = 0;
  UniformGrid best = fit(format, bits, lo, hi);
  if (steps <= 0) return best;
  auto cost = [&](const UniformGrid& g, double limit) {
    double e = 0;
    for (int64_t k = 0; k < n && e < limit; ++k) {
      const double d = v[k] - double(g.value(g.code(float(v[k]))));
      e += (weight ? weight[k] : 1.0) * d * d;
    }
    return e;
  };
  double best_cost = cost(best, INFINITY);
  for (int s = 1; s <= steps; ++s) {
    const double p = 1.0 - max_shrink * double(s) / double(steps);
    const UniformGrid g = fit(format, bits, lo * p, hi * p);
    const double c = cost(g, best_cost);  // stops early once it cannot win
    if (c < best_cost) {
      best_cost = c;
      best = g;
    }
  }
  return best;
}

uint8_t UniformGrid::code(float x) const {
  if (format == "affine") {
    const int max_code = (1 << bits) - 1;
    if (!(scale > 0)) return 0;
    return uint8_t(std::clamp(std::round((double(x) - min) / scale), 0.0, double(max_code)));
  }
  const int qmax = (1 << (bits - 1)) - 1;
  int q = 0;
  if (scale > 0) q = int(std::clamp(std::round(double(x) / scale), double(-qmax), double(qmax)));
  return uint8_t(q + (1 << (bits - 1)));
}

float UniformGrid::value(uint8_t c) const {
  if (format == "affine") return float(c) * scale + min;
  return float(int(c) - (1 << (bits - 1))) * scale;
}

QuantizedTensor pack_uniform(std::string_view format, const QuantSpec& spec, int64_t rows, int64_t cols,
                             const std::vector<uint8_t>& codes, const std::vector<UniformGrid>& grids) {
  const Groups groups(rows, cols, spec.group);
  if (int64_t(grids.size()) != groups.count())
    fail("pack_uniform: {} grids for {} groups", grids.size(), groups.count());
  if (int64_t(codes.size()) != rows * cols) fail("pack_uniform: {} codes for {} x {}", codes.size(), rows, cols);
  QuantizedTensor out;
  out.format = std::string(format);
  out.spec = spec;
  out.rows = rows;
  out.cols = cols;
  out.parts.push_back(pack_code_rows(codes, rows, cols, spec.bits));
  std::vector<float> scales, mins;
  for (const auto& g : grids) {
    scales.push_back(g.scale);
    mins.push_back(g.min);
  }
  out.parts.push_back(make_param_part("scale", DType::F16, groups.param_shape(), scales));
  if (format == "affine") out.parts.push_back(make_param_part("min", DType::F16, groups.param_shape(), mins));
  return out;
}

}  // namespace lowbit
