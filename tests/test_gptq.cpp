// GPTQ against properties that can be checked exactly: with an identity Hessian it is round-to-
// nearest; on correlated inputs its output error ‖WX - ŴX‖ is below RTN's; the layer-by-layer
// pipeline quantizes a real model and beats RTN on held-out text.
#include <algorithm>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "lowbit/core/error.h"
#include "lowbit/core/file.h"
#include "lowbit/io/tokenizer.h"
#include "lowbit/eval/perplexity.h"
#include "lowbit/quant/gptq.h"
#include "lowbit/quant/quantize.h"
#include "test_util.h"

namespace lowbit {
namespace {

std::vector<float> gaussian(size_t n, uint64_t seed, float sd = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// H = 2/N XᵀX for N correlated inputs (each a mix of a few shared factors plus noise, some columns loud).
std::vector<double> correlated_hessian(int64_t cols, int n, uint64_t seed) {
  auto f = gaussian(size_t(n) * 4, seed);
  auto noise = gaussian(size_t(n) * size_t(cols), seed + 1, 0.3f);
  auto mix = gaussian(size_t(cols) * 4, seed + 2);
  std::vector<double> x(size_t(n) * size_t(cols));
  for (int i = 0; i < n; ++i)
    for (int64_t c = 0; c < cols; ++c) {
      double v = noise[size_t(i) * size_t(cols) + size_t(c)];
      for (int k = 0; k < 4; ++k) v += f[size_t(i * 4 + k)] * mix[size_t(c * 4 + k)];
      x[size_t(i) * size_t(cols) + size_t(c)] = v * (c % 7 == 0 ? 5.0 : 1.0);
    }
  std::vector<double> h(size_t(cols * cols), 0.0);
  for (int i = 0; i < n; ++i)
    for (int64_t a = 0; a < cols; ++a)
      for (int64_t b = 0; b < cols; ++b) h[size_t(a * cols + b)] += 2.0 * x[size_t(i) * size_t(cols) + size_t(a)] * x[size_t(i) * size_t(cols) + size_t(b)] / n;
  return h;
}

struct Case {
  std::string format;
  int bits;
  int64_t group;
};

TEST(Gptq, IdentityHessianIsRoundToNearest) {
  for (const Case& c : {Case{"affine", 4, 32}, Case{"affine", 3, 0}, Case{"affine", 2, 48}, Case{"symmetric", 4, 16},
                        Case{"symmetric", 8, 0}, Case{"affine", 4, -1}}) {
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{3, 172}, {33, 64}, {1, 7}}) {
      SCOPED_TRACE(c.format + std::to_string(c.bits) + " g" + std::to_string(c.group) + " " + std::to_string(rows) +
                   "x" + std::to_string(cols));
      auto w = gaussian(size_t(rows * cols), 7);
      QuantSpec spec{.bits = c.bits, .group = c.group};
      GptqResult g = rtn_uniform(w.data(), rows, cols, c.format, spec);
      QuantizedTensor ref = find_format(c.format).quantize(w.data(), rows, cols, spec);
      std::vector<float> want(w.size(), NAN), got(w.size(), NAN);
      find_format(c.format).dequantize(ref, want.data());
      find_format(c.format).dequantize(g.quantized, got.data());
      EXPECT_EQ(got, want);
      EXPECT_EQ(g.dequantized, want);
      for (const auto& p : ref.parts) EXPECT_EQ(g.quantized.find(p.suffix)->bytes, p.bytes) << p.suffix;
    }
  }
}

TEST(Gptq, LowerOutputErrorThanRtnOnCorrelatedInputs) {
  const int64_t rows = 24, cols = 96;
  auto w = gaussian(size_t(rows * cols), 11, 0.05f);
  auto h = correlated_hessian(cols, 512, 3);
  for (const Case& c : {Case{"affine", 4, 32}, Case{"affine", 3, 0}, Case{"affine", 2, 32}, Case{"symmetric", 4, 0}}) {
    for (int variant = 0; variant < 3; ++variant) {
      const bool act_order = variant == 1;
      const int clip_steps = variant == 2 ? 20 : 0;
      SCOPED_TRACE(c.format + std::to_string(c.bits) + " g" + std::to_string(c.group) + (act_order ? " act-order" : "") +
                   (clip_steps ? " clip-search" : ""));
      QuantSpec spec{.bits = c.bits, .group = c.group};
      GptqOptions opt;
      opt.act_order = act_order;
      opt.clip_steps = clip_steps;
      opt.block = 32;  // several lazy batches, groups inside and across them
      GptqResult g = gptq_quantize(w.data(), rows, cols, h, c.format, spec, opt);
      GptqResult r = rtn_uniform(w.data(), rows, cols, c.format, spec);
      const double eg = output_error(w.data(), g.dequantized.data(), rows, cols, h);
      const double er = output_error(w.data(), r.dequantized.data(), rows, cols, h);
      EXPECT_LT(eg, 0.8 * er) << "gptq " << eg << " rtn " << er;
      // The packed tensor decodes to the weights GPTQ reported.
      std::vector<float> back(w.size(), NAN);
      find_format(c.format).dequantize(g.quantized, back.data());
      EXPECT_EQ(back, g.dequantized);
    }
  }
}

TEST(UniformGrid, ClipSearchNeverLosesAndClipsAnUnimportantOutlier) {
  auto cost = [](const UniformGrid& g, const std::vector<double>& v, const std::vector<double>& wt) {
    double e = 0;
    for (size_t k = 0; k < v.size(); ++k) {
      const double d = v[k] - double(g.value(g.code(float(v[k]))));
      e += wt[k] * d * d;
    }
    return e;
  };
  for (const char* format : {"affine", "symmetric"})
    for (int bits : {2, 3, 4}) {
      SCOPED_TRACE(std::string(format) + std::to_string(bits));
      auto f = gaussian(64, uint64_t(bits), 1.0f);
      std::vector<double> v(f.begin(), f.end()), wt(64, 1.0);
      v[5] = 5.0;  // one outlier, far from the rest
      // steps = 0 is the plain min/max grid.
      const UniformGrid plain = UniformGrid::fit(format, bits, *std::min_element(v.begin(), v.end()), 5.0);
      const UniformGrid same = UniformGrid::fit_search(format, bits, v.data(), wt.data(), 64, 0, 0.5);
      EXPECT_EQ(same.scale, plain.scale);
      EXPECT_EQ(same.min, plain.min);
      // The search keeps the best candidate, the unclipped grid among them: never worse.
      const UniformGrid searched = UniformGrid::fit_search(format, bits, v.data(), wt.data(), 64, 20, 0.5);
      EXPECT_LE(cost(searched, v, wt), cost(plain, v, wt));
      // When the outlier's input is unimportant, the search clips it and the rest gain a finer step.
      wt[5] = 1e-6;
      const UniformGrid clipped = UniformGrid::fit_search(format, bits, v.data(), wt.data(), 64, 20, 0.5);
      EXPECT_LT(clipped.scale, plain.scale);
      EXPECT_LT(cost(clipped, v, wt), 0.9 * cost(plain, v, wt));
      // Without weights (nullptr) every value counts once.
      const UniformGrid unweighted = UniformGrid::fit_search(format, bits, v.data(), nullptr, 64, 20, 0.5);
      EXPECT_LE(cost(unweighted, v, std::vector<double>(64, 1.0)), cost(plain, v, std::vector<double>(64, 1.0)));
    }
}

TEST(Gptq, DiagonalOnlyIsRoundToNearestOnWeightedGrids) {
  const int64_t rows = 16, cols = 64;
  auto w = gaussian(size_t(rows * cols), 21, 0.05f);
  auto h = correlated_hessian(cols, 256, 5);
  for (const Case& c : {Case{"affine", 4, 32}, Case{"affine", 3, 0}, Case{"symmetric", 4, 16}})
    for (bool element : {false, true}) {
      SCOPED_TRACE(c.format + std::to_string(c.bits) + " g" + std::to_string(c.group) + (element ? " element" : ""));
      QuantSpec spec{.bits = c.bits, .group = c.group};
      GptqOptions opt;
      opt.diagonal_only = true;
      opt.element_weights = element;
      // No error feedback and plain grids: exactly round-to-nearest, whatever H is.
      GptqResult d = gptq_quantize(w.data(), rows, cols, h, c.format, spec, opt);
      GptqResult r = rtn_uniform(w.data(), rows, cols, c.format, spec);
      EXPECT_EQ(d.dequantized, r.dequantized);
      // With the grids searched, the error weighted as the search weighs it can only go down.
      opt.clip_steps = 20;
      GptqResult s = gptq_quantize(w.data(), rows, cols, h, c.format, spec, opt);
      // diagonal_only skips the factorisations: it must be what full GPTQ computes on diag(H) alone.
      std::vector<double> diag(h.size(), 0.0);
      for (int64_t k = 0; k < cols; ++k) diag[size_t(k * cols + k)] = h[size_t(k * cols + k)];
      GptqOptions full = opt;
      full.diagonal_only = false;
      EXPECT_EQ(gptq_quantize(w.data(), rows, cols, diag, c.format, spec, full).dequantized, s.dequantized);
      // The search's weights: diag(H), times sqrt(σ² + w²) (σ² = 2·mean w² over the group) for element.
      const int64_t gsize = c.group ? c.group : cols;
      double es = 0, er = 0;
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t g0 = 0; g0 < cols; g0 += gsize) {
          double sq = 0;
          for (int64_t k = g0; k < g0 + gsize; ++k) sq += double(w[size_t(i * cols + k)]) * w[size_t(i * cols + k)];
          const double sigma2 = 2 * sq / double(gsize);
          for (int64_t k = g0; k < g0 + gsize; ++k) {
            const double wi = w[size_t(i * cols + k)];
            const double hk = h[size_t(k * cols + k)] * (element ? std::sqrt(sigma2 + wi * wi) : 1.0);
            const double ds = wi - s.dequantized[size_t(i * cols + k)], dr = wi - r.dequantized[size_t(i * cols + k)];
            es += hk * ds * ds;
            er += hk * dr * dr;
          }
        }
      EXPECT_LT(es, er);
      if (element) {  // the element weights change which grids win
        opt.element_weights = false;
        EXPECT_NE(gptq_quantize(w.data(), rows, cols, h, c.format, spec, opt).dequantized, s.dequantized);
      }
    }
}

TEST(Gptq, DeadInputsAndBadArguments) {
  const int64_t rows = 4, cols = 16;
  auto w = gaussian(size_t(rows * cols), 5);
  auto h = correlated_hessian(cols, 64, 9);
  for (int64_t i = 0; i < cols; ++i) h[size_t(3 * cols + i)] = h[size_t(i * cols + 3)] = 0;  // input 3 never fires
  GptqResult g = gptq_quantize(w.data(), rows, cols, h, "affine", {.bits = 4, .group = 8}, {});
  for (float v : g.dequantized) EXPECT_TRUE(std::isfinite(v));
  test::expect_error([&] { gptq_quantize(w.data(), rows, cols, h, "nf4", {.bits = 4, .group = 8}, {}); }, {"uniform"});
  std::vector<double> small(4, 0.0);
  test::expect_error([&] { gptq_quantize(w.data(), rows, cols, small, "affine", {.bits = 4, .group = 8}, {}); },
                     {"Hessian"});
}

TEST(Gptq, LayerwiseOnStories260KBeatsRtn) {
  const auto in = test::model_dir("stories260K/hf");
  const auto root = test::temp_dir("gptq");
  const auto text = test::shared_dir() / "datasets/tinystories/tinystories_val_head.txt";
  QuantizeOptions opt;
  opt.scheme = "int3@32";
  opt.progress = false;
  quantize_checkpoint(in, root / "rtn", opt);
  opt.method = "gptq";
  opt.calib = {text, 32, 128, 1};
  QuantizeReport rep = quantize_checkpoint(in, root / "gptq", opt);
  EXPECT_EQ(WeightStore(root / "gptq").get("model.layers.4.mlp.down_proj.weight").format, "affine");

  // Held-out: windows of the reference tokens file, not of the calibration draw.
  auto base = load_causal_lm(in);
  auto rtn = load_causal_lm(root / "rtn");
  auto gptq = load_causal_lm(root / "gptq");
  auto tok = load_tokenizer(in);
  auto tokens = tok->encode(read_file(text).substr(400000, 60000));
  PerplexityOptions popt;
  popt.ctx = 128;
  popt.bos_id = 1;
  popt.max_windows = 24;
  popt.progress = false;
  const CausalLM* models[] = {rtn.get(), gptq.get()};
  auto r = perplexity_compare(models, base.get(), tokens, popt);
  std::printf("[ gptq     ] stories260K int3@32: RTN KLD %.4f ppl %.3f, GPTQ KLD %.4f ppl %.3f\n", r[0].kld, r[0].ppl,
              r[1].kld, r[1].ppl);
  EXPECT_LT(r[1].kld, r[0].kld);
}

// load_causal_lm_layerwise reads each layer's weights when the layer is first used and computes what
// the whole float model computes; a released layer refuses to run again.
void expect_lazy_layers_match(const std::filesystem::path& dir, const std::vector<int32_t>& ids,
                              const std::string& probe, const std::string& layer1) {
  auto lazy = load_causal_lm_layerwise(dir);
  auto full = load_causal_lm(dir, /*packed=*/false);
  const int hidden = lazy->config().hidden_size, n = int(ids.size());
  std::vector<float> a(size_t(n * hidden)), b(a.size());
  lazy->embed(ids, a.data());
  full->embed(ids, b.data());
  EXPECT_EQ(lazy->weight(probe), full->weight(probe));
  for (int l = 0; l < lazy->config().num_layers; ++l) {
    lazy->run_layer(l, a.data(), n, nullptr);
    full->run_layer(l, b.data(), n, nullptr);
    lazy->release_layer(l);
  }
  EXPECT_EQ(a, b);
  test::expect_error([&] { lazy->run_layer(1, a.data(), n, nullptr); }, {layer1, "released"});
  test::expect_error([&] { (void)lazy->weight(probe); }, {"released"});
}

TEST(Layerwise, LayersLoadWhenUsedAndAreReleased) {
  expect_lazy_layers_match(test::model_dir("stories260K/hf"), {1, 403, 407, 261, 378, 64, 9, 260},
                           "model.layers.3.mlp.down_proj.weight", "model.layers.1");
  // OPT, post-LN with project_in / project_out (OPT-350m's layout).
  expect_lazy_layers_match(std::filesystem::path(LOWBIT_SOURCE_DIR) / "tests/data/opt-tiny-postln-proj",
                           {2, 100, 200, 300, 400}, "model.decoder.layers.1.self_attn.k_proj.weight",
                           "model.decoder.layers.1");
}

// GPT-2 (Conv1D weights stored [in, out]) layer by layer: the lazy model computes what the float
// model computes, and GPTQ / AWQ of gpt2-7m-wiki beat round-to-nearest at 3 bits on held-out text;
// their outputs keep the [in, out] layout (transposed quantization) and AWQ's folds are written float32.
TEST(Layerwise, Gpt2LazyLayersAndCalibratedMethodsBeatRtn) {
  const auto in = test::model_dir("gpt2-7m-wiki");
  expect_lazy_layers_match(in, {464, 2068, 7586, 2183, 1804, 625, 262, 1693}, "transformer.h.1.mlp.c_fc.weight",
                           "transformer.h.1");
  const auto root = test::temp_dir("gptq-gpt2");
  QuantizeOptions opt;
  opt.scheme = "int3@64";
  opt.progress = false;
  quantize_checkpoint(in, root / "rtn", opt);
  opt.calib = {test::shared_dir() / "datasets/wikitext-2/wiki.valid.tokens", 16, 256, 1};
  opt.method = "gptq";
  quantize_checkpoint(in, root / "gptq", opt);
  opt.method = "awq";
  quantize_checkpoint(in, root / "awq", opt);
  for (const char* m : {"gptq", "awq"}) {
    WeightStore ws(root / m);
    const LogicalTensor& t = ws.get("transformer.h.3.attn.c_attn.weight");
    EXPECT_EQ(t.format, "affine");
    EXPECT_TRUE(t.transposed);
    EXPECT_EQ(t.shape, (std::vector<int64_t>{256, 768}));
  }
  WeightStore awq_store(root / "awq");
  EXPECT_EQ(awq_store.get("transformer.h.0.ln_1.bias").dtype, DType::F32);
  EXPECT_EQ(awq_store.get("transformer.h.0.attn.c_attn.bias").dtype, DType::F32);  // value part divided

  auto base = load_causal_lm(in);
  auto rtn = load_causal_lm(root / "rtn");
  auto gptq = load_causal_lm(root / "gptq");
  auto awq = load_causal_lm(root / "awq");
  auto tok = load_tokenizer(in);
  auto tokens = tok->encode(read_file(test::shared_dir() / "datasets/wikitext-2/wiki.test.raw").substr(0, 60000));
  PerplexityOptions popt;
  popt.ctx = 256;
  popt.max_windows = 12;
  popt.progress = false;
  const CausalLM* models[] = {rtn.get(), gptq.get(), awq.get()};
  auto r = perplexity_compare(models, base.get(), tokens, popt);
  std::printf("[ gptq     ] gpt2-7m-wiki int3@64: RTN KLD %.4f ppl %.3f, GPTQ KLD %.4f ppl %.3f, AWQ KLD %.4f ppl %.3f\n",
              r[0].kld, r[0].ppl, r[1].kld, r[1].ppl, r[2].kld, r[2].ppl);
  EXPECT_LT(r[1].kld, r[0].kld);
  EXPECT_LT(r[2].kld, r[0].kld);
}

}  // namespace
}  // namespace lowbit
