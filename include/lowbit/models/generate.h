#pragma once
// Text generation: next-token sampling (greedy, temperature, nucleus) and a generation loop.
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "lowbit/models/model.h"

namespace lowbit {

struct SamplingOptions {
  float temperature = 0.0f;  // 0: greedy (argmax)
  float top_p = 1.0f;        // nucleus: keep the smallest set of tokens whose probability reaches top_p
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(SamplingOptions opt) : opt_(opt), rng_(opt.seed) {}
  int32_t sample(const float* logits, int vocab);

 private:
  SamplingOptions opt_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> probs_;
};

int32_t argmax(const float* x, int n);

struct GenerationStats {
  int prompt_tokens = 0, generated = 0;
  double prefill_seconds = 0, decode_seconds = 0;
  double prefill_tok_s() const { return prefill_seconds > 0 ? prompt_tokens / prefill_seconds : 0; }
  double decode_tok_s() const { return decode_seconds > 0 ? generated / decode_seconds : 0; }
};

// Feeds `prompt`, then samples up to max_new tokens, calling on_token after each; stops early at any
// of stop_ids. Returns the generated ids. The session's KV cache holds `kv` elements.
std::vector<int32_t> generate(const CausalLM& model, const std::vector<int32_t>& prompt, int max_new,
                              const SamplingOptions& sampling, const std::vector<int32_t>& stop_ids,
                              const std::function<void(int32_t)>& on_token, GenerationStats* stats,
                              KVCacheType kv = KVCacheType::f16);

}  // namespace lowbit
