// The lowbit command-line tool: parses flags, calls the library, prints (text, or one JSON object
// with --json). Each command lives in its own cmd_*.cpp.
#include <filesystem>
#include <map>

#include "commands.h"
#include "lowbit/core/error.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/kernels/gemm.h"

namespace lowbit::cli {

void add_common(CLI::App* cmd, Common& c) {
  cmd->add_option("model,--model", c.model,
                  "checkpoint folder, or a name searched in $LOWBIT_MODELS and ../shared/models")
      ->capture_default_str();
  cmd->add_flag("--json", c.json, "print one JSON object on stdout");
  cmd->add_option("--threads", c.threads, "threads to use (default: all cores)");
}

void add_kv_cache_option(CLI::App* cmd, KVCacheType& kv) {
  cmd->add_option("--kv-cache", kv,
                  "KV cache elements: f16 (half the memory and attention traffic) or f32 (exact keys and values)")
      ->transform(CLI::CheckedTransformer(std::map<std::string, KVCacheType>{{"f16", KVCacheType::f16}, {"f32", KVCacheType::f32}}))
      ->default_str("f16");
}

void apply_threads(const Common& c) {
  set_default_threads(c.threads);
  set_blas_threads(c.threads > 0 ? c.threads : default_thread_pool().size());
}

std::string shape_str(const std::vector<int64_t>& s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

namespace {
std::string shared_file(const char* rel) {
  if (std::filesystem::exists(std::filesystem::path("../shared") / rel)) return (std::filesystem::path("../shared") / rel).string();
  return (std::filesystem::path(LOWBIT_SHARED_DIR) / rel).string();
}
}  // namespace

std::string default_ppl_file() { return shared_file("datasets/wikitext-2/wiki.test.raw"); }
std::string default_calib_file() { return shared_file("datasets/wikitext-2/wiki.valid.tokens"); }

}  // namespace lowbit::cli

int main(int argc, char** argv) {
  using namespace lowbit;
  select_blas_kernels(argv);  // may re-execute the program once (gemm.h)
  CLI::App app{"lowbit: make large language models small (quantize, run, evaluate)"};
  app.require_subcommand(1);
  std::function<int()> run;
  cli::register_inspect(app, run);
  cli::register_run(app, run);
  cli::register_eval(app, run);
  cli::register_quantize(app, run);
  cli::register_report(app, run);
  cli::register_classify(app, run);
  cli::register_synth(app, run);
  cli::register_bench(app, run);
  cli::register_export(app, run);
  CLI11_PARSE(app, argc, argv);
  try {
    return run ? run() : 0;
  } catch (const Error& e) {
    fmt::print(stderr, "lowbit: error: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "lowbit: internal error: {}\n", e.what());
    return 2;
  }
}
