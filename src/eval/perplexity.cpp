#include "lowbit/eval/perplexity.h"

#include <cmath>
#include <vector>

#include "lowbit/core/error.h"
#include "lowbit/core/progress.h"
#include "lowbit/models/generate.h"

namespace lowbit {

double log_softmax_at(const float* logits, int vocab, int target) {
  float mx = logits[0];
  for (int i = 1; i < vocab; ++i) mx = std::max(mx, logits[i]);
  double sum = 0;
  for (int i = 0; i < vocab; ++i) sum += std::exp(double(logits[i] - mx));
  return double(logits[target] - mx) - std::log(sum);
}

namespace {

// Row-wise log-softmax in double.
void log_softmax_row(const float* logits, int vocab, std::vector<double>& out) {
  out.resize(size_t(vocab));
  float mx = logits[0];
  for (int i = 1; i < vocab; ++i) mx = std::max(mx, logits[i]);
  double sum = 0;
  for (int i = 0; i < vocab; ++i) sum += std::exp(double(logits[i] - mx));
  const double lse = std::log(sum);
  for (int i = 0; i < vocab; ++i) out[size_t(i)] = double(logits[i] - mx) - lse;
}

struct Accumulator {
  double nll = 0, nll2 = 0, kld = 0, kld2 = 0;
  int64_t n = 0, top1 = 0;
};

}  // namespace

std::vector<PerplexityResult> perplexity_compare(std::span<const CausalLM* const> models, const CausalLM* reference,
                                                 std::span<const int32_t> text, const PerplexityOptions& opt) {
  if (models.empty()) fail("perplexity: no model given");
  const int ctx = opt.ctx, vocab = models[0]->vocab_size();
  if (ctx < 2) fail("perplexity: --ctx must be at least 2, got {}", ctx);
  for (const CausalLM* m : models) {
    if (ctx > m->config().max_positions)
      fail("perplexity: --ctx {} exceeds the model's max_position_embeddings {}", ctx, m->config().max_positions);
    if (m->vocab_size() != vocab) fail("perplexity: models with different vocabularies ({} vs {})", m->vocab_size(), vocab);
  }
  if (reference && reference->vocab_size() != vocab)
    fail("perplexity: the reference model's vocabulary ({}) differs from the model's ({})", reference->vocab_size(), vocab);
  const bool bos = opt.bos_id >= 0;
  const size_t step = size_t(bos ? ctx - 1 : ctx);
  int windows = int(text.size() / step);
  if (opt.max_windows > 0) windows = std::min(windows, opt.max_windows);
  if (windows == 0)
    fail("perplexity: the text has {} tokens, fewer than one window of {} (lower --ctx)", text.size(), step);
  // Logits row r predicts the token at position r + 1. Second half: tokens at positions >= ctx/2.
  const int first_scored = opt.score == PplScore::All ? 0 : ctx / 2 - 1;

  std::vector<Accumulator> acc(models.size());
  std::vector<std::unique_ptr<Session>> sessions;
  // float32 caches: the figures measure the weights' quantization alone, against float references.
  for (const CausalLM* m : models) sessions.push_back(m->new_session(ctx, KVCacheType::f32));
  auto ref_session = reference ? reference->new_session(ctx, KVCacheType::f32) : nullptr;
  std::vector<int32_t> window(static_cast<size_t>(ctx));
  std::vector<float> logits(size_t(ctx) * size_t(vocab)), ref_logits(reference ? logits.size() : 0);
  std::vector<double> lp, ref_lp;
  Progress progress("perplexity", size_t(windows), opt.progress);
  for (int w = 0; w < windows; ++w) {
    size_t k = 0;
    if (bos) window[k++] = opt.bos_id;
    std::copy_n(text.begin() + std::ptrdiff_t(size_t(w) * step), step, window.begin() + std::ptrdiff_t(k));
    if (reference) {
      ref_session->reset();
      reference->forward(*ref_session, window, ref_logits.data(), /*all_rows=*/true);
    }
    for (size_t m = 0; m < models.size(); ++m) {
      if (reference && models[m] == reference) {  // the reference among the models: its logits are at hand
        logits = ref_logits;
      } else {
        sessions[m]->reset();
        models[m]->forward(*sessions[m], window, logits.data(), /*all_rows=*/true);
      }
      if (opt.on_window && m == 0) opt.on_window(w, window, logits.data());
      Accumulator& a = acc[m];
      for (int row = first_scored; row < ctx - 1; ++row) {
        const float* lg = &logits[size_t(row) * size_t(vocab)];
        log_softmax_row(lg, vocab, lp);
        const double l = lp[size_t(window[size_t(row + 1)])];
        a.nll -= l;
        a.nll2 += l * l;
        ++a.n;
        if (!reference) continue;
        const float* rl = &ref_logits[size_t(row) * size_t(vocab)];
        log_softmax_row(rl, vocab, ref_lp);
        double kl = 0;
        for (int i = 0; i < vocab; ++i) kl += std::exp(ref_lp[size_t(i)]) * (ref_lp[size_t(i)] - lp[size_t(i)]);
        a.kld += kl;
        a.kld2 += kl * kl;
        if (argmax(lg, vocab) == argmax(rl, vocab)) ++a.top1;
      }
    }
    const Accumulator& a0 = acc[0];
    progress.update(size_t(w + 1), reference ? fmt::format("ppl {:.4f} kld {:.5f}", std::exp(a0.nll / double(a0.n)), a0.kld / double(a0.n))
                                             : fmt::format("ppl {:.4f}", std::exp(a0.nll / double(a0.n))));
  }
  std::vector<PerplexityResult> results;
  for (const Accumulator& a : acc) {
    PerplexityResult r;
    r.ctx = ctx;
    r.windows = windows;
    r.tokens_scored = a.n;
    const double n = double(a.n);
    r.mean_nll = a.nll / n;
    r.ppl = std::exp(r.mean_nll);
    double var = a.nll2 / n - r.mean_nll * r.mean_nll;
    r.ppl_stderr = var > 0 && n > 1 ? std::sqrt(var / (n - 1)) * r.ppl : 0;
    if (reference) {
      r.has_reference = true;
      r.kld = a.kld / n;
      double kvar = a.kld2 / n - r.kld * r.kld;
      r.kld_stderr = kvar > 0 && n > 1 ? std::sqrt(kvar / (n - 1)) : 0;
      r.top1 = double(a.top1) / n;
    }
    results.push_back(r);
  }
  return results;
}

PerplexityResult perplexity(const CausalLM& model, std::span<const int32_t> text, const PerplexityOptions& opt) {
  const CausalLM* one[] = {&model};
  return perplexity_compare(one, opt.reference, text, opt)[0];
}

}  // namespace lowbit
