#include "lowbit/eval/perplexity.h"

#include <cmath>
#include <vector>

#include "lowbit/core/error.h"
#include "lowbit/core/progress.h"

namespace lowbit {

double log_softmax_at(const float* logits, int vocab, int target) {
  float mx = logits[0];
  for (int i = 1; i < vocab; ++i) mx = std::max(mx, logits[i]);
  double sum = 0;
  for (int i = 0; i < vocab; ++i) sum += std::exp(double(logits[i] - mx));
  return double(logits[target] - mx) - std::log(sum);
}

PerplexityResult perplexity(const CausalLM& model, std::span<const int32_t> text, const PerplexityOptions& opt) {
  const int ctx = opt.ctx, vocab = model.vocab_size();
  if (ctx < 2) fail("perplexity: --ctx must be at least 2, got {}", ctx);
  if (ctx > model.config().max_positions)
    fail("perplexity: --ctx {} exceeds the model's max_position_embeddings {}", ctx, model.config().max_positions);
  const bool bos = opt.bos_id >= 0;
  const size_t step = size_t(bos ? ctx - 1 : ctx);
  int windows = int(text.size() / step);
  if (opt.max_windows > 0) windows = std::min(windows, opt.max_windows);
  if (windows == 0)
    fail("perplexity: the text has {} tokens, fewer than one window of {} (lower --ctx)", text.size(), step);
  // Logits row r predicts the token at position r + 1. Second half: tokens at positions >= ctx/2.
  const int first_scored = opt.score == PplScore::All ? 0 : ctx / 2 - 1;

  PerplexityResult r;
  r.ctx = ctx;
  r.windows = windows;
  double nll = 0, nll2 = 0;
  auto session = model.new_session(ctx);
  std::vector<int32_t> window(static_cast<size_t>(ctx));
  std::vector<float> logits(size_t(ctx) * size_t(vocab));
  Progress progress("perplexity", size_t(windows), opt.progress);
  for (int w = 0; w < windows; ++w) {
    size_t k = 0;
    if (bos) window[k++] = opt.bos_id;
    std::copy_n(text.begin() + std::ptrdiff_t(size_t(w) * step), step, window.begin() + std::ptrdiff_t(k));
    session->reset();
    model.forward(*session, window, logits.data(), /*all_rows=*/true);
    if (opt.on_window) opt.on_window(w, window, logits.data());
    for (int row = first_scored; row < ctx - 1; ++row) {
      double lp = log_softmax_at(&logits[size_t(row) * size_t(vocab)], vocab, window[size_t(row + 1)]);
      nll -= lp;
      nll2 += lp * lp;
      ++r.tokens_scored;
    }
    progress.update(size_t(w + 1), fmt::format("ppl {:.4f}", std::exp(nll / double(r.tokens_scored))));
  }
  const double n = double(r.tokens_scored);
  r.mean_nll = nll / n;
  r.ppl = std::exp(r.mean_nll);
  double var = nll2 / n - r.mean_nll * r.mean_nll;
  r.ppl_stderr = var > 0 && n > 1 ? std::sqrt(var / (n - 1)) * r.ppl : 0;
  return r;
}

}  // namespace lowbit
