#pragma once
// Observers: a static (calibrated) per-tensor range for int8 activations, from the values a tensor
// takes on calibration data. They see a histogram of |x| (symmetric int8: q = clamp(round(x / s),
// -127, 127), s = T / 127) and choose the clipping threshold T:
//   minmax      T = max |x|: nothing clipped, every outlier widens the step;
//   percentile  T = the p-th percentile of |x| (p = 99.99 by default);
//   mse         T minimising the expected squared error: clipped values cost (|x| − T)², the others
//               the rounding noise of a uniform step, (T/127)² / 12;
//   entropy     T minimising KL(P ‖ Q) between the histogram clipped at T (the clipped mass added to
//               its last bin) and the same bins merged into 128 levels and spread back over the bins
//               that were non-zero (Migacz, "8-bit Inference with TensorRT", GTC 2017).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lowbit {

enum class Observer { MinMax, Percentile, Mse, Entropy };
Observer parse_observer(const std::string& name);  // "minmax", "percentile", "mse", "entropy"
const char* observer_name(Observer o);

// Histogram of |x| over [0, range) in kBins equal bins. The range starts at the first non-zero
// batch's absmax rounded up to a power of two and doubles (pairs of bins merged: the edges stay
// exact) whenever a value reaches it, so absmax always lies in the upper half: >= 1024 bins cover
// the data. Non-finite values are refused (they would make every range infinite).
class AbsHistogram {
 public:
  static constexpr int kBins = 2048;
  void add(const float* x, size_t n);
  void merge(const AbsHistogram& other);
  double count() const { return count_; }
  float absmax() const { return absmax_; }
  double range() const { return range_; }
  const std::vector<double>& bins() const { return bins_; }

 private:
  void grow_to(double v);
  std::vector<double> bins_ = std::vector<double>(kBins, 0.0);
  double range_ = 0, count_ = 0;
  float absmax_ = 0;
};

struct ObserverOptions {
  double percentile = 99.99;
  int levels = 127;  // positive levels of the symmetric grid (int8: 127)
};

// The clipping threshold T (0 for data that is all zeros); the int8 scale is T / levels.
double observer_threshold(const AbsHistogram& h, Observer o, const ObserverOptions& opt = {});

}  // namespace lowbit
