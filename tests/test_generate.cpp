// Generation and perplexity against the goldens of ../shared (transformers' greedy text, the
// reference greedy ids of stories260K), on short inputs; the whole-file perplexity is in tests/slow.
#include <nlohmann/json.hpp>

#include <cmath>

#include "lowbit/core/error.h"
#include "lowbit/core/file.h"
#include "lowbit/eval/perplexity.h"
#include "lowbit/io/tokenizer.h"
#include "lowbit/models/generate.h"
#include "test_util.h"

namespace lowbit {
namespace {

TEST(Generate, GreedyMatchesTransformersLlama16m) {
  auto dir = test::model_dir("llama-16m-wiki");
  auto info = nlohmann::json::parse(read_file(dir / "training_info.json"));
  auto tok = load_tokenizer(dir);
  auto model = load_causal_lm(dir);
  ASSERT_TRUE(tok->add_bos());
  std::vector<int32_t> text = tok->encode("Once upon a time");
  std::vector<int32_t> prompt = {tok->bos_id()};
  prompt.insert(prompt.end(), text.begin(), text.end());
  auto out = generate(*model, prompt, 48, {}, {}, nullptr, nullptr);
  ASSERT_EQ(out.size(), 48u);
  text.insert(text.end(), out.begin(), out.end());
  EXPECT_EQ(tok->decode(text), info["greedy_48_from_once_upon_a_time"].get<std::string>());
}

TEST(Generate, GreedyMatchesReferenceStories260K) {
  auto dir = test::model_dir("stories260K");
  auto ref = nlohmann::json::parse(read_file(dir / "reference/reference.json"));
  auto want = ref["greedy_ids"].get<std::vector<int32_t>>();
  auto tok = load_tokenizer(dir / "hf");
  auto model = load_causal_lm(dir / "hf");
  std::vector<int32_t> prompt = {tok->bos_id()};
  for (int32_t id : tok->encode(ref["greedy_prompt"].get<std::string>())) prompt.push_back(id);
  ASSERT_LT(prompt.size(), want.size());
  ASSERT_TRUE(std::equal(prompt.begin(), prompt.end(), want.begin()));
  auto out = generate(*model, prompt, int(want.size() - prompt.size()), {}, {}, nullptr, nullptr);
  std::vector<int32_t> got = prompt;
  got.insert(got.end(), out.begin(), out.end());
  EXPECT_EQ(got, want);
}

TEST(Generate, SamplingIsSeededAndStopsAtEos) {
  auto dir = test::model_dir("stories260K/hf");
  auto model = load_causal_lm(dir);
  std::vector<int32_t> prompt = {1, 403, 407};
  SamplingOptions s{0.8f, 0.9f, 42};
  auto a = generate(*model, prompt, 40, s, {}, nullptr, nullptr);
  auto b = generate(*model, prompt, 40, s, {}, nullptr, nullptr);
  EXPECT_EQ(a, b);
  s.seed = 43;
  EXPECT_NE(generate(*model, prompt, 40, s, {}, nullptr, nullptr), a);
  // Stopping: whatever token comes first ends generation when it is a stop id.
  auto first = generate(*model, prompt, 1, {}, {}, nullptr, nullptr);
  EXPECT_EQ(generate(*model, prompt, 10, {}, first, nullptr, nullptr), first);
}

TEST(Sampler, TopPKeepsOnlyTheNucleus) {
  std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  Sampler s({1.0f, 0.6f, 7});
  for (int i = 0; i < 200; ++i) EXPECT_LE(s.sample(logits.data(), 4), 1);  // 0.5 + 0.3 >= 0.6
  Sampler greedy({0.0f, 1.0f, 0});
  EXPECT_EQ(greedy.sample(logits.data(), 4), 0);
}

TEST(Perplexity, MatchesDirectComputationOnGoldenTokens) {
  auto dir = test::model_dir("llama-16m-wiki");
  auto model = load_causal_lm(dir);
  auto tokens = test::read_binary<int32_t>(dir / "golden_tokens_64.i32");  // BOS + 63 text tokens
  std::vector<int32_t> text(tokens.begin() + 1, tokens.end());
  PerplexityOptions opt;
  opt.ctx = 16;
  opt.bos_id = 1;
  opt.progress = false;
  PerplexityResult r = perplexity(*model, text, opt);
  EXPECT_EQ(r.windows, 4);  // 63 / 15
  EXPECT_EQ(r.tokens_scored, 4 * 15);
  // The same number from the model's logits directly.
  double nll = 0;
  std::vector<float> logits(16 * 8192);
  for (int w = 0; w < 4; ++w) {
    std::vector<int32_t> win = {1};
    win.insert(win.end(), text.begin() + w * 15, text.begin() + (w + 1) * 15);
    auto s = model->new_session(16, KVCacheType::f32);  // as perplexity() does
    model->forward(*s, win, logits.data(), true);
    for (int i = 0; i < 15; ++i) nll -= log_softmax_at(&logits[size_t(i) * 8192], 8192, win[size_t(i + 1)]);
  }
  EXPECT_NEAR(r.ppl, std::exp(nll / 60), 1e-9 * r.ppl);
  EXPECT_GT(r.ppl_stderr, 0);

  opt.score = PplScore::SecondHalf;  // tokens at positions 8..15 of each window
  EXPECT_EQ(perplexity(*model, text, opt).tokens_scored, 4 * 8);
  opt.ctx = 100;
  test::expect_error([&] { perplexity(*model, text, opt); }, {"fewer than one window"});
  opt.ctx = 4096;
  test::expect_error([&] { perplexity(*model, text, opt); }, {"max_position_embeddings"});
}

}  // namespace
}  // namespace lowbit
