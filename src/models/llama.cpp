#include "lowbit/models/llama.h"

#include "lowbit/models/attention.h"
#include "llama_internal.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numbers>

#include "lowbit/core/error.h"
#include "lowbit/core/numerics.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/kernels/activation.h"
#include "lowbit/kernels/gemm.h"

namespace lowbit {

namespace {

// RoPE frequencies as transformers computes them (float32): inv_freq[i] = 1 / theta^(2i / head_dim),
// then adjusted for linear or llama3 scaling (transformers' modeling_rope_utils.py).
std::vector<float> rope_inv_freq(const ModelConfig& c) {
  const int half = c.head_dim / 2;
  std::vector<float> inv(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i) {
    float exponent = float(2 * i) / float(c.head_dim);
    inv[size_t(i)] = 1.0f / std::pow(float(c.rope_theta), exponent);
  }
  if (c.rope_type == RopeType::Linear) {
    for (auto& f : inv) f = float(f / c.rope_factor);
  } else if (c.rope_type == RopeType::Llama3) {
    const double low_wavelen = c.rope_original_max_positions / c.rope_low_freq_factor;
    const double high_wavelen = c.rope_original_max_positions / c.rope_high_freq_factor;
    for (auto& f : inv) {
      double wavelen = 2 * std::numbers::pi / f;
      if (wavelen > low_wavelen) {
        f = float(f / c.rope_factor);
      } else if (wavelen >= high_wavelen) {
        double smooth = (c.rope_original_max_positions / wavelen - c.rope_low_freq_factor) /
                        (c.rope_high_freq_factor - c.rope_low_freq_factor);
        f = float((1 - smooth) * f / c.rope_factor + smooth * f);
      }
    }
  }
  return inv;
}

}  // namespace

void LlamaModel::load_linears(Layer& L, int l, const WeightStore& store) const {
  const int64_t hidden = cfg_.hidden_size, hd = cfg_.head_dim, nh = cfg_.num_heads, nkv = cfg_.num_kv_heads;
  const int64_t inter = cfg_.intermediate_size;
  const std::string p = fmt::format("model.layers.{}.", l);
  L.wqkv = store.load_linear(p + "self_attn.q_proj.weight", {nh * hd, hidden});
  L.wqkv.append_rows(store.load_linear(p + "self_attn.k_proj.weight", {nkv * hd, hidden}));
  L.wqkv.append_rows(store.load_linear(p + "self_attn.v_proj.weight", {nkv * hd, hidden}));
  L.wo = store.load_linear(p + "self_attn.o_proj.weight", {hidden, nh * hd});
  L.w_gate_up = store.load_linear(p + "mlp.gate_proj.weight", {inter, hidden});
  L.w_gate_up.append_rows(store.load_linear(p + "mlp.up_proj.weight", {inter, hidden}));
  L.w_down = store.load_linear(p + "mlp.down_proj.weight", {hidden, inter});
}

LlamaModel::Layer& LlamaModel::layer(int l) const {
  if (l < 0 || l >= cfg_.num_layers) fail("layer {} is outside 0..{}", l, cfg_.num_layers - 1);
  Layer& L = layers_[size_t(l)];
  lazy_.use(l, "model.layers.", [&](const WeightStore& store) {
    load_linears(L, l, store);
    std::vector<std::string> tensors;
    for (const char* t : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                          "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"})
      tensors.push_back(fmt::format("model.layers.{}.{}.weight", l, t));
    return tensors;
  });
  return L;
}

void LlamaModel::release_layer(int l) {
  if (!lazy_.release(l)) return;
  Layer& L = layers_[size_t(l)];
  L.wqkv = {};
  L.wo = {};
  L.w_gate_up = {};
  L.w_down = {};
}

LlamaModel::LlamaModel(ModelConfig config, const WeightStore& store, bool lazy_layers) : cfg_(std::move(config)) {
  const int64_t hidden = cfg_.hidden_size, hd = cfg_.head_dim, nh = cfg_.num_heads, nkv = cfg_.num_kv_heads;
  const int64_t vocab = cfg_.vocab_size;
  embed_ = store.load_linear("model.embed_tokens.weight", {vocab, hidden});
  if (store.has("lm_head.weight")) {
    if (!cfg_.tie_word_embeddings) lm_head_ = store.load_linear("lm_head.weight", {vocab, hidden});
  } else if (!cfg_.tie_word_embeddings) {
    fail("{}: missing tensor 'lm_head.weight' (config.json says tie_word_embeddings is false)", store.dir().string());
  }
  final_norm_ = store.load_f32("model.norm.weight", {hidden});
  inv_freq_ = rope_inv_freq(cfg_);

  auto append = [](std::vector<float>& dst, const std::vector<float>& src) { dst.insert(dst.end(), src.begin(), src.end()); };
  layers_.resize(size_t(cfg_.num_layers));
  split_ = lazy_layers ? 0 : split_parts();
  for (int l = 0; l < cfg_.num_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    Layer& L = layers_[size_t(l)];
    L.attn_norm = store.load_f32(p + "input_layernorm.weight", {hidden});
    L.ffn_norm = store.load_f32(p + "post_attention_layernorm.weight", {hidden});
    if (cfg_.attention_bias) {
      L.bqkv = store.load_f32(p + "self_attn.q_proj.bias", {nh * hd});
      append(L.bqkv, store.load_f32(p + "self_attn.k_proj.bias", {nkv * hd}));
      append(L.bqkv, store.load_f32(p + "self_attn.v_proj.bias", {nkv * hd}));
    }
    if (cfg_.mlp_bias) fail("{}: mlp_bias = true is not supported yet", cfg_.path.string());
    if (!lazy_layers) load_linears(L, l, store);
    if (split_ && !split_layer(L)) split_ = 0;  // (layers split already still run the row-split way)
  }
  if (split_) arrange_split();
  lazy_ = LazyLayers(cfg_.num_layers, store, lazy_layers);
}

uint64_t LlamaModel::weight_bytes() const {
  uint64_t n = final_norm_.size();
  for (const auto& L : layers_)
    n += L.attn_norm.size() + L.ffn_norm.size() + L.bqkv.size();
  n *= sizeof(float);
  n += embed_.bytes() + lm_head_.bytes();
  for (const auto& L : layers_) n += L.wqkv.bytes() + L.wo.bytes() + L.w_gate_up.bytes() + L.w_down.bytes();
  return n;
}

uint64_t LlamaModel::decode_weight_bytes() const {
  // The embedding table is read one row per token, unless it is also the output head.
  return weight_bytes() - (lm_head_.rows > 0 ? embed_.bytes() : 0);
}

std::unique_ptr<Session> LlamaModel::new_session(int max_tokens, KVCacheType kv) const {
  if (max_tokens <= 0 || max_tokens > cfg_.max_positions)
    fail("a session of {} tokens is outside this model's 1..{} positions (max_position_embeddings)", max_tokens,
         cfg_.max_positions);
  return std::make_unique<KVSession>(cfg_.num_layers, max_tokens, cfg_.num_kv_heads, cfg_.head_dim, kv);
}

struct LlamaModel::RunScratch {
  int n;
  KVSession kv;
  Work work;
};

// Layer l's weights applied to x [n][hidden] in place; keys and values go to layer `cache_layer` of s.
void LlamaModel::layer_forward(int l, int cache_layer, float* x, int n, int pos0, KVSession& s, Work& w,
                               const LinearObserver* obs) const {
  const int hidden = cfg_.hidden_size, hd = cfg_.head_dim, nh = cfg_.num_heads, nkv = cfg_.num_kv_heads;
  const int inter = cfg_.intermediate_size, half = hd / 2;
  const int qkv_dim = (nh + 2 * nkv) * hd, kv_dim = nkv * hd;
  ThreadPool& pool = default_thread_pool();
  const Layer& L = layer(l);
  const std::string p = fmt::format("model.layers.{}.", l);
  auto norm_rows = [&](const std::vector<float>& weight) {
    pool.parallel_for(size_t(n), [&](size_t b, size_t e, int) {
      for (size_t i = b; i < e; ++i)
        rms_norm(x + i * size_t(hidden), weight.data(), &w.xn[i * size_t(hidden)], hidden, cfg_.rms_eps);
    });
  };

  norm_rows(L.attn_norm);
  if (obs && !(*obs)({p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight"}, w.xn.data(), n, hidden)) return;
  linear_forward(L.wqkv, w.xn.data(), size_t(n), w.qkv.data());
  pool.parallel_for(size_t(n), [&](size_t b, size_t e, int) {
    for (size_t i = b; i < e; ++i) {
      float* row = &w.qkv[i * size_t(qkv_dim)];
      if (!L.bqkv.empty())
        for (int d = 0; d < qkv_dim; ++d) row[d] += L.bqkv[size_t(d)];
      const float* c = &w.cos_t[i * size_t(half)];
      const float* sn = &w.sin_t[i * size_t(half)];
      for (int h = 0; h < nh + nkv; ++h) apply_rope(row + h * hd, c, sn, half);  // q heads then k heads
      s.store(cache_layer, pos0 + int(i), row + nh * hd, row + nh * hd + kv_dim);
    }
  });
  causal_attention(w.qkv.data(), size_t(qkv_dim), s, cache_layer, n, pos0,
                   {cfg_.num_heads, cfg_.num_kv_heads, cfg_.head_dim, cfg_.sliding_window}, w.att.data(), size_t(nh * hd));
  if (obs && !(*obs)({p + "self_attn.o_proj.weight"}, w.att.data(), n, nh * hd)) return;
  linear_forward(L.wo, w.att.data(), size_t(n), x, /*accumulate=*/true);

  norm_rows(L.ffn_norm);
  if (obs && !(*obs)({p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"}, w.xn.data(), n, hidden)) return;
  linear_forward(L.w_gate_up, w.xn.data(), size_t(n), w.gu.data());
  // SiLU(gate) · up (kernels/activation.h), rows over the threads; a decode step's single row on
  // this thread (split in two, waking the pool cost more than the ~1.5 µs of AVX-512 work).
  const SiluMulFn silu_mul = silu_mul_best();
  pool.parallel_for(size_t(n), [&](size_t b, size_t e, int) {
    for (size_t i = b; i < e; ++i) {
      const float* g = &w.gu[i * size_t(2 * inter)];
      silu_mul(g, g + inter, &w.act[i * size_t(inter)], size_t(inter));
    }
  });
  if (obs && !(*obs)({p + "mlp.down_proj.weight"}, w.act.data(), n, inter)) return;
  linear_forward(L.w_down, w.act.data(), size_t(n), x, /*accumulate=*/true);
}

void LlamaModel::embed(std::span<const int32_t> tokens, float* x) const {
  const int hidden = cfg_.hidden_size, vocab = cfg_.vocab_size;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab)
      fail("token id {} at position {} is outside the vocabulary (0..{})", tokens[i], i, vocab - 1);
    embed_.row_f32(tokens[i], x + i * size_t(hidden));
  }
}

void LlamaModel::run_layer(int layer, float* x, int n, const LinearObserver* observer) const {
  if (layer < 0 || layer >= cfg_.num_layers) fail("layer {} is outside 0..{}", layer, cfg_.num_layers - 1);
  if (!run_scratch_ || run_scratch_->n != n) {
    run_scratch_.reset();  // the old buffers go before the new ones are made
    run_scratch_ = std::make_shared<RunScratch>(RunScratch{n, KVSession(1, n, cfg_.num_kv_heads, cfg_.head_dim, KVCacheType::f32), Work(cfg_, inv_freq_, n, 0)});
  }
  // The layer writes every key and value it reads (positions 0..n-1), so nothing needs clearing.
  layer_forward(layer, /*cache_layer=*/0, x, n, 0, run_scratch_->kv, run_scratch_->work, observer);
  check_finite_activations(x, n, cfg_.hidden_size, 0, "model.layers.", layer);
}

LlamaModel::Slot LlamaModel::slot(const std::string& name) const {
  const int64_t hidden = cfg_.hidden_size, hd = cfg_.head_dim, nh = cfg_.num_heads, nkv = cfg_.num_kv_heads;
  const int64_t inter = cfg_.intermediate_size;
  int l = -1;
  char proj[32] = {0};
  if (std::sscanf(name.c_str(), "model.layers.%d.%31s", &l, proj) != 2 || l < 0 || l >= cfg_.num_layers)
    fail("'{}' is not a linear weight of a layer", name);
  Layer& L = layer(l);
  if (L.wqkv.is_int8() || L.wqkv.is_packed())
    fail("'{}': layer-by-layer access needs float32 weights (load_causal_lm_layerwise)", name);
  const std::pair<const char*, Slot> slots[] = {
      {"self_attn.q_proj.weight", {&L.wqkv.f32, 0, nh * hd, hidden}},
      {"self_attn.k_proj.weight", {&L.wqkv.f32, nh * hd, nkv * hd, hidden}},
      {"self_attn.v_proj.weight", {&L.wqkv.f32, (nh + nkv) * hd, nkv * hd, hidden}},
      {"self_attn.o_proj.weight", {&L.wo.f32, 0, hidden, nh * hd}},
      {"mlp.gate_proj.weight", {&L.w_gate_up.f32, 0, inter, hidden}},
      {"mlp.up_proj.weight", {&L.w_gate_up.f32, inter, inter, hidden}},
      {"mlp.down_proj.weight", {&L.w_down.f32, 0, hidden, inter}},
  };
  for (const auto& [suffix, s] : slots)
    if (std::string(proj) == suffix) return s;
  fail("'{}' is not a linear weight of a layer", name);
}

namespace {
// "model.layers.N.<suffix>" -> N, or -1 when `name` is not of that form with this suffix.
int layer_of(const std::string& name, std::string_view suffix) {
  int l = -1;
  char rest[64] = {0};
  if (std::sscanf(name.c_str(), "model.layers.%d.%63s", &l, rest) != 2 || rest != suffix) return -1;
  return l;
}
}  // namespace

std::optional<CausalLM::InputProducer> LlamaModel::input_producer(const std::string& name) const {
  int l = -1;
  if (std::sscanf(name.c_str(), "model.layers.%d.", &l) != 1 || l < 0 || l >= cfg_.num_layers) return std::nullopt;
  const std::string p = fmt::format("model.layers.{}.", l), suffix = name.substr(std::min(name.size(), p.size()));
  if (suffix == "self_attn.q_proj.weight" || suffix == "self_attn.k_proj.weight" || suffix == "self_attn.v_proj.weight")
    return InputProducer::norm(p + "input_layernorm.weight");
  if (suffix == "mlp.gate_proj.weight" || suffix == "mlp.up_proj.weight")
    return InputProducer::norm(p + "post_attention_layernorm.weight");
  if (suffix == "mlp.down_proj.weight") return InputProducer::linear_rows(p + "mlp.up_proj.weight");
  if (suffix == "self_attn.o_proj.weight" && layers_[size_t(l)].bqkv.empty()) {  // (a value bias would need it too)
    // o_proj reads the value heads, each repeated for the query heads of its group (GQA).
    const int hd = cfg_.head_dim, rep = cfg_.num_heads / cfg_.num_kv_heads;
    std::vector<int> tie(size_t(cfg_.num_heads * hd));
    for (int h = 0; h < cfg_.num_heads; ++h)
      for (int d = 0; d < hd; ++d) tie[size_t(h * hd + d)] = (h / rep) * hd + d;
    return InputProducer::linear_rows(p + "self_attn.v_proj.weight", {}, 0, 0, std::move(tie));
  }
  return std::nullopt;
}

std::vector<float> LlamaModel::weight(const std::string& name) const {
  if (int l = layer_of(name, "input_layernorm.weight"); l >= 0 && l < cfg_.num_layers) return layers_[size_t(l)].attn_norm;
  if (int l = layer_of(name, "post_attention_layernorm.weight"); l >= 0 && l < cfg_.num_layers) return layers_[size_t(l)].ffn_norm;
  const Slot s = slot(name);
  auto first = s.matrix->begin() + s.row0 * s.cols;
  return std::vector<float>(first, first + s.rows * s.cols);
}

void LlamaModel::replace_weight(const std::string& name, const std::vector<float>& w) {
  for (auto [suffix, member] : {std::pair{"input_layernorm.weight", &Layer::attn_norm},
                                std::pair{"post_attention_layernorm.weight", &Layer::ffn_norm}})
    if (int l = layer_of(name, suffix); l >= 0 && l < cfg_.num_layers) {
      std::vector<float>& v = layers_[size_t(l)].*member;
      if (w.size() != v.size()) fail("replace_weight: '{}' needs {} values, got {}", name, v.size(), w.size());
      v = w;
      return;
    }
  const Slot s = slot(name);
  if (int64_t(w.size()) != s.rows * s.cols)
    fail("replace_weight: '{}' needs {} x {} values, got {}", name, s.rows, s.cols, w.size());
  std::copy(w.begin(), w.end(), s.matrix->begin() + s.row0 * s.cols);
}

void LlamaModel::forward(Session& session, std::span<const int32_t> tokens, float* logits, bool all_rows) const {
  auto& s = dynamic_cast<KVSession&>(session);
  const int n = int(tokens.size());
  if (n == 0) return;
  const int pos0 = s.start(n);
  const int hidden = cfg_.hidden_size, vocab = cfg_.vocab_size;
  std::vector<float> x(size_t(n) * size_t(hidden));
  for (int i = 0; i < n; ++i)
    if (tokens[size_t(i)] < 0 || tokens[size_t(i)] >= vocab)
      fail("token id {} at position {} is outside the vocabulary (0..{})", tokens[size_t(i)], pos0 + i, vocab - 1);
  embed(tokens, x.data());
  const bool split = n == 1 && split_ > 1;
  Work w(cfg_, inv_freq_, n, pos0, /*buffers=*/!split);
  if (split) {
    if (decode_split(x.data(), pos0, s, w, logits)) {
      s.advance(n);
      return;
    }
  } else {
    for (int l = 0; l < cfg_.num_layers; ++l) {
      layer_forward(l, l, x.data(), n, pos0, s, w, nullptr);
      s.check_range("model.layers.");
      check_finite_activations(x.data(), n, hidden, pos0, "model.layers.", l);
    }
  }
  s.advance(n);

  ThreadPool& pool = default_thread_pool();
  pool.parallel_for(size_t(n), [&](size_t b, size_t e, int) {
    for (size_t i = b; i < e; ++i)
      rms_norm(&x[i * size_t(hidden)], final_norm_.data(), &w.xn[i * size_t(hidden)], hidden, cfg_.rms_eps);
  });
  const LinearWeights& head = lm_head_.rows == 0 ? embed_ : lm_head_;
  const size_t first = all_rows ? 0 : size_t(n - 1);
  linear_forward(head, w.xn.data() + first * size_t(hidden), size_t(n) - first, logits);
}

}  // namespace lowbit
