// AWQ: the α search on synthetic layers (α = 0 is round to nearest; loud input channels make α > 0
// win), tied channels, and the whole pipeline on llama-16m-wiki (folds keep the float model exact;
// AWQ beats RTN at 3 bits on held-out text).
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "lowbit/core/file.h"
#include "lowbit/eval/perplexity.h"
#include "lowbit/io/tokenizer.h"
#include "lowbit/models/model.h"
#include "lowbit/quant/awq.h"
#include "lowbit/quant/calibrate.h"
#include "lowbit/quant/gptq.h"
#include "lowbit/quant/quantize.h"
#include "test_util.h"

namespace lowbit {
namespace {

// N inputs whose every 5th channel is `loud` times larger; returns H = 2/N XᵀX and mean |x|.
void loud_inputs(int64_t cols, int n, float loud, uint64_t seed, std::vector<double>& h, std::vector<double>& mean_abs) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> d(0.0, 1.0);
  std::vector<double> x(size_t(n) * size_t(cols));
  for (int i = 0; i < n; ++i)
    for (int64_t c = 0; c < cols; ++c) x[size_t(i) * size_t(cols) + size_t(c)] = d(rng) * (c % 5 == 0 ? loud : 1.0);
  h.assign(size_t(cols * cols), 0.0);
  mean_abs.assign(size_t(cols), 0.0);
  for (int i = 0; i < n; ++i)
    for (int64_t a = 0; a < cols; ++a) {
      mean_abs[size_t(a)] += std::fabs(x[size_t(i) * size_t(cols) + size_t(a)]) / n;
      for (int64_t b = 0; b < cols; ++b)
        h[size_t(a * cols + b)] += 2.0 * x[size_t(i) * size_t(cols) + size_t(a)] * x[size_t(i) * size_t(cols) + size_t(b)] / n;
    }
}

std::vector<float> gaussian_weights(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, 0.05f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

TEST(Awq, AlphaZeroIsRoundToNearest) {
  const int64_t rows = 12, cols = 64;
  std::vector<double> h, m;
  loud_inputs(cols, 256, 8.0f, 1, h, m);
  const auto w = gaussian_weights(size_t(rows * cols), 2);
  const QuantSpec spec{.bits = 3, .group = 32};
  AwqScales s = awq_search({{w.data(), rows}}, cols, m, {}, h, "affine", spec, {.grid = 1});
  EXPECT_EQ(s.alpha, 0.0);
  for (float v : s.s) EXPECT_EQ(v, 1.0f);
  // Scales of 1: the format's own round to nearest, whose output error is the loss.
  const FormatTraits& f = find_format("affine");
  std::vector<float> back(w.size());
  f.dequantize(f.quantize(w.data(), rows, cols, spec), back.data());
  EXPECT_DOUBLE_EQ(s.loss, output_error(w.data(), back.data(), rows, cols, h));
  EXPECT_DOUBLE_EQ(s.loss, s.loss_plain);
}

TEST(Awq, LoudChannelsGetScaledAndTheErrorDrops) {
  const int64_t cols = 96;
  std::vector<double> h, m;
  loud_inputs(cols, 512, 10.0f, 3, h, m);
  const auto w1 = gaussian_weights(size_t(16 * cols), 4), w2 = gaussian_weights(size_t(8 * cols), 5);
  for (const char* format : {"affine", "symmetric"}) {
    AwqScales s = awq_search({{w1.data(), 16}, {w2.data(), 8}}, cols, m, {}, h, format, {.bits = 3, .group = 32}, {});
    SCOPED_TRACE(format);
    EXPECT_GT(s.alpha, 0.0);
    EXPECT_LT(s.loss, 0.9 * s.loss_plain);  // the loud channels' weights keep more precision
    ASSERT_EQ(s.s.size(), size_t(cols));
    EXPECT_GT(s.s[0], s.s[1]);  // channel 0 is loud, 1 is not
  }
}

// Searching with the rounding the model gets (imatrix's weighted grid search): α = 0 is that
// rounding alone, and the chosen α is never worse than it on the calibration inputs; here the loud
// channels make it strictly better.
TEST(Awq, SearchWithTheModelsRoundingNeverLosesToIt) {
  const int64_t rows = 16, cols = 64;
  std::vector<double> h, m;
  loud_inputs(cols, 384, 10.0f, 11, h, m);
  const auto w = gaussian_weights(size_t(rows * cols), 12);
  const QuantSpec spec{.bits = 3, .group = 32};
  GptqOptions imatrix;
  imatrix.diagonal_only = true;
  imatrix.clip_steps = 10;
  AwqScales s = awq_search({{w.data(), rows}}, cols, m, {}, h, "affine", spec, {}, &imatrix);
  const GptqResult alone = gptq_quantize(w.data(), rows, cols, h, "affine", spec, imatrix);
  EXPECT_NEAR(s.loss_plain, output_error(w.data(), alone.dequantized.data(), rows, cols, h), 1e-9 * s.loss_plain);
  EXPECT_GT(s.alpha, 0.0);
  EXPECT_LT(s.loss, s.loss_plain);
}

TEST(Awq, TiedColumnsShareTheirProducersScale) {
  // 32 input columns read 16 producer channels twice (as GQA repeats value heads).
  const int64_t cols = 32;
  std::vector<double> h, m;
  loud_inputs(cols, 256, 6.0f, 7, h, m);
  std::vector<int> tie(static_cast<size_t>(cols));
  std::vector<double> m16(16, 0.0);
  for (int c = 0; c < cols; ++c) {
    tie[size_t(c)] = c % 16;
    m16[size_t(c % 16)] += m[size_t(c)] / 2;
  }
  const auto w = gaussian_weights(size_t(8 * cols), 8);
  AwqScales s = awq_search({{w.data(), 8}}, cols, m16, tie, h, "affine", {.bits = 3, .group = 32}, {});
  EXPECT_EQ(s.s.size(), 16u);
  EXPECT_LE(s.loss, s.loss_plain);
  const std::vector<double> m8(m16.begin(), m16.begin() + 8);  // fewer channels than the tie names
  test::expect_error([&] { awq_search({{w.data(), 8}}, cols, m8, tie, h, "affine", {.bits = 3, .group = 32}, {}); },
                     {"tied to channel"});
  test::expect_error([&] { awq_search({{w.data(), 8}}, cols, m, {}, {1.0}, "affine", {.bits = 3, .group = 32}, {}); },
                     {"Hessian"});
}

// Folds random scales into every input of `layer` that has a producer and checks the float layer
// computes what it did; returns the readers of the inputs that had none.
std::vector<std::string> fold_every_input(CausalLM& model, int layer, const std::vector<int32_t>& ids) {
  const int hidden = model.config().hidden_size, n = int(ids.size());
  std::vector<float> x(size_t(n * hidden));
  model.embed(ids, x.data());
  std::vector<float> want = x;
  std::vector<std::pair<std::vector<std::string>, int>> inputs;  // readers, width
  CausalLM::LinearObserver list = [&](const std::vector<std::string>& names, const float*, int, int cols) {
    inputs.push_back({names, cols});
    return true;
  };
  model.run_layer(layer, want.data(), n, &list);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(0.25f, 4.0f);
  std::vector<std::string> without;
  for (const auto& [readers, cols] : inputs) {
    auto producer = model.input_producer(readers.front());
    if (!producer) {
      without.push_back(readers.front());
      continue;
    }
    // Channels: value rows tied to heads (GQA), the norm's width, or the input's width.
    const size_t channels =
        !producer->tie.empty() ? size_t(*std::max_element(producer->tie.begin(), producer->tie.end()) + 1)
        : !producer->rows      ? model.weight(producer->tensor).size()
                               : size_t(cols);
    std::vector<float> s(channels);
    for (float& v : s) v = u(rng);
    fold_input_scales(model, readers, *producer, s);
  }
  std::vector<float> got = x;
  model.run_layer(layer, got.data(), n, nullptr);
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 2e-4 * (1 + std::fabs(want[i]))) << i;
  return without;
}

// Folding any scales into llama-16m-wiki's layer leaves its float outputs as they were: into the
// attention norm (q/k/v), the value rows (o_proj, value heads repeated for GQA), the MLP norm
// (gate/up) and the up rows (down_proj).
TEST(Awq, FoldedScalesLeaveTheFloatLayerUnchanged) {
  auto model = load_causal_lm_layerwise(test::model_dir("llama-16m-wiki"));
  auto tok = load_tokenizer(test::model_dir("llama-16m-wiki"));
  EXPECT_EQ(fold_every_input(*model, 1, tok->encode("The quick brown fox jumps over the lazy dog again")),
            std::vector<std::string>{});
  EXPECT_EQ(model->input_producer("lm_head.weight"), std::nullopt);
}

// GPT-2: into ln_1 (weight and bias), the value rows of the fused c_attn and their bias, ln_2; the
// MLP's second layer reads GELU's output, which no scale passes through: it has no producer.
TEST(Awq, FoldsIntoGpt2NormsBiasesAndFusedValueRows) {
  auto model = load_causal_lm_layerwise(test::model_dir("gpt2-7m-wiki"));
  auto tok = load_tokenizer(test::model_dir("gpt2-7m-wiki"));
  EXPECT_EQ(fold_every_input(*model, 2, tok->encode("The quick brown fox jumps over the lazy dog again")),
            std::vector<std::string>{"transformer.h.2.mlp.c_proj.weight"});
  test::expect_error([&] { (void)model->weight("transformer.h.2.attn.bogus.weight"); }, {"transformer.h.2.attn.bogus", "not a weight"});
  test::expect_error([&] { model->replace_weight("transformer.h.2.ln_1.bias", {1.0f}); }, {"ln_1.bias", "needs"});
}

// OPT (pre-LN, ReLU): the norms, v_proj's rows and bias (out_proj), and fc1's rows and bias (fc2:
// ReLU(x / s) = ReLU(x) / s for s > 0).
TEST(Awq, FoldsIntoOptNormsValueRowsAndFc1) {
  const auto data = std::filesystem::path(LOWBIT_SOURCE_DIR) / "tests/data";
  auto model = load_causal_lm_layerwise(data / "opt-tiny-preln");
  EXPECT_EQ(fold_every_input(*model, 1, {2, 100, 200, 300, 400, 500, 600, 700}), std::vector<std::string>{});
  // Post-LN (OPT-350m): a norm's output is also the residual, so q/k/v and fc1 have no producer.
  auto post = load_causal_lm_layerwise(data / "opt-tiny-postln-proj");
  EXPECT_EQ(fold_every_input(*post, 1, {2, 100, 200, 300, 400, 500, 600, 700}),
            (std::vector<std::string>{"model.decoder.layers.1.self_attn.q_proj.weight", "model.decoder.layers.1.fc1.weight"}));
}

TEST(Awq, LayerwiseOnLlama16mBeatsRtn) {
  const auto in = test::model_dir("llama-16m-wiki");
  const auto root = test::temp_dir("awq");
  const auto calib = test::shared_dir() / "datasets/wikitext-2/wiki.valid.tokens";
  QuantizeOptions opt;
  opt.scheme = "int3";
  opt.progress = false;
  quantize_checkpoint(in, root / "rtn", opt);
  opt.method = "awq";
  opt.calib = {calib, 16, 256, 1};
  quantize_checkpoint(in, root / "awq", opt);
  // The norms now carry the folded scales (float32); the linear weights are quantized.
  WeightStore ws(root / "awq");
  EXPECT_EQ(ws.get("model.layers.0.input_layernorm.weight").dtype, DType::F32);
  EXPECT_EQ(ws.get("model.layers.3.mlp.down_proj.weight").format, "affine");
  // Scales alone change nothing in float: at 8 bits the AWQ model stays as close as RTN's.
  auto base = load_causal_lm(in);
  auto rtn = load_causal_lm(root / "rtn");
  auto awq = load_causal_lm(root / "awq");
  auto tok = load_tokenizer(in);
  auto tokens = tok->encode(read_file(test::shared_dir() / "datasets/wikitext-2/wiki.test.raw").substr(0, 60000));
  PerplexityOptions popt;
  popt.ctx = 256;
  popt.bos_id = 1;
  popt.max_windows = 16;
  popt.progress = false;
  const CausalLM* models[] = {rtn.get(), awq.get()};
  auto r = perplexity_compare(models, base.get(), tokens, popt);
  std::printf("[ awq      ] llama-16m-wiki int3: RTN KLD %.4f ppl %.3f, AWQ KLD %.4f ppl %.3f\n", r[0].kld, r[0].ppl,
              r[1].kld, r[1].ppl);
  EXPECT_LT(r[1].kld, r[0].kld);
  EXPECT_LT(r[1].ppl, r[0].ppl);
}

}  // namespace
}  // namespace lowbit
