#include "lowbit/models/gpt.h"

#include <cmath>
#include <numbers>

#include "lowbit/core/error.h"
#include "lowbit/core/numerics.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/kernels/gemm.h"
#include "lowbit/models/attention.h"

namespace lowbit {

namespace {

void append(std::vector<float>& dst, const std::vector<float>& src) { dst.insert(dst.end(), src.begin(), src.end()); }

void add_bias(float* y, const float* b, int n, int dim) {
  for (int i = 0; i < n; ++i)
    for (int d = 0; d < dim; ++d) y[size_t(i) * size_t(dim) + size_t(d)] += b[d];
}

float activate(float x, const std::string& act) {
  if (act == "relu") return x > 0 ? x : 0;
  if (act == "gelu") return 0.5f * x * (1.0f + std::erf(x / std::numbers::sqrt2_v<float>));
  // gelu_new / gelu_pytorch_tanh: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
  const float k = std::sqrt(2.0f / std::numbers::pi_v<float>);
  return 0.5f * x * (1.0f + std::tanh(k * (x + 0.044715f * x * x * x)));
}

}  // namespace

GptModel::GptModel(ModelConfig config, const WeightStore& w) : cfg_(std::move(config)) {
  const int64_t h = cfg_.hidden_size, inner = cfg_.intermediate_size, vocab = cfg_.vocab_size;
  const int64_t npos = cfg_.max_positions + cfg_.position_offset;
  layers_.resize(size_t(cfg_.num_layers));
  if (cfg_.family == ModelFamily::GPT2) {
    // Hub checkpoints come with and without the "transformer." prefix.
    const std::string p = w.has("transformer.wte.weight") ? "transformer." : "";
    layer_prefix_ = p + "h.";
    embed_dim_ = int(h);
    embed_ = w.load_f32(p + "wte.weight", {vocab, h});
    positions_ = w.load_f32(p + "wpe.weight", {npos, h});
    final_norm_ = {w.load_f32(p + "ln_f.weight", {h}), w.load_f32(p + "ln_f.bias", {h})};
    for (int l = 0; l < cfg_.num_layers; ++l) {
      const std::string q = fmt::format("{}h.{}.", p, l);
      Layer& L = layers_[size_t(l)];
      L.ln_attn = {w.load_f32(q + "ln_1.weight", {h}), w.load_f32(q + "ln_1.bias", {h})};
      L.ln_mlp = {w.load_f32(q + "ln_2.weight", {h}), w.load_f32(q + "ln_2.bias", {h})};
      // Conv1D weights are stored [in, out]; load_linear gives them [out, in].
      L.wqkv = w.load_linear(q + "attn.c_attn.weight", {3 * h, h}, /*stored_in_out=*/true);
      L.bqkv = w.load_f32(q + "attn.c_attn.bias", {3 * h});
      L.wo = w.load_linear(q + "attn.c_proj.weight", {h, h}, true);
      L.bo = w.load_f32(q + "attn.c_proj.bias", {h});
      L.w1 = w.load_linear(q + "mlp.c_fc.weight", {inner, h}, true);
      L.b1 = w.load_f32(q + "mlp.c_fc.bias", {inner});
      L.w2 = w.load_linear(q + "mlp.c_proj.weight", {h, inner}, true);
      L.b2 = w.load_f32(q + "mlp.c_proj.bias", {h});
    }
  } else {  // OPT
    const std::string p = w.has("model.decoder.embed_tokens.weight") ? "model.decoder." : "decoder.";
    layer_prefix_ = p + "layers.";
    embed_dim_ = cfg_.word_embed_proj_dim;
    const int64_t e = embed_dim_;
    embed_ = w.load_f32(p + "embed_tokens.weight", {vocab, e});
    positions_ = w.load_f32(p + "embed_positions.weight", {npos, h});
    if (e != h) {
      project_in_ = w.load_f32(p + "project_in.weight", {h, e});
      project_out_ = w.load_f32(p + "project_out.weight", {e, h});
    }
    if (cfg_.final_norm) final_norm_ = {w.load_f32(p + "final_layer_norm.weight", {h}), w.load_f32(p + "final_layer_norm.bias", {h})};
    for (int l = 0; l < cfg_.num_layers; ++l) {
      const std::string q = fmt::format("{}layers.{}.", p, l);
      Layer& L = layers_[size_t(l)];
      L.ln_attn = {w.load_f32(q + "self_attn_layer_norm.weight", {h}), w.load_f32(q + "self_attn_layer_norm.bias", {h})};
      L.ln_mlp = {w.load_f32(q + "final_layer_norm.weight", {h}), w.load_f32(q + "final_layer_norm.bias", {h})};
      for (const char* m : {"q_proj", "k_proj", "v_proj"}) {
        L.wqkv.append_rows(w.load_linear(q + "self_attn." + m + ".weight", {h, h}));
        append(L.bqkv, w.load_f32(q + "self_attn." + m + ".bias", {h}));
      }
      L.wo = w.load_linear(q + "self_attn.out_proj.weight", {h, h});
      L.bo = w.load_f32(q + "self_attn.out_proj.bias", {h});
      L.w1 = w.load_linear(q + "fc1.weight", {inner, h});
      L.b1 = w.load_f32(q + "fc1.bias", {inner});
      L.w2 = w.load_linear(q + "fc2.weight", {h, inner});
      L.b2 = w.load_f32(q + "fc2.bias", {h});
    }
  }
  if (w.has("lm_head.weight") && !cfg_.tie_word_embeddings) {
    lm_head_ = w.load_f32("lm_head.weight", {vocab, embed_dim_});
  } else if (!cfg_.tie_word_embeddings) {
    fail("{}: missing tensor 'lm_head.weight' (config.json says tie_word_embeddings is false)", w.dir().string());
  }
}

uint64_t GptModel::weight_bytes() const {
  uint64_t n = embed_.size() + positions_.size() + project_in_.size() + project_out_.size() + lm_head_.size() +
               final_norm_.weight.size() * 2;
  for (const auto& L : layers_) n += 4 * L.ln_attn.weight.size() + L.bqkv.size() + L.bo.size() + L.b1.size() + L.b2.size();
  n *= sizeof(float);
  for (const auto& L : layers_) n += L.wqkv.bytes() + L.wo.bytes() + L.w1.bytes() + L.w2.bytes();
  return n;
}

std::unique_ptr<Session> GptModel::new_session(int max_tokens) const {
  if (max_tokens <= 0 || max_tokens > cfg_.max_positions)
    fail("a session of {} tokens is outside this model's 1..{} positions (max_position_embeddings / n_positions)",
         max_tokens, cfg_.max_positions);
  return std::make_unique<KVSession>(cfg_.num_layers, max_tokens, cfg_.hidden_size);
}

// LayerNorm over rows of `hidden`: (x - mean) / sqrt(var + eps) * weight + bias.
void GptModel::layer_norm(const Norm& norm, const float* x, float* out, int n) const {
  const int h = cfg_.hidden_size;
  default_thread_pool().parallel_for(size_t(n), [&](size_t b, size_t e, int) {
    for (size_t i = b; i < e; ++i) {
      const float* xi = x + i * size_t(h);
      float* oi = out + i * size_t(h);
      double mean = 0, var = 0;
      for (int d = 0; d < h; ++d) mean += xi[d];
      mean /= h;
      for (int d = 0; d < h; ++d) var += (xi[d] - mean) * (xi[d] - mean);
      const float inv = float(1.0 / std::sqrt(var / h + double(cfg_.norm_eps)));
      for (int d = 0; d < h; ++d) oi[d] = float(xi[d] - mean) * inv * norm.weight[size_t(d)] + norm.bias[size_t(d)];
    }
  });
}

void GptModel::forward(Session& session, std::span<const int32_t> tokens, float* logits, bool all_rows) const {
  auto& s = dynamic_cast<KVSession&>(session);
  const int n = int(tokens.size());
  if (n == 0) return;
  const int pos0 = s.start(n);
  const int h = cfg_.hidden_size, inner = cfg_.intermediate_size, vocab = cfg_.vocab_size, e = embed_dim_;
  std::vector<float> x(size_t(n) * size_t(h)), xn(x.size()), qkv(size_t(n) * size_t(3 * h)), att(x.size());
  std::vector<float> mid(size_t(n) * size_t(inner)), tmp(x.size());

  // Token (through project_in when narrower) plus learned position embeddings.
  std::vector<float> emb(size_t(n) * size_t(e));
  for (int i = 0; i < n; ++i) {
    const int32_t t = tokens[size_t(i)];
    if (t < 0 || t >= vocab) fail("token id {} at position {} is outside the vocabulary (0..{})", t, pos0 + i, vocab - 1);
    std::copy_n(embed_.data() + size_t(t) * size_t(e), e, emb.data() + size_t(i) * size_t(e));
  }
  if (!project_in_.empty())
    gemm_f32_nt(emb.data(), project_in_.data(), x.data(), size_t(n), size_t(h), size_t(e));
  else
    x = emb;
  for (int i = 0; i < n; ++i) {
    const float* p = positions_.data() + size_t(pos0 + i + cfg_.position_offset) * size_t(h);
    for (int d = 0; d < h; ++d) x[size_t(i) * size_t(h) + size_t(d)] += p[d];
  }

  const bool pre = cfg_.norm_before;
  for (int l = 0; l < cfg_.num_layers; ++l) {
    const Layer& L = layers_[size_t(l)];
    // Attention block.
    const float* in = x.data();
    if (pre) {
      layer_norm(L.ln_attn, x.data(), xn.data(), n);
      in = xn.data();
    }
    linear_forward(L.wqkv, in, size_t(n), qkv.data());
    add_bias(qkv.data(), L.bqkv.data(), n, 3 * h);
    for (int i = 0; i < n; ++i) {
      std::copy_n(&qkv[size_t(i) * size_t(3 * h) + size_t(h)], h, s.k_at(l, pos0 + i));
      std::copy_n(&qkv[size_t(i) * size_t(3 * h) + size_t(2 * h)], h, s.v_at(l, pos0 + i));
    }
    causal_attention(qkv.data(), size_t(3 * h), s, l, n, pos0, {cfg_.num_heads, cfg_.num_heads, cfg_.head_dim, 0},
                     att.data(), size_t(h));
    linear_forward(L.wo, att.data(), size_t(n), x.data(), /*accumulate=*/true);
    add_bias(x.data(), L.bo.data(), n, h);
    if (!pre) {
      layer_norm(L.ln_attn, x.data(), tmp.data(), n);
      x.swap(tmp);
    }
    // MLP block.
    in = x.data();
    if (pre) {
      layer_norm(L.ln_mlp, x.data(), xn.data(), n);
      in = xn.data();
    }
    linear_forward(L.w1, in, size_t(n), mid.data());
    default_thread_pool().parallel_for(size_t(n), [&](size_t b, size_t end, int) {
      for (size_t i = b; i < end; ++i)
        for (int d = 0; d < inner; ++d) {
          float& v = mid[i * size_t(inner) + size_t(d)];
          v = activate(v + L.b1[size_t(d)], cfg_.activation);
        }
    });
    linear_forward(L.w2, mid.data(), size_t(n), x.data(), /*accumulate=*/true);
    add_bias(x.data(), L.b2.data(), n, h);
    if (!pre) {
      layer_norm(L.ln_mlp, x.data(), tmp.data(), n);
      x.swap(tmp);
    }
    check_finite_activations(x.data(), n, h, pos0, layer_prefix_, l);
  }
  s.advance(n);

  const size_t first = all_rows ? 0 : size_t(n - 1), rows = size_t(n) - first;
  const float* out = x.data() + first * size_t(h);
  if (!final_norm_.weight.empty()) {
    layer_norm(final_norm_, x.data(), xn.data(), n);
    out = xn.data() + first * size_t(h);
  }
  if (!project_out_.empty()) {
    gemm_f32_nt(out, project_out_.data(), emb.data(), rows, size_t(e), size_t(h));
    out = emb.data();
  }
  const float* head = lm_head_.empty() ? embed_.data() : lm_head_.data();
  gemm_f32_nt(out, head, logits, rows, size_t(vocab), size_t(e));
}

}  // namespace lowbit
