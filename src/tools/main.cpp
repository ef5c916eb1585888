// The lowbit command-line tool: parses flags, calls the library, prints (text, or one JSON object
// with --json). Commands are registered in main() below; each lives in its own function.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "lowbit/core/error.h"
#include "lowbit/core/file.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/eval/perplexity.h"
#include "lowbit/io/config.h"
#include "lowbit/io/model_path.h"
#include "lowbit/io/safetensors.h"
#include "lowbit/io/tokenizer.h"
#include "lowbit/kernels/gemm.h"
#include "lowbit/models/generate.h"
#include "lowbit/models/model.h"

namespace lowbit {
namespace {

using nlohmann::json;
constexpr const char* kDefaultModel = "llama-16m-wiki";

struct Common {
  std::string model = kDefaultModel;
  bool json = false;
  int threads = 0;
};

void add_common(CLI::App* cmd, Common& c) {
  cmd->add_option("model,--model", c.model,
                  "checkpoint folder, or a name searched in $LOWBIT_MODELS and ../shared/models")
      ->capture_default_str();
  cmd->add_flag("--json", c.json, "print one JSON object on stdout");
  cmd->add_option("--threads", c.threads, "threads to use (default: all cores)");
}

void apply_threads(const Common& c) {
  set_default_threads(c.threads);
  set_blas_threads(c.threads > 0 ? c.threads : default_thread_pool().size());
}

std::string shape_str(const std::vector<int64_t>& s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

int cmd_inspect(const Common& c) {
  auto dir = resolve_model_path(c.model);
  ModelConfig cfg = load_config(dir);
  TensorStore store(dir);
  int64_t params = 0;
  json tensors = json::array();
  auto all = store.all();
  for (const auto& t : all) {
    params += t.info->numel();
    tensors.push_back({{"name", t.info->name}, {"dtype", dtype_name(t.info->dtype)}, {"shape", t.info->shape}});
  }
  const uint64_t bytes = store.total_bytes();
  if (c.json) {
    json out = {{"model", dir.string()},
                {"architecture", cfg.architecture},
                {"params", params},
                {"bytes", bytes},
                {"dtype", cfg.dtype},
                {"config",
                 {{"hidden_size", cfg.hidden_size},
                  {"num_layers", cfg.num_layers},
                  {"num_heads", cfg.num_heads},
                  {"num_kv_heads", cfg.num_kv_heads},
                  {"head_dim", cfg.head_dim},
                  {"intermediate_size", cfg.intermediate_size},
                  {"vocab_size", cfg.vocab_size},
                  {"max_positions", cfg.max_positions},
                  {"rope_theta", cfg.rope_theta},
                  {"rms_eps", cfg.rms_eps},
                  {"tie_word_embeddings", cfg.tie_word_embeddings}}},
                {"tensors", tensors}};
    fmt::print("{}\n", out.dump(1));
    return 0;
  }
  fmt::print("model         {}\n", dir.string());
  fmt::print("architecture  {} ({}), dtype {}\n", cfg.architecture, cfg.model_type, cfg.dtype);
  fmt::print("shape         hidden {}, {} layers, {} heads / {} KV heads of {}, MLP {}, vocab {}, {} positions\n",
             cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size,
             cfg.vocab_size, cfg.max_positions);
  fmt::print("rope          theta {}, rms eps {}, tied embeddings: {}\n", cfg.rope_theta, cfg.rms_eps,
             cfg.tie_word_embeddings ? "yes" : "no");
  fmt::print("\n{:<52} {:<5} {:<16} {:>12}\n", "tensor", "dtype", "shape", "bytes");
  for (const auto& t : all)
    fmt::print("{:<52} {:<5} {:<16} {:>12}\n", t.info->name, dtype_name(t.info->dtype), shape_str(t.info->shape),
               t.bytes());
  fmt::print("\n{} tensors, {} parameters ({:.2f} M), {} bytes ({:.2f} MB), {:.2f} bits per weight\n", all.size(),
             params, params / 1e6, bytes, bytes / 1e6, params ? 8.0 * double(bytes) / double(params) : 0.0);
  return 0;
}

struct RunArgs {
  std::string prompt = "Once upon a time";
  int n = 64;
  float temp = 0, top_p = 1;
  uint64_t seed = 0;
};

// Decoded text of ids, held back while it ends inside an incomplete UTF-8 sequence (shown as U+FFFD).
std::string stable_text(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  std::string s = tok.decode(ids, true);
  static const std::string kReplacement = "\xEF\xBF\xBD";
  while (s.size() >= 3 && s.compare(s.size() - 3, 3, kReplacement) == 0) s.resize(s.size() - 3);
  return s;
}

int cmd_run(const Common& c, const RunArgs& a) {
  apply_threads(c);
  auto dir = resolve_model_path(c.model);
  auto tok = load_tokenizer(dir);
  auto model = load_causal_lm(dir);
  std::vector<int32_t> prompt;
  if (tok->add_bos() && tok->bos_id() >= 0) prompt.push_back(tok->bos_id());
  auto text_ids = tok->encode(a.prompt);
  prompt.insert(prompt.end(), text_ids.begin(), text_ids.end());
  if (a.n < 0) fail("-n must be >= 0, got {}", a.n);
  if (a.temp < 0) fail("--temp must be >= 0, got {}", a.temp);
  if (!(a.top_p > 0 && a.top_p <= 1)) fail("--top-p must be in (0, 1], got {}", a.top_p);

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
                      &stats);
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

struct EvalArgs {
  std::string ppl_file;
  int ctx = 512;
  std::string score = "all";
  int max_windows = 0;
};

int cmd_eval(const Common& c, const EvalArgs& a) {
  apply_threads(c);
  if (a.ppl_file.empty()) fail("eval: give --ppl FILE (a plain-text file to score)");
  auto dir = resolve_model_path(c.model);
  auto tok = load_tokenizer(dir);
  auto model = load_causal_lm(dir);
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
  auto t1 = std::chrono::steady_clock::now();
  PerplexityResult r = perplexity(*model, tokens, opt);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  const double tps = double(r.windows) * r.ctx / secs;
  if (c.json) {
    json j = {{"ppl", r.ppl},          {"ppl_stderr", r.ppl_stderr}, {"tokens_scored", r.tokens_scored},
              {"windows", r.windows},  {"ctx", r.ctx},               {"score", a.score},
              {"file", a.ppl_file},    {"model", dir.string()},      {"text_tokens", tokens.size()},
              {"seconds", secs},       {"tok_s", tps}};
    fmt::print("{}\n", j.dump());
  } else {
    fmt::print("ppl = {:.4f} +/- {:.4f}  ({} windows of {} tokens, {} tokens scored ({}), {:.1f} s, {:.0f} tok/s)\n",
               r.ppl, r.ppl_stderr, r.windows, r.ctx, r.tokens_scored, a.score, secs, tps);
  }
  return 0;
}

}  // namespace
}  // namespace lowbit

int main(int argc, char** argv) {
  using namespace lowbit;
  CLI::App app{"lowbit: make large language models small (quantize, run, evaluate)"};
  app.require_subcommand(1);

  Common inspect_c, run_c, eval_c;
  auto* inspect = app.add_subcommand("inspect", "architecture, tensors, parameter count, bytes");
  add_common(inspect, inspect_c);

  RunArgs run_a;
  auto* run = app.add_subcommand("run", "generate text from a prompt");
  add_common(run, run_c);
  run->add_option("-p,--prompt", run_a.prompt, "prompt text")->capture_default_str();
  run->add_option("-n,--n-predict", run_a.n, "tokens to generate")->capture_default_str();
  run->add_option("--temp", run_a.temp, "sampling temperature (0: greedy)")->capture_default_str();
  run->add_option("--top-p", run_a.top_p, "nucleus sampling threshold")->capture_default_str();
  run->add_option("--seed", run_a.seed, "random seed for sampling")->capture_default_str();

  EvalArgs eval_a;
  auto* eval = app.add_subcommand("eval", "perplexity of a text file");
  add_common(eval, eval_c);
  eval->add_option("--ppl", eval_a.ppl_file, "plain-text file to score")->required();
  eval->add_option("--ctx", eval_a.ctx, "window length in tokens")->capture_default_str();
  eval->add_option("--score", eval_a.score, "all: every token but the first; second-half: llama.cpp's convention")
      ->check(CLI::IsMember({"all", "second-half"}))
      ->capture_default_str();
  eval->add_option("--max-windows", eval_a.max_windows, "score at most this many windows (0: all)");

  CLI11_PARSE(app, argc, argv);
  try {
    if (inspect->parsed()) return cmd_inspect(inspect_c);
    if (run->parsed()) return cmd_run(run_c, run_a);
    if (eval->parsed()) return cmd_eval(eval_c, eval_a);
  } catch (const Error& e) {
    fmt::print(stderr, "lowbit: error: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "lowbit: internal error: {}\n", e.what());
    return 2;
  }
  return 0;
}
