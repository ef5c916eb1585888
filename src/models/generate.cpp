#include "lowbit/models/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "lowbit/core/error.h"
#include "lowbit/kernels/activation.h"

namespace lowbit {

int32_t argmax(const float* x, int n) {
  static const ArgmaxFn fn = argmax_best();  // the first of equal maxima, as torch.argmax
  return int32_t(fn(x, n));
}

int32_t Sampler::sample(const float* logits, int vocab) {
  if (opt_.temperature <= 0.0f) return argmax(logits, vocab);
  const float mx = logits[argmax(logits, vocab)];
  probs_.resize(size_t(vocab));
  double sum = 0;
  for (int i = 0; i < vocab; ++i) {
    float p = std::exp((logits[i] - mx) / opt_.temperature);
    probs_[size_t(i)] = {p, i};
    sum += p;
  }
  size_t keep = probs_.size();
  if (opt_.top_p < 1.0f) {
    std::sort(probs_.begin(), probs_.end(), [](auto& a, auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
    double acc = 0;
    for (size_t i = 0; i < probs_.size(); ++i) {
      acc += probs_[i].first / sum;
      if (acc >= opt_.top_p) {
        keep = i + 1;
        break;
      }
    }
    sum = 0;
    for (size_t i = 0; i < keep; ++i) sum += probs_[i].first;
  }
  double r = std::uniform_real_distribution<double>(0.0, sum)(rng_);
  for (size_t i = 0; i < keep; ++i) {
    r -= probs_[i].first;
    if (r <= 0) return probs_[i].second;
  }
  return probs_[keep - 1].second;
}

std::vector<int32_t> generate(const CausalLM& model, const std::vector<int32_t>& prompt, int max_new,
                              const SamplingOptions& sampling, const std::vector<int32_t>& stop_ids,
                              const std::function<void(int32_t)>& on_token, GenerationStats* stats,
                              KVCacheType kv) {
  using clock = std::chrono::steady_clock;
  if (prompt.empty()) fail("generate: the prompt has no tokens");
  const int total = std::min(int(prompt.size()) + max_new, model.config().max_positions);
  if (int(prompt.size()) >= total && max_new > 0)
    fail("generate: the prompt's {} tokens fill the model's {} positions", prompt.size(), model.config().max_positions);
  auto session = model.new_session(total, kv);
  Sampler sampler(sampling);
  std::vector<float> logits(size_t(model.vocab_size()));
  auto t0 = clock::now();
  model.forward(*session, prompt, logits.data(), /*all_rows=*/false);
  auto t1 = clock::now();
  std::vector<int32_t> out;
  double decode_s = 0;
  while (int(out.size()) < max_new && session->position() < total) {
    int32_t next = sampler.sample(logits.data(), model.vocab_size());
    out.push_back(next);
    if (on_token) on_token(next);
    if (std::find(stop_ids.begin(), stop_ids.end(), next) != stop_ids.end()) break;
    if (int(out.size()) == max_new || session->position() >= total) break;
    auto a = clock::now();
    model.forward(*session, std::span<const int32_t>(&out.back(), 1), logits.data(), false);
    decode_s += std::chrono::duration<double>(clock::now() - a).count();
  }
  if (stats) {
    stats->prompt_tokens = int(prompt.size());
    stats->generated = int(out.size()) > 0 ? int(out.size()) - 1 : 0;  // tokens that cost a decode step
    stats->prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
    stats->decode_seconds = decode_s;
  }
  return out;
}

}  // namespace lowbit
