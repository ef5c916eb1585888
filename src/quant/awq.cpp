#include "lowbit/quant/awq.h"

#include <algorithm>
#include <cmath>

#include "lowbit/core/error.h"
#include "lowbit/quant/gptq.h"

namespace lowbit {

namespace {

// Σ_i tr(E_i H E_iᵀ) with E_i = W_i − Q(W_i diag(s)) diag(s)⁻¹, s per input column; Q the format's
// round to nearest, or gptq_quantize with `rounding` against diag(s)⁻¹ H diag(s)⁻¹.
double scaled_rounding_error(const std::vector<std::pair<const float*, int64_t>>& weights, int64_t cols,
                             const std::vector<float>& s, const std::vector<double>& h, const std::string& format,
                             const QuantSpec& spec, const GptqOptions* rounding) {
  const FormatTraits& f = find_format(format);
  // The scaled input's Hessian: its diagonal alone where the rounding reads no more (imatrix), not
  // another cols² copy per α (0.97 GB for a 7B down_proj).
  std::vector<double> h_scaled;
  if (rounding && rounding->diagonal_only) {
    h_scaled.resize(size_t(cols));
    for (int64_t i = 0; i < cols; ++i) h_scaled[size_t(i)] = h[size_t(i * cols + i)] / (double(s[size_t(i)]) * double(s[size_t(i)]));
  } else if (rounding) {
    h_scaled = h;
    for (int64_t i = 0; i < cols; ++i)
      for (int64_t j = 0; j < cols; ++j) h_scaled[size_t(i * cols + j)] /= double(s[size_t(i)]) * double(s[size_t(j)]);
  }
  double total = 0;
  for (const auto& [w, rows] : weights) {
    std::vector<float> scaled(size_t(rows * cols)), back(scaled.size());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) scaled[size_t(r * cols + c)] = w[r * cols + c] * s[size_t(c)];
    if (rounding) {
      back = gptq_quantize(scaled.data(), rows, cols, h_scaled, format, spec, *rounding).dequantized;
    } else {
      const QuantizedTensor q = f.quantize(scaled.data(), rows, cols, spec);
      f.dequantize(q, back.data());
    }
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) back[size_t(r * cols + c)] /= s[size_t(c)];
    total += output_error(w, back.data(), rows, cols, h);
  }
  return total;
}

}  // namespace

AwqScales awq_search(const std::vector<std::pair<const float*, int64_t>>& weights, int64_t cols,
                     const std::vector<double>& mean_abs, const std::vector<int>& tie, const std::vector<double>& h,
                     const std::string& format, const QuantSpec& spec, const AwqOptions& opt,
                     const GptqOptions* rounding) {
  if (opt.grid < 1) fail("awq: the α grid needs at least 1 point");
  if (h.size() != size_t(cols * cols)) fail("awq: Hessian of {} values for {} inputs", h.size(), cols);
  if (tie.empty() ? mean_abs.size() != size_t(cols) : tie.size() != size_t(cols))
    fail("awq: {} channel statistics for {} inputs", tie.empty() ? mean_abs.size() : tie.size(), cols);
  for (int t : tie)
    if (t < 0 || size_t(t) >= mean_abs.size()) fail("awq: input tied to channel {} of {}", t, mean_abs.size());
  // Magnitudes clamped away from 0 (a channel that never fires would get an infinite 1/s).
  std::vector<double> m(mean_abs.size());
  for (size_t c = 0; c < m.size(); ++c) m[c] = std::max(mean_abs[c], 1e-4);
  AwqScales best;
  std::vector<float> s(m.size()), s_cols(static_cast<size_t>(cols));
  for (int k = 0; k < opt.grid; ++k) {
    const double alpha = double(k) / double(opt.grid);
    double lo = INFINITY, hi = 0;
    for (size_t c = 0; c < m.size(); ++c) {
      const double v = std::pow(m[c], alpha);
      s[c] = float(v);
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    const double norm = std::sqrt(lo * hi);  // centre the scales around 1 (the paper's normalisation)
    for (float& v : s) v = float(double(v) / norm);
    for (int64_t c = 0; c < cols; ++c) s_cols[size_t(c)] = s[tie.empty() ? size_t(c) : size_t(tie[size_t(c)])];
    const double loss = scaled_rounding_error(weights, cols, s_cols, h, format, spec, rounding);
    if (k == 0) best.loss_plain = loss;
    if (k == 0 || loss < best.loss) {
      best.loss = loss;
      best.alpha = alpha;
      best.s = s;
    }
  }
  return best;
}

}  // namespace lowbit
