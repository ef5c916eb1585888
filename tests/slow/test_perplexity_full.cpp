// Whole-file WikiText-2 perplexity against ../shared's goldens (transformers, ctx 512). About two
// minutes on two cores: labelled slow (scripts/test.sh runs it; the sanitizer build skips it).
#include <nlohmann/json.hpp>

#include <cmath>

#include "lowbit/core/file.h"
#include "lowbit/eval/perplexity.h"
#include "lowbit/io/tokenizer.h"
#include "../test_util.h"

namespace lowbit {
namespace {

TEST(PerplexityFull, Llama16mWikiText2BothProtocols) {
  auto dir = test::model_dir("llama-16m-wiki");
  auto info = nlohmann::json::parse(read_file(dir / "training_info.json"));
  auto tok = load_tokenizer(dir);
  auto model = load_causal_lm(dir);
  auto tokens = tok->encode(read_file(test::shared_dir() / "datasets/wikitext-2/wiki.test.raw"));
  ASSERT_EQ(int64_t(tokens.size()), info["wikitext2_test_tokens"].get<int64_t>());

  // One pass: "all" through perplexity(), "second-half" from the same logits in the hook.
  double nll_half = 0;
  int64_t n_half = 0;
  PerplexityOptions opt;
  opt.ctx = 512;
  opt.bos_id = tok->bos_id();
  opt.on_window = [&](int, std::span<const int32_t> win, const float* logits) {
    for (int row = 255; row < 511; ++row, ++n_half)
      nll_half -= log_softmax_at(logits + size_t(row) * 8192, 8192, win[size_t(row + 1)]);
  };
  PerplexityResult r = perplexity(*model, tokens, opt);
  const double want_all = info["ppl_all_tokens"].get<double>(), want_half = info["ppl_second_half"].get<double>();
  const double half = std::exp(nll_half / double(n_half));
  std::printf("[ ppl      ] all %.4f (golden %.4f, %+.4f%%), second half %.4f (golden %.4f, %+.4f%%), %ld tokens\n",
              r.ppl, want_all, 100 * (r.ppl / want_all - 1), half, want_half, 100 * (half / want_half - 1),
              long(r.tokens_scored));
  EXPECT_EQ(r.tokens_scored, info["scored_tokens"].get<int64_t>());
  EXPECT_NEAR(r.ppl, want_all, 1e-3 * want_all);
  EXPECT_NEAR(half, want_half, 1e-3 * want_half);
}

}  // namespace
}  // namespace lowbit
