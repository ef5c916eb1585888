// lowbit synth --arch llama --shape NAME -o DIR: a checkpoint of a real model's shape with random
// weights and a byte-level tokenizer, for speed work.
#include <chrono>

#include "commands.h"
#include "lowbit/core/error.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/models/synth.h"

namespace lowbit::cli {

namespace {

struct SynthArgs {
  SynthOptions o;
  std::string out, dtype = "bf16";
  bool json = false, list = false;
};

int synth(const SynthArgs& a) {
  if (a.list) {
    for (const auto& s : synth_shapes()) fmt::print("{:16} {}\n", s.name, s.description);
    return 0;
  }
  if (a.out.empty()) fail("synth: -o DIR is required");
  if (a.o.shape.empty()) fail("synth: --shape is required (see --list)");
  SynthOptions o = a.o;
  if (a.dtype == "bf16") o.dtype = DType::BF16;
  else if (a.dtype == "f16") o.dtype = DType::F16;
  else if (a.dtype == "f32") o.dtype = DType::F32;
  else fail("synth: --dtype '{}': expected bf16, f16 or f32", a.dtype);
  const auto t0 = std::chrono::steady_clock::now();
  write_synthetic_model(o, a.out);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  uint64_t bytes = 0;
  for (const auto& e : std::filesystem::directory_iterator(a.out))
    if (e.is_regular_file()) bytes += e.file_size();
  if (a.json) {
    fmt::print("{}\n", json{{"shape", o.shape}, {"arch", o.arch}, {"dtype", a.dtype}, {"out", a.out},
                             {"bytes", bytes}, {"seconds", s}}
                           .dump());
  } else {
    fmt::print("wrote {} ({} {}, random weights): {:.2f} GB in {:.1f} s\n", a.out, o.shape, a.dtype, bytes / 1e9, s);
  }
  return 0;
}

}  // namespace

void register_synth(CLI::App& app, std::function<int()>& run) {
  auto a = std::make_shared<SynthArgs>();
  auto* cmd = app.add_subcommand("synth", "write a checkpoint of a real model's shape with random weights (speed work)");
  cmd->add_option("--arch", a->o.arch, "architecture")->capture_default_str();
  cmd->add_option("--shape", a->o.shape, "model shape: llama-2-7b, llama-3.2-1b, tinyllama-1.1b, tiny");
  cmd->add_option("-o,--out", a->out, "output checkpoint folder");
  cmd->add_option("--dtype", a->dtype, "weight dtype: bf16, f16, f32")->capture_default_str();
  cmd->add_option("--seed", a->o.seed, "random seed")->capture_default_str();
  cmd->add_flag("--force", a->o.force, "replace an existing output folder");
  cmd->add_flag("--list", a->list, "list the shapes");
  cmd->add_flag("--json", a->json, "print one JSON object on stdout");
  cmd->callback([a, &run] { run = [a] { return synth(*a); }; });
}

}  // namespace lowbit::cli
