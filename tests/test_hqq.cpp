// HQQ: zero-point search per group. With no iterations it is the affine format's round to nearest,
// bit for bit; with them, no group's mean |error| grows and heavy-tailed groups' shrinks.
#include <cmath>
#include <random>

#include "lowbit/quant/hqq.h"
#include "lowbit/quant/quantize.h"
#include "test_util.h"

namespace lowbit {
namespace {

// Gaussian weights with a few large outliers per row (what HQQ's l_p < 1 error is for).
std::vector<float> heavy_tailed(int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, 0.02f);
  std::uniform_int_distribution<int64_t> pick(0, cols - 1);
  std::vector<float> w(size_t(rows * cols));
  for (auto& v : w) v = d(rng);
  for (int64_t r = 0; r < rows; ++r)
    for (int k = 0; k < 3; ++k) w[size_t(r * cols + pick(rng))] = (k % 2 ? -1.0f : 1.0f) * 0.2f;
  return w;
}

TEST(Hqq, NoIterationsIsRoundToNearest) {
  const int64_t rows = 7, cols = 100;
  const auto w = heavy_tailed(rows, cols, 1);
  for (int64_t group : {int64_t(32), int64_t(0), int64_t(-1)}) {
    const QuantSpec spec{.bits = 3, .group = group};
    GptqResult h = hqq_quantize(w.data(), rows, cols, spec, {.iterations = 0});
    QuantizedTensor rtn = find_format("affine").quantize(w.data(), rows, cols, spec);
    ASSERT_EQ(h.quantized.parts.size(), rtn.parts.size());
    for (const auto& p : rtn.parts) {
      const QuantPart* q = h.quantized.find(p.suffix);
      ASSERT_NE(q, nullptr) << p.suffix;
      EXPECT_EQ(q->bytes, p.bytes) << "group " << group << " part " << p.suffix;
    }
  }
}

TEST(Hqq, ZeroPointSearchNeverLosesAndWinsOnOutliers) {
  const int64_t rows = 16, cols = 256, group = 64;
  const auto w = heavy_tailed(rows, cols, 2);
  const QuantSpec spec{.bits = 3, .group = group};
  GptqResult h = hqq_quantize(w.data(), rows, cols, spec, {});
  std::vector<float> rtn(w.size());
  const FormatTraits& f = find_format("affine");
  f.dequantize(f.quantize(w.data(), rows, cols, spec), rtn.data());
  std::vector<float> stored(w.size());
  f.dequantize(h.quantized, stored.data());
  EXPECT_EQ(stored, h.dequantized);  // what is stored is what was measured
  double eh = 0, er = 0;
  for (int64_t g = 0; g < rows * cols / group; ++g) {
    double gh = 0, gr = 0;
    for (int64_t k = g * group; k < (g + 1) * group; ++k) {
      gh += std::fabs(w[size_t(k)] - h.dequantized[size_t(k)]);
      gr += std::fabs(w[size_t(k)] - rtn[size_t(k)]);
    }
    ASSERT_LE(gh, gr * (1 + 1e-12)) << "group " << g;
    eh += gh;
    er += gr;
  }
  EXPECT_LT(eh, 0.99 * er);  // 3.4 % lower on this draw
}

TEST(Hqq, BadOptionsAndNonAffineSchemes) {
  const auto w = heavy_tailed(2, 32, 3);
  test::expect_error([&] { hqq_quantize(w.data(), 2, 32, {.bits = 4, .group = 32}, {.iterations = 5, .p = 1.5}); },
                     {"hqq", "p in (0, 1]"});
  QuantizeOptions opt;
  opt.scheme = "int4-sym";
  opt.method = "hqq";
  opt.progress = false;
  const auto root = test::temp_dir("hqq");
  test::expect_error([&] { quantize_checkpoint(test::model_dir("llama-16m-wiki"), root / "out", opt); },
                     {"--method hqq", "symmetric", "not affine"});
}

}  // namespace
}  // namespace lowbit
