// lowbit run MODEL -p TEXT -n N: streams generated text; prefill and decode speed on stderr.
#include <cstdio>

#include "commands.h"
#include "lowbit/core/error.h"
#include "lowbit/io/model_path.h"
#include "lowbit/io/tokenizer.h"
#include "lowbit/models/generate.h"

namespace lowbit::cli {

namespace {

struct RunArgs {
  Common c;
  std::string prompt = "Once upon a time";
  int n = 64;
  float temp = 0, top_p = 1;
  uint64_t seed = 0;
  KVCacheType kv = KVCacheType::f16;
};

// Decoded text of ids, held back while it ends inside an incomplete UTF-8 sequence (shown as U+FFFD).
std::string stable_text(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  std::string s = tok.decode(ids, true);
  static const std::string kReplacement = "\xEF\xBF\xBD";
  while (s.size() >= 3 && s.compare(s.size() - 3, 3, kReplacement) == 0) s.resize(s.size() - 3);
  return s;
}

int run_model(const RunArgs& a) {
  const Common& c = a.c;
  if (a.n < 0) fail("-n must be >= 0, got {}", a.n);
  if (a.temp < 0) fail("--temp must be >= 0, got {}", a.temp);
  if (!(a.top_p > 0 && a.top_p <= 1)) fail("--top-p must be in (0, 1], got {}", a.top_p);
  apply_threads(c);
  auto dir = resolve_model_path(c.model);
  auto tok = load_tokenizer(dir);
  auto model = load_causal_lm(dir);
  std::vector<int32_t> prompt;
  if (tok->add_bos() && tok->bos_id() >= 0) prompt.push_back(tok->bos_id());
  auto text_ids = tok->encode(a.prompt);
  prompt.insert(prompt.end(), text_ids.begin(), text_ids.end());

  std::vector<int32_t> all = text_ids;  // text shown = prompt + continuation
  std::string shown;
  if (!c.json) {
    shown = stable_text(*tok, all);
    fmt::print("{}", shown);
    std::fflush(stdout);
  }
  std::vector<int32_t> stop;
  if (tok->eos_id() >= 0) stop.push_back(tok->eos_id());
  GenerationStats stats;
  auto out = generate(*model, prompt, a.n, SamplingOptions{a.temp, a.top_p, a.seed}, stop,
                      [&](int32_t id) {
                        all.push_back(id);
                        if (c.json) return;
                        std::string s = stable_text(*tok, all);
                        if (s.size() > shown.size() && s.compare(0, shown.size(), shown) == 0) {
                          fmt::print("{}", s.substr(shown.size()));
                          std::fflush(stdout);
                          shown = s;
                        }
                      },
                      &stats, a.kv);
  std::string text = tok->decode(all, true);
  if (c.json) {
    json j = {{"text", text},
              {"completion", tok->decode(out, true)},
              {"tokens", out},
              {"prompt_tokens", prompt},
              {"prefill_tok_s", stats.prefill_tok_s()},
              {"decode_tok_s", stats.decode_tok_s()}};
    fmt::print("{}\n", j.dump());
  } else {
    if (text.size() > shown.size() && text.compare(0, shown.size(), shown) == 0) fmt::print("{}", text.substr(shown.size()));
    fmt::print("\n");
  }
  fmt::print(stderr, "prefill: {} tokens in {:.3f} s ({:.1f} tok/s); decode: {} tokens in {:.3f} s ({:.1f} tok/s)\n",
             stats.prompt_tokens, stats.prefill_seconds, stats.prefill_tok_s(), stats.generated,
             stats.decode_seconds, stats.decode_tok_s());
  return 0;
}

}  // namespace

void register_run(CLI::App& app, std::function<int()>& run) {
  auto a = std::make_shared<RunArgs>();
  auto* cmd = app.add_subcommand("run", "generate text from a prompt");
  add_common(cmd, a->c);
  cmd->add_option("-p,--prompt", a->prompt, "prompt text")->capture_default_str();
  cmd->add_option("-n,--n-predict", a->n, "tokens to generate")->capture_default_str();
  cmd->add_option("--temp", a->temp, "sampling temperature (0: greedy)")->capture_default_str();
  cmd->add_option("--top-p", a->top_p, "nucleus sampling threshold")->capture_default_str();
  cmd->add_option("--seed", a->seed, "random seed for sampling")->capture_default_str();
  add_kv_cache_option(cmd, a->kv);
  cmd->callback([a, &run] { run = [a] { return run_model(*a); }; });
}

}  // namespace lowbit::cli
