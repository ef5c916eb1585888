// Quality of round-to-nearest quantization on llama-16m-wiki, whole WikiText-2 test file, ctx 512,
// all tokens scored, against the float model on the same windows (issue bounds: int8 within 1% and
// mean KLD <= 0.002; int4 and nf4 within 6%). Several minutes: labelled slow.
#include <cmath>

#include "lowbit/core/file.h"
#include "lowbit/eval/perplexity.h"
#include "lowbit/io/tokenizer.h"
#include "lowbit/quant/quantize.h"
#include "../test_util.h"

namespace lowbit {
namespace {

TEST(QuantizedPerplexityFull, Llama16mInt8Int4Nf4) {
  const auto in = test::model_dir("llama-16m-wiki");
  const auto root = test::temp_dir("q");
  const std::vector<std::string> schemes = {"int8", "int4", "nf4"};
  std::vector<std::unique_ptr<CausalLM>> owned;
  auto base = load_causal_lm(in);
  std::vector<const CausalLM*> models = {base.get()};
  for (const auto& s : schemes) {
    QuantizeOptions opt;
    opt.scheme = s;
    opt.progress = false;
    quantize_checkpoint(in, root / s, opt);
    owned.push_back(load_causal_lm(root / s));
    models.push_back(owned.back().get());
  }
  auto tok = load_tokenizer(in);
  auto tokens = tok->encode(read_file(test::shared_dir() / "datasets/wikitext-2/wiki.test.raw"));
  PerplexityOptions opt;
  opt.ctx = 512;
  opt.bos_id = tok->bos_id();
  auto r = perplexity_compare(models, base.get(), tokens, opt);
  for (size_t i = 1; i < r.size(); ++i)
    std::printf("[ quant    ] %-5s ppl %.4f (%+.3f%% vs float %.4f), KLD %.5f, top-1 %.2f%%\n", schemes[i - 1].c_str(),
                r[i].ppl, 100 * (r[i].ppl / r[0].ppl - 1), r[0].ppl, r[i].kld, 100 * r[i].top1);
  EXPECT_LT(r[1].ppl / r[0].ppl, 1.01);
  EXPECT_LE(r[1].kld, 0.002);
  EXPECT_LT(r[2].ppl / r[0].ppl, 1.06);
  EXPECT_LT(r[3].ppl / r[0].ppl, 1.06);
}

}  // namespace
}  // namespace lowbit
