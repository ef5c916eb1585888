// lowbit eval MODEL --ppl FILE [--ref MODEL]: perplexity, and against a reference model mean KL
// divergence and top-1 agreement on the same windows.
#include <chrono>

#include "commands.h"
#include "lowbit/core/error.h"
#include "lowbit/core/file.h"
#include "lowbit/eval/perplexity.h"
#include "lowbit/io/model_path.h"
#include "lowbit/io/tokenizer.h"

namespace lowbit::cli {

namespace {

struct EvalArgs {
  Common c;
  std::string ppl_file, ref;
  int ctx = 512;
  std::string score = "all";
  int max_windows = 0;
  std::string tsv, label_map;  // --tsv: a classifier's accuracy (eval_classifier, cmd_classify.cpp)
  int max_len = 0, batch = 32;
};

int eval(const EvalArgs& a) {
  const Common& c = a.c;
  if (!a.tsv.empty()) {
    if (!a.ppl_file.empty()) fail("eval: give --ppl FILE or --tsv FILE, not both");
    return eval_classifier(c, a.tsv, a.max_len, a.label_map, a.batch);
  }
  apply_threads(c);
  if (a.ppl_file.empty())
    fail("eval: give --ppl FILE (perplexity of a text file) or --tsv FILE (accuracy of a classifier)");
  auto dir = resolve_model_path(c.model);
  auto tok = load_tokenizer(dir);
  auto model = load_causal_lm(dir);
  std::unique_ptr<CausalLM> ref;
  std::filesystem::path ref_dir;
  if (!a.ref.empty()) {
    ref_dir = resolve_model_path(a.ref);
    ref = load_causal_lm(ref_dir);
  }
  const std::string text = read_file(a.ppl_file);
  auto t0 = std::chrono::steady_clock::now();
  auto tokens = tok->encode(text);
  double tok_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print(stderr, "{}: {} bytes -> {} tokens in {:.2f} s\n", a.ppl_file, text.size(), tokens.size(), tok_s);
  PerplexityOptions opt;
  opt.ctx = a.ctx;
  opt.score = a.score == "all" ? PplScore::All : PplScore::SecondHalf;
  opt.bos_id = tok->add_bos() ? tok->bos_id() : -1;
  opt.max_windows = a.max_windows;
  opt.reference = ref.get();
  auto t1 = std::chrono::steady_clock::now();
  PerplexityResult r = perplexity(*model, tokens, opt);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  const double tps = double(r.windows) * r.ctx / secs;
  if (c.json) {
    json j = {{"ppl", r.ppl},         {"ppl_stderr", r.ppl_stderr}, {"tokens_scored", r.tokens_scored},
              {"windows", r.windows}, {"ctx", r.ctx},               {"score", a.score},
              {"file", a.ppl_file},   {"model", dir.string()},      {"text_tokens", tokens.size()},
              {"seconds", secs},      {"tok_s", tps}};
    if (ref) {
      j["kld"] = r.kld;
      j["kld_stderr"] = r.kld_stderr;
      j["top1"] = r.top1;
      j["ref"] = ref_dir.string();
    }
    fmt::print("{}\n", j.dump());
  } else {
    fmt::print("ppl = {:.4f} +/- {:.4f}  ({} windows of {} tokens, {} tokens scored ({}), {:.1f} s, {:.0f} tok/s)\n",
               r.ppl, r.ppl_stderr, r.windows, r.ctx, r.tokens_scored, a.score, secs, tps);
    if (ref)
      fmt::print("vs {}: mean KLD = {:.6f} +/- {:.6f} nats/token, top-1 agreement = {:.2f}%\n", ref_dir.string(), r.kld,
                 r.kld_stderr, 100 * r.top1);
  }
  return 0;
}

}  // namespace

void register_eval(CLI::App& app, std::function<int()>& run) {
  auto a = std::make_shared<EvalArgs>();
  auto* cmd = app.add_subcommand("eval", "perplexity of a text file; KL divergence and top-1 vs a reference");
  add_common(cmd, a->c);
  cmd->add_option("--ppl", a->ppl_file, "plain-text file to score");
  cmd->add_option("--tsv", a->tsv, "text<TAB>label file (or .csv) to classify: accuracy, macro-F1, confusion matrix");
  cmd->add_option("--max-len", a->max_len, "--tsv: tokens per text, [CLS]/[SEP] included (default: the model's maximum)");
  cmd->add_option("--label-map", a->label_map, "--tsv: data labels to model labels, e.g. pos=1,neg=0");
  cmd->add_option("--batch", a->batch, "--tsv: texts per forward pass")->capture_default_str();
  cmd->add_option("--ref", a->ref, "reference model (e.g. the unquantized one): adds KLD and top-1 agreement");
  cmd->add_option("--ctx", a->ctx, "window length in tokens")->capture_default_str();
  cmd->add_option("--score", a->score, "all: every token but the first; second-half: tokens at positions >= ctx/2")
      ->check(CLI::IsMember({"all", "second-half"}))
      ->capture_default_str();
  cmd->add_option("--max-windows", a->max_windows, "score at most this many windows (0: all)");
  cmd->callback([a, &run] { run = [a] { return eval(*a); }; });
}

}  // namespace lowbit::cli
