// Whole-file WikiText-2 perplexity against ../shared's goldens (transformers, ctx 512, both
// protocols in one pass), and the quality of int8 quantization on GPT-2. Minutes on two cores:
// labelled slow (scripts/test.sh runs it; the sanitizer build skips it).
#include <nlohmann/json.hpp>

#include <cmath>

#include "lowbit/core/file.h"
#include "lowbit/eval/perplexity.h"
#include "lowbit/io/tokenizer.h"
#include "lowbit/quant/quantize.h"
#include "../test_util.h"

namespace lowbit {
namespace {

struct FullPpl {
  double all, second_half;
  int64_t scored, text_tokens;
  double kld = 0;
};

// "all" through perplexity_compare(), "second half" (tokens at positions >= 256) from the same
// logits in the hook; models[0] is the one reported, against `reference` when given.
std::vector<FullPpl> full_ppl(const std::string& name, std::vector<const CausalLM*> models, const CausalLM* reference) {
  auto dir = test::model_dir(name);
  auto tok = load_tokenizer(dir);
  auto tokens = tok->encode(read_file(test::shared_dir() / "datasets/wikitext-2/wiki.test.raw"));
  const int vocab = models[0]->vocab_size();
  std::vector<double> nll_half(models.size());
  int64_t n_half = 0;
  PerplexityOptions opt;
  opt.ctx = 512;
  opt.bos_id = tok->add_bos() ? tok->bos_id() : -1;
  // The hook sees models[0] only; the others' second half is not needed here.
  opt.on_window = [&](int, std::span<const int32_t> win, const float* logits) {
    for (int row = 255; row < 511; ++row, ++n_half)
      nll_half[0] -= log_softmax_at(logits + size_t(row) * size_t(vocab), vocab, win[size_t(row + 1)]);
  };
  auto r = perplexity_compare(models, reference, tokens, opt);
  std::vector<FullPpl> out;
  for (size_t i = 0; i < r.size(); ++i)
    out.push_back({r[i].ppl, i == 0 ? std::exp(nll_half[0] / double(n_half)) : 0, r[i].tokens_scored,
                   int64_t(tokens.size()), r[i].kld});
  return out;
}

void check_goldens(const std::string& name, const FullPpl& p) {
  auto info = nlohmann::json::parse(read_file(test::model_dir(name) / "training_info.json"));
  const double want_all = info["ppl_all_tokens"].get<double>(), want_half = info["ppl_second_half"].get<double>();
  std::printf("[ ppl      ] %s: all %.4f (golden %.4f, %+.4f%%), second half %.4f (golden %.4f, %+.4f%%), %ld tokens\n",
              name.c_str(), p.all, want_all, 100 * (p.all / want_all - 1), p.second_half, want_half,
              100 * (p.second_half / want_half - 1), long(p.scored));
  EXPECT_EQ(p.text_tokens, info["wikitext2_test_tokens"].get<int64_t>());
  EXPECT_EQ(p.scored, info["scored_tokens"].get<int64_t>());
  EXPECT_NEAR(p.all, want_all, 1e-3 * want_all);
  EXPECT_NEAR(p.second_half, want_half, 1e-3 * want_half);
}

TEST(PerplexityFull, Llama16mWikiText2BothProtocols) {
  auto model = load_causal_lm(test::model_dir("llama-16m-wiki"));
  check_goldens("llama-16m-wiki", full_ppl("llama-16m-wiki", {model.get()}, nullptr)[0]);
}

// GPT-2 float goldens, and int8 within 0.5% of float (issue: "GPT-2 int8 within 0.5% perplexity").
TEST(PerplexityFull, Gpt2_7mWikiText2AndInt8) {
  const auto in = test::model_dir("gpt2-7m-wiki");
  const auto out = test::temp_dir("q") / "int8";
  QuantizeOptions qopt;
  qopt.scheme = "int8";
  qopt.progress = false;
  quantize_checkpoint(in, out, qopt);
  auto base = load_causal_lm(in);
  auto q8 = load_causal_lm(out);
  auto r = full_ppl("gpt2-7m-wiki", {base.get(), q8.get()}, base.get());
  check_goldens("gpt2-7m-wiki", r[0]);
  std::printf("[ quant    ] gpt2-7m-wiki int8: ppl %.4f (%+.3f%% vs float %.4f), KLD %.5f\n", r[1].all,
              100 * (r[1].all / r[0].all - 1), r[0].all, r[1].kld);
  EXPECT_LT(std::fabs(r[1].all / r[0].all - 1), 0.005);
}

}  // namespace
}  // namespace lowbit
