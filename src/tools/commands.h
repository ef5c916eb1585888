#pragma once
// The lowbit CLI's commands: each registers its flags on a CLI11 subcommand and runs from a callback.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <nlohmann/json.hpp>
#include <string>

#include "lowbit/models/model.h"

namespace lowbit::cli {

using nlohmann::json;
inline constexpr const char* kDefaultModel = "llama-16m-wiki";

// Flags every command takes.
struct Common {
  std::string model = kDefaultModel;
  bool json = false;
  int threads = 0;
};
void add_common(CLI::App* cmd, Common& c);
void apply_threads(const Common& c);
// --kv-cache f16|f32: the element type of the session's KV cache (models/attention.h).
void add_kv_cache_option(CLI::App* cmd, KVCacheType& kv);
std::string shape_str(const std::vector<int64_t>& s);
std::string default_ppl_file();    // ../shared/datasets/wikitext-2/wiki.test.raw
std::string default_calib_file();  // ../shared/datasets/wikitext-2/wiki.valid.tokens

// Each returns the process exit status; `parsed` is checked by main().
void register_inspect(CLI::App& app, std::function<int()>& run);
void register_run(CLI::App& app, std::function<int()>& run);
void register_eval(CLI::App& app, std::function<int()>& run);
void register_quantize(CLI::App& app, std::function<int()>& run);
void register_report(CLI::App& app, std::function<int()>& run);
void register_classify(CLI::App& app, std::function<int()>& run);
void register_synth(CLI::App& app, std::function<int()>& run);
void register_bench(CLI::App& app, std::function<int()>& run);
void register_export(CLI::App& app, std::function<int()>& run);

// `lowbit eval MODEL --tsv FILE`: accuracy / macro-F1 of a sequence classifier (cmd_classify.cpp).
int eval_classifier(const Common& c, const std::string& data_file, int max_len, const std::string& label_map,
                    int batch);

}  // namespace lowbit::cli
