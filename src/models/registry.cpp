// Maps config.json's architecture to the model class that runs it.
#include "lowbit/core/error.h"
#include "lowbit/io/encoder_config.h"
#include "lowbit/models/gpt.h"
#include "lowbit/models/llama.h"

namespace lowbit {

void CausalLM::embed(std::span<const int32_t>, float*) const {
  fail("{}: layer-by-layer access is not available for this architecture", config().architecture);
}
void CausalLM::run_layer(int, float*, int, const LinearObserver*) const {
  fail("{}: layer-by-layer access is not available for this architecture", config().architecture);
}
std::vector<float> CausalLM::weight(const std::string&) const {
  fail("{}: layer-by-layer access is not available for this architecture", config().architecture);
}
void CausalLM::replace_weight(const std::string&, const std::vector<float>&) {
  fail("{}: layer-by-layer access is not available for this architecture", config().architecture);
}
std::optional<CausalLM::InputProducer> CausalLM::input_producer(const std::string&) const { return std::nullopt; }

std::unique_ptr<CausalLM> load_causal_lm_layerwise(const std::filesystem::path& dir) {
  ModelConfig cfg = load_config(dir);
  WeightStore weights(dir);  // embeddings used where mapped; layers as float32 when first used
  if (cfg.family == ModelFamily::GPT2 || cfg.family == ModelFamily::OPT)
    return std::make_unique<GptModel>(std::move(cfg), weights, /*lazy_layers=*/true);
  return std::make_unique<LlamaModel>(std::move(cfg), weights, /*lazy_layers=*/true);
}

std::unique_ptr<CausalLM> load_causal_lm(const std::filesystem::path& dir, bool packed) {
  if (is_encoder_architecture(read_architecture(dir)))
    fail("{}: {} is an encoder classifier, not a language model: use `lowbit classify` or `lowbit eval --tsv`",
         dir.string(), read_architecture(dir));
  ModelConfig cfg = load_config(dir);
  WeightStore weights(dir);
  weights.set_packed(packed);
  switch (cfg.family) {
    case ModelFamily::GPT2:
    case ModelFamily::OPT: return std::make_unique<GptModel>(std::move(cfg), weights);
    case ModelFamily::Llama: break;
  }
  return std::make_unique<LlamaModel>(std::move(cfg), weights);
}

}  // namespace lowbit
