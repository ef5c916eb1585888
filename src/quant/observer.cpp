#include "lowbit/quant/observer.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "lowbit/core/error.h"

namespace lowbit {

Observer parse_observer(const std::string& name) {
  if (name == "minmax") return Observer::MinMax;
  if (name == "percentile") return Observer::Percentile;
  if (name == "mse") return Observer::Mse;
  if (name == "entropy") return Observer::Entropy;
  fail("--observer {}: expected minmax, percentile, mse or entropy", name);
}

const char* observer_name(Observer o) {
  switch (o) {
    case Observer::MinMax: return "minmax";
    case Observer::Percentile: return "percentile";
    case Observer::Mse: return "mse";
    case Observer::Entropy: return "entropy";
  }
  return "?";
}

void AbsHistogram::grow_to(double v) {
  if (range_ == 0) {
    range_ = std::exp2(std::ceil(std::log2(v)));
    if (range_ <= v) range_ *= 2;  // v must fall below the range
    return;
  }
  while (range_ <= v) {
    for (int b = 0; b < kBins / 2; ++b) bins_[size_t(b)] = bins_[size_t(2 * b)] + bins_[size_t(2 * b + 1)];
    std::fill(bins_.begin() + kBins / 2, bins_.end(), 0.0);
    range_ *= 2;
  }
}

void AbsHistogram::add(const float* x, size_t n) {
  float m = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) fail("observer: a calibration activation is {} (expected finite values)", x[i]);
    m = std::max(m, std::fabs(x[i]));
  }
  if (m > 0) grow_to(double(m));
  absmax_ = std::max(absmax_, m);
  count_ += double(n);
  if (range_ == 0) {  // all zeros so far: they belong to the first bin whatever the range becomes
    bins_[0] += double(n);
    return;
  }
  const double inv = kBins / range_;
  for (size_t i = 0; i < n; ++i) bins_[size_t(std::min<double>(kBins - 1, std::floor(std::fabs(x[i]) * inv)))] += 1;
}

void AbsHistogram::merge(const AbsHistogram& o) {
  if (o.range_ == 0) {
    bins_[0] += o.bins_[0];
    count_ += o.count_;
    return;
  }
  AbsHistogram from = o;
  grow_to(std::max(range_, from.range_) * 0.75);  // the larger range (both are powers of two)
  from.grow_to(range_ * 0.75);
  for (int b = 0; b < kBins; ++b) bins_[size_t(b)] += from.bins_[size_t(b)];
  count_ += o.count_;
  absmax_ = std::max(absmax_, o.absmax_);
}

namespace {

// The last non-empty bin + 1.
int used_bins(const AbsHistogram& h) {
  int last = AbsHistogram::kBins;
  while (last > 0 && h.bins()[size_t(last - 1)] == 0) --last;
  return last;
}

double kl_threshold(const AbsHistogram& h, int levels) {
  const std::vector<double>& bins = h.bins();
  const int n = used_bins(h), q_levels = levels + 1;  // |q| in 0..levels
  const double width = h.range() / AbsHistogram::kBins;
  if (n <= q_levels) return h.absmax();  // every bin its own level: nothing to gain by clipping
  double best_kl = std::numeric_limits<double>::infinity();
  int best = n;
  double outside = 0;  // Σ bins[i..n)
  for (int b = q_levels; b < n; ++b) outside += bins[size_t(b)];
  std::vector<double> q(static_cast<size_t>(n), 0.0);
  for (int i = q_levels; i <= n; ++i) {
    // Levels: bins [0, i) split into q_levels runs as even as integer edges allow.
    std::fill(q.begin(), q.begin() + i, 0.0);
    for (int l = 0; l < q_levels; ++l) {
      const int b0 = int(int64_t(l) * i / q_levels), b1 = int(int64_t(l + 1) * i / q_levels);
      double sum = 0;
      int nonzero = 0;
      for (int b = b0; b < b1; ++b)
        if (bins[size_t(b)] > 0) sum += bins[size_t(b)], ++nonzero;
      for (int b = b0; b < b1; ++b)
        if (bins[size_t(b)] > 0) q[size_t(b)] = sum / nonzero;
    }
    double p_total = 0, q_total = 0;
    for (int b = 0; b < i; ++b) p_total += bins[size_t(b)], q_total += q[size_t(b)];
    p_total += outside;
    double kl = 0;
    for (int b = 0; b < i; ++b) {
      const double p = (bins[size_t(b)] + (b == i - 1 ? outside : 0.0)) / p_total;
      if (p == 0) continue;
      // q of the last bin can be 0 only if the bin was empty while the outliers landed there.
      const double qq = std::max(q[size_t(b)] / q_total, 1e-12);
      kl += p * std::log(p / qq);
    }
    if (kl < best_kl) best_kl = kl, best = i;
    if (i < n) outside -= bins[size_t(i)];
  }
  return std::min<double>(h.absmax(), best * width);
}

double mse_threshold(const AbsHistogram& h, int levels) {
  const std::vector<double>& bins = h.bins();
  const int n = used_bins(h);
  const double width = h.range() / AbsHistogram::kBins;
  double best_err = std::numeric_limits<double>::infinity(), best_t = h.absmax();
  // Candidates: the absmax and every bin edge from 1/64 of it up.
  std::vector<double> cand{double(h.absmax())};
  for (int e = std::max(1, n / 64); e < n; ++e) cand.push_back(e * width);
  for (double t : cand) {
    // Rounding error: a uniform step's (step² / 12) where the step spans several bins; where it is
    // wider than 4 bins the centres are rounded themselves (a step wider than the data rounds it
    // all to 0: the error is then x², not step² / 12).
    const double step = t / levels, noise = step * step / 12.0;
    const bool exact = step > 4 * width;
    double err = 0;
    for (int b = 0; b < n; ++b) {
      if (bins[size_t(b)] == 0) continue;
      const double v = std::min<double>((b + 0.5) * width, h.absmax());  // the bin's centre
      double e = noise;
      if (v > t) {
        e = (v - t) * (v - t);
      } else if (exact) {
        const double r = v - std::round(v / step) * step;
        e = r * r;
      }
      err += bins[size_t(b)] * e;
    }
    if (err < best_err) best_err = err, best_t = t;
  }
  return best_t;
}

}  // namespace

double observer_threshold(const AbsHistogram& h, Observer o, const ObserverOptions& opt) {
  if (opt.levels < 1) fail("observer: {} levels (expected >= 1)", opt.levels);
  if (h.absmax() == 0) return 0;
  switch (o) {
    case Observer::MinMax: return h.absmax();
    case Observer::Percentile: {
      if (!(opt.percentile > 0 && opt.percentile <= 100)) fail("observer: percentile {} (expected in (0, 100])", opt.percentile);
      const double want = h.count() * opt.percentile / 100.0, width = h.range() / AbsHistogram::kBins;
      double seen = 0;
      for (int b = 0; b < AbsHistogram::kBins; ++b) {
        const double c = h.bins()[size_t(b)];
        if (seen + c >= want && c > 0)  // linear within the bin
          return std::min<double>(h.absmax(), (b + (want - seen) / c) * width);
        seen += c;
      }
      return h.absmax();
    }
    case Observer::Mse: return mse_threshold(h, opt.levels);
    case Observer::Entropy: return kl_threshold(h, opt.levels);
  }
  return h.absmax();
}

}  // namespace lowbit
