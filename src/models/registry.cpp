// Maps config.json's architecture to the model class that runs it.
#include "lowbit/core/error.h"
#include "lowbit/models/gpt.h"
#include "lowbit/models/llama.h"

namespace lowbit {

std::unique_ptr<CausalLM> load_causal_lm(const std::filesystem::path& dir) {
  ModelConfig cfg = load_config(dir);
  WeightStore weights(dir);
  switch (cfg.family) {
    case ModelFamily::GPT2:
    case ModelFamily::OPT: return std::make_unique<GptModel>(std::move(cfg), weights);
    case ModelFamily::Llama: break;
  }
  return std::make_unique<LlamaModel>(std::move(cfg), weights);
}

}  // namespace lowbit
