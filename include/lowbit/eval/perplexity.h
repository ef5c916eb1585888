#pragma once
// Perplexity by the protocol of ../shared/README.md and docs/DESIGN.md: the text's tokens are cut into
// consecutive non-overlapping windows of ctx tokens (with a BOS token: BOS + ctx-1 text tokens); a
// trailing partial window is dropped; every token but the first of a window is scored ("all"), or only
// the tokens at positions >= ctx/2 of each window ("second-half", 256 of 512: the protocol behind
// ../shared's ppl_second_half goldens, checked against transformers: 59.938 vs 59.908 when scoring
// from logits row ctx/2 as llama.cpp's perplexity tool does).
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "lowbit/models/model.h"

namespace lowbit {

enum class PplScore { All, SecondHalf };

struct PerplexityOptions {
  int ctx = 512;
  PplScore score = PplScore::All;
  int bos_id = -1;       // >= 0: each window starts with this token
  int max_windows = 0;   // 0: every full window
  bool progress = true;  // a progress line on stderr
  const CausalLM* reference = nullptr;  // perplexity(): compare against this model (KLD, top-1)
  // Called with each window's logits [ctx][vocab] (e.g. to compare against a reference model).
  std::function<void(int window, std::span<const int32_t> tokens, const float* logits)> on_window;
};

struct PerplexityResult {
  double ppl = 0, ppl_stderr = 0, mean_nll = 0;
  int64_t tokens_scored = 0;
  int windows = 0;
  int ctx = 0;
  // Against a reference model on the same windows and scored positions (when one is given):
  // mean KL(reference || model) in nats per token, and how often both put the same token on top.
  bool has_reference = false;
  double kld = 0, kld_stderr = 0, top1 = 0;
};

PerplexityResult perplexity(const CausalLM& model, std::span<const int32_t> text_tokens, const PerplexityOptions& opt);

// Several models over the same windows in one pass; with a reference, the reference runs once per
// window and every result gets KLD and top-1 agreement against it.
std::vector<PerplexityResult> perplexity_compare(std::span<const CausalLM* const> models, const CausalLM* reference,
                                                 std::span<const int32_t> text_tokens, const PerplexityOptions& opt);

// log p(target) from one row of logits, computed stably (max-shifted log-sum-exp in double).
double log_softmax_at(const float* logits, int vocab, int target);

}  // namespace lowbit
