// Maps config.json's architecture to the model class that runs it.
#include "lowbit/core/error.h"
#include "lowbit/models/llama.h"

namespace lowbit {

std::unique_ptr<CausalLM> load_causal_lm(const std::filesystem::path& dir) {
  ModelConfig cfg = load_config(dir);
  WeightStore weights(dir);
  // Every supported architecture so far is a LLaMA-family decoder (see supported_architectures()).
  return std::make_unique<LlamaModel>(std::move(cfg), weights);
}

}  // namespace lowbit
