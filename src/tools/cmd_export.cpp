// lowbit export MODEL --to gguf -o FILE: hand a float checkpoint to llama.cpp (its llama-quantize
// makes Q8_0 / Q4_0 / k-quants of the same weights, for comparisons on equal footing).
#include <chrono>

#include "commands.h"
#include "lowbit/core/error.h"
#include "lowbit/io/model_path.h"
#include "lowbit/models/export_gguf.h"

namespace lowbit::cli {

namespace {

struct ExportArgs {
  Common c;
  std::string to = "gguf", out;
};

int export_model(const ExportArgs& a) {
  if (a.to != "gguf") fail("export: --to '{}' is not supported yet; known: gguf", a.to);
  if (a.out.empty()) fail("export: -o FILE is required");
  const auto dir = resolve_model_path(a.c.model);
  const auto t0 = std::chrono::steady_clock::now();
  export_gguf(dir, a.out);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto bytes = std::filesystem::file_size(a.out);
  if (a.c.json) {
    fmt::print("{}\n", json{{"to", a.to}, {"out", a.out}, {"bytes", bytes}, {"seconds", s}}.dump());
  } else {
    fmt::print("wrote {} ({:.2f} GB, GGUF) in {:.1f} s\n", a.out, bytes / 1e9, s);
  }
  return 0;
}

}  // namespace

void register_export(CLI::App& app, std::function<int()>& run) {
  auto a = std::make_shared<ExportArgs>();
  auto* cmd = app.add_subcommand("export", "write a float checkpoint in another tool's format (gguf)");
  add_common(cmd, a->c);
  cmd->add_option("--to", a->to, "target format: gguf")->capture_default_str();
  cmd->add_option("-o,--out", a->out, "output file");
  cmd->callback([a, &run] { run = [a] { return export_model(*a); }; });
}

}  // namespace lowbit::cli
