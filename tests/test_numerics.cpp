// NaN / Inf detection used on weights at load and on every layer's output.
#include <cmath>
#include <limits>
#include <vector>

#include "lowbit/core/numerics.h"
#include "test_util.h"

namespace lowbit {
namespace {

TEST(Numerics, FindsTheFirstNonFiniteValue) {
  for (size_t n : {size_t(1), size_t(7), size_t(4096), size_t(4097), size_t(10000)}) {
    std::vector<float> x(n);
    for (size_t i = 0; i < n; ++i) x[i] = float(i % 13) - 6.0f;
    x[n - 1] = std::numeric_limits<float>::max();  // large but finite
    EXPECT_EQ(find_non_finite(x.data(), n), -1) << n;
    for (float bad : {NAN, INFINITY, -INFINITY}) {
      for (size_t at : {size_t(0), n / 2, n - 1}) {
        auto y = x;
        y[at] = bad;
        if (at + 1 < n) y[n - 1] = NAN;  // a later bad value must not hide the first
        EXPECT_EQ(find_non_finite(y.data(), n), int64_t(at)) << n << " " << at << " " << bad;
      }
    }
  }
  EXPECT_EQ(find_non_finite(nullptr, 0), -1);
}

TEST(Numerics, ActivationErrorSaysLayerPositionAndChannel) {
  std::vector<float> x(3 * 8, 1.0f);
  x[2 * 8 + 5] = INFINITY;
  check_finite_activations(x.data(), 1, 8, 0, "model.layers.", 4);  // first row is fine
  test::expect_error([&] { check_finite_activations(x.data(), 3, 8, 10, "model.layers.", 4); },
                     {"model.layers.4 output", "(inf)", "token position 12", "channel 5"});
}

}  // namespace
}  // namespace lowbit
