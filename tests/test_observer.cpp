// Observers (static activation ranges) on distributions whose answers are known or can be
// brute-forced: uniform, Gaussian, Gaussian with outliers; the histogram's growth is exact.
#include <cmath>
#include <random>

#include "lowbit/quant/observer.h"
#include "test_util.h"

namespace lowbit {
namespace {

// The mean squared error of symmetric int8 quantization of xs clipped at t.
double quant_mse(const std::vector<float>& xs, double t) {
  const double s = t / 127;
  double e = 0;
  for (float x : xs) {
    const double q = std::clamp(std::round(x / s), -127.0, 127.0);
    e += (x - q * s) * (x - q * s);
  }
  return e / double(xs.size());
}

std::vector<float> sample(int n, unsigned seed, bool uniform) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::vector<float> xs(static_cast<size_t>(n));
  for (auto& x : xs) x = uniform ? uni(rng) : normal(rng);
  return xs;
}

AbsHistogram histogram(const std::vector<float>& xs, size_t batch = 4096) {
  AbsHistogram h;
  for (size_t i = 0; i < xs.size(); i += batch) h.add(xs.data() + i, std::min(batch, xs.size() - i));
  return h;
}

TEST(Observer, HistogramGrowsExactly) {
  AbsHistogram h;
  const float zeros[3] = {0, 0, 0};
  h.add(zeros, 3);
  EXPECT_EQ(h.range(), 0);
  const float a[2] = {0.3f, -0.7f};
  h.add(a, 2);
  EXPECT_EQ(h.range(), 1.0);
  const float b[1] = {5.0f};
  h.add(b, 1);
  EXPECT_EQ(h.range(), 8.0);
  EXPECT_EQ(h.absmax(), 5.0f);
  EXPECT_EQ(h.count(), 6);
  // Every value in the bin its |x| falls in at the final range.
  const double w = h.range() / AbsHistogram::kBins;
  EXPECT_EQ(h.bins()[0], 3);
  EXPECT_EQ(h.bins()[size_t(0.3 / w)], 1);
  EXPECT_EQ(h.bins()[size_t(0.7 / w)], 1);
  EXPECT_EQ(h.bins()[size_t(5.0 / w)], 1);
  // Merging equals adding everything to one histogram.
  AbsHistogram x, y, all;
  const std::vector<float> xs = sample(5000, 1, false), ys = sample(3000, 2, true);
  x.add(xs.data(), xs.size());
  y.add(ys.data(), ys.size());
  all.add(ys.data(), ys.size());
  all.add(xs.data(), xs.size());
  y.merge(x);
  EXPECT_EQ(y.bins(), all.bins());
  EXPECT_EQ(y.count(), all.count());
  const float bad[1] = {std::nanf("")};
  EXPECT_THROW(h.add(bad, 1), Error);
  EXPECT_THROW(parse_observer("max"), Error);
  EXPECT_EQ(parse_observer("entropy"), Observer::Entropy);
}

TEST(Observer, UniformKeepsItsRange) {
  const std::vector<float> xs = sample(1 << 20, 3, true);
  const AbsHistogram h = histogram(xs);
  double amax = 0;
  for (float x : xs) amax = std::max(amax, double(std::fabs(x)));
  EXPECT_EQ(observer_threshold(h, Observer::MinMax), amax);
  ObserverOptions p;
  p.percentile = 99.9;
  EXPECT_NEAR(observer_threshold(h, Observer::Percentile, p), 0.999, 0.002);
  // No tails: clipping only costs, so MSE and KL keep (nearly) the whole range.
  EXPECT_GT(observer_threshold(h, Observer::Mse), 0.97);
  EXPECT_GT(observer_threshold(h, Observer::Entropy), 0.9);
  AbsHistogram zero;
  const float z[4] = {};
  zero.add(z, 4);
  for (Observer o : {Observer::MinMax, Observer::Percentile, Observer::Mse, Observer::Entropy})
    EXPECT_EQ(observer_threshold(zero, o), 0.0) << observer_name(o);
}

TEST(Observer, GaussianThresholdsMatchTheirDefinitions) {
  const std::vector<float> xs = sample(1 << 20, 4, false);
  const AbsHistogram h = histogram(xs);
  // P(|x| <= 3.8906) = 0.9999 for N(0, 1).
  EXPECT_NEAR(observer_threshold(h, Observer::Percentile), 3.8906, 0.1);
  // MSE: within 1 % of the best threshold found by quantizing the samples themselves.
  double best = 1e30;
  for (double t = 2.0; t <= 6.0; t += 0.02) best = std::min(best, quant_mse(xs, t));
  const double t_mse = observer_threshold(h, Observer::Mse);
  EXPECT_LT(quant_mse(xs, t_mse), 1.01 * best) << t_mse;
  EXPECT_LT(t_mse, h.absmax());
  // KL clips the sparse tail too, and its error stays near the best.
  const double t_kl = observer_threshold(h, Observer::Entropy);
  EXPECT_LT(t_kl, h.absmax());
  EXPECT_GT(t_kl, 2.5);
  EXPECT_LT(quant_mse(xs, t_kl), 1.3 * best) << t_kl;
}

// 10 values at ±1000 among 2^18 of N(0, 1): minmax takes them; the percentile ignores them; KL
// clips to the finest threshold its search has (1/16 of the histogram's range: 128 of 2048 bins);
// the MSE threshold has the smallest squared error of all (here clipping 10 values by ~1000 costs
// more than rounding the Gaussian to a few levels, so it keeps them: MSE is not an outlier filter).
TEST(Observer, OutliersWidenOnlyMinMax) {
  std::vector<float> xs = sample(1 << 18, 5, false);
  for (int i = 0; i < 10; ++i) xs[size_t(i) * 1000] = i % 2 ? 1000.0f : -1000.0f;
  const AbsHistogram h = histogram(xs);
  EXPECT_EQ(observer_threshold(h, Observer::MinMax), 1000.0);
  const double t_p = observer_threshold(h, Observer::Percentile), t_kl = observer_threshold(h, Observer::Entropy);
  const double t_mse = observer_threshold(h, Observer::Mse);
  EXPECT_NEAR(t_p, 3.9, 0.2);
  EXPECT_LE(t_kl, h.range() / 16);
  EXPECT_GT(t_kl, 4.0);
  const double best_other = std::min({quant_mse(xs, t_p), quant_mse(xs, t_kl), quant_mse(xs, 1000.0)});
  EXPECT_LE(quant_mse(xs, t_mse), 1.01 * best_other) << t_mse;
}

}  // namespace
}  // namespace lowbit
