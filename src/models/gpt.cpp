#include "lowbit/models/gpt.h"

#include <cctype>
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

std::vector<std::string> GptModel::linear_names(int l) const {
  const std::string q = layer_name(l);
  if (cfg_.family == ModelFamily::GPT2)
    return {q + "attn.c_attn.weight", q + "attn.c_proj.weight", q + "mlp.c_fc.weight", q + "mlp.c_proj.weight"};
  return {q + "self_attn.q_proj.weight", q + "self_attn.k_proj.weight", q + "self_attn.v_proj.weight",
          q + "self_attn.out_proj.weight", q + "fc1.weight", q + "fc2.weight"};
}

void GptModel::load_linears(Layer& L, int l, const WeightStore& w) const {
  const int64_t h = cfg_.hidden_size, inner = cfg_.intermediate_size;
  const std::vector<std::string> n = linear_names(l);
  if (cfg_.family == ModelFamily::GPT2) {
    // Conv1D weights are stored [in, out]; load_linear gives them [out, in].
    L.wqkv = w.load_linear(n[0], {3 * h, h}, /*stored_in_out=*/true);
    L.wo = w.load_linear(n[1], {h, h}, true);
    L.w1 = w.load_linear(n[2], {inner, h}, true);
    L.w2 = w.load_linear(n[3], {h, inner}, true);
  } else {
    L.wqkv = w.load_linear(n[0], {h, h});
    L.wqkv.append_rows(w.load_linear(n[1], {h, h}));
    L.wqkv.append_rows(w.load_linear(n[2], {h, h}));
    L.wo = w.load_linear(n[3], {h, h});
    L.w1 = w.load_linear(n[4], {inner, h});
    L.w2 = w.load_linear(n[5], {h, inner});
  }
}

GptModel::Layer& GptModel::layer(int l) const {
  if (l < 0 || l >= cfg_.num_layers) fail("layer {} is outside 0..{}", l, cfg_.num_layers - 1);
  Layer& L = layers_[size_t(l)];
  lazy_.use(l, layer_prefix_.c_str(), [&](const WeightStore& store) {
    load_linears(L, l, store);
    return linear_names(l);
  });
  return L;
}

void GptModel::release_layer(int l) {
  if (!lazy_.release(l)) return;
  Layer& L = layers_[size_t(l)];
  L.wqkv = {};
  L.wo = {};
  L.w1 = {};
  L.w2 = {};
}

GptModel::GptModel(ModelConfig config, const WeightStore& w, bool lazy_layers) : cfg_(std::move(config)) {
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
      const std::string q = layer_name(l);
      Layer& L = layers_[size_t(l)];
      L.ln_attn = {w.load_f32(q + "ln_1.weight", {h}), w.load_f32(q + "ln_1.bias", {h})};
      L.ln_mlp = {w.load_f32(q + "ln_2.weight", {h}), w.load_f32(q + "ln_2.bias", {h})};
      L.bqkv = w.load_f32(q + "attn.c_attn.bias", {3 * h});
      L.bo = w.load_f32(q + "attn.c_proj.bias", {h});
      L.b1 = w.load_f32(q + "mlp.c_fc.bias", {inner});
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
      const std::string q = layer_name(l);
      Layer& L = layers_[size_t(l)];
      L.ln_attn = {w.load_f32(q + "self_attn_layer_norm.weight", {h}), w.load_f32(q + "self_attn_layer_norm.bias", {h})};
      L.ln_mlp = {w.load_f32(q + "final_layer_norm.weight", {h}), w.load_f32(q + "final_layer_norm.bias", {h})};
      for (const char* m : {"q_proj", "k_proj", "v_proj"}) append(L.bqkv, w.load_f32(q + "self_attn." + m + ".bias", {h}));
      L.bo = w.load_f32(q + "self_attn.out_proj.bias", {h});
      L.b1 = w.load_f32(q + "fc1.bias", {inner});
      L.b2 = w.load_f32(q + "fc2.bias", {h});
    }
  }
  for (int l = 0; l < cfg_.num_layers && !lazy_layers; ++l) load_linears(layers_[size_t(l)], l, w);
  lazy_ = LazyLayers(cfg_.num_layers, w, lazy_layers);
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

std::unique_ptr<Session> GptModel::new_session(int max_tokens, KVCacheType kv) const {
  if (max_tokens <= 0 || max_tokens > cfg_.max_positions)
    fail("a session of {} tokens is outside this model's 1..{} positions (max_position_embeddings / n_positions)",
         max_tokens, cfg_.max_positions);
  return std::make_unique<KVSession>(cfg_.num_layers, max_tokens, cfg_.num_heads, cfg_.head_dim, kv);
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

void GptModel::embed_at(std::span<const int32_t> tokens, int pos0, float* x) const {
  const int n = int(tokens.size()), h = cfg_.hidden_size, vocab = cfg_.vocab_size, e = embed_dim_;
  std::vector<float> emb(project_in_.empty() ? 0 : size_t(n) * size_t(e));
  float* rows = project_in_.empty() ? x : emb.data();
  for (int i = 0; i < n; ++i) {
    const int32_t t = tokens[size_t(i)];
    if (t < 0 || t >= vocab) fail("token id {} at position {} is outside the vocabulary (0..{})", t, pos0 + i, vocab - 1);
    std::copy_n(embed_.data() + size_t(t) * size_t(e), e, rows + size_t(i) * size_t(e));
  }
  if (!project_in_.empty()) gemm_f32_nt(emb.data(), project_in_.data(), x, size_t(n), size_t(h), size_t(e));
  for (int i = 0; i < n; ++i) {
    const float* p = positions_.data() + size_t(pos0 + i + cfg_.position_offset) * size_t(h);
    for (int d = 0; d < h; ++d) x[size_t(i) * size_t(h) + size_t(d)] += p[d];
  }
}

void GptModel::embed(std::span<const int32_t> tokens, float* x) const {
  if (int(tokens.size()) > cfg_.max_positions)
    fail("{} tokens exceed this model's {} positions", tokens.size(), cfg_.max_positions);
  embed_at(tokens, 0, x);
}

struct GptModel::Work {
  Work(const ModelConfig& c, int n)
      : xn(size_t(n) * size_t(c.hidden_size)), qkv(size_t(n) * size_t(3 * c.hidden_size)), att(xn.size()),
        mid(size_t(n) * size_t(c.intermediate_size)), tmp(xn.size()) {}
  std::vector<float> xn, qkv, att, mid, tmp;
};

struct GptModel::RunScratch {
  int n;
  KVSession kv;
  Work work;
};

// Layer l applied to x [n][hidden] in place; keys and values go to layer `cache_layer` of s.
void GptModel::layer_forward(int l, int cache_layer, float* x, int n, int pos0, KVSession& s, Work& w,
                             const LinearObserver* obs) const {
  const int h = cfg_.hidden_size, inner = cfg_.intermediate_size;
  const Layer& L = layer(l);
  const bool gpt2 = cfg_.family == ModelFamily::GPT2, pre = cfg_.norm_before;
  // The observer (calibration only) sees each input with the names of the weights that read it
  // (linear_names' indices).
  auto observe = [&](std::initializer_list<int> readers, const float* rows, int cols) {
    if (!obs) return true;
    const std::vector<std::string> all = linear_names(l);
    std::vector<std::string> names;
    for (int k : readers) names.push_back(all[size_t(k)]);
    return (*obs)(names, rows, n, cols);
  };
  const size_t hn = size_t(n) * size_t(h);
  // Attention block.
  const float* in = x;
  if (pre) {
    layer_norm(L.ln_attn, x, w.xn.data(), n);
    in = w.xn.data();
  }
  if (!(gpt2 ? observe({0}, in, h) : observe({0, 1, 2}, in, h))) return;
  linear_forward(L.wqkv, in, size_t(n), w.qkv.data());
  add_bias(w.qkv.data(), L.bqkv.data(), n, 3 * h);
  for (int i = 0; i < n; ++i) {
    s.store(cache_layer, pos0 + i, &w.qkv[size_t(i) * size_t(3 * h) + size_t(h)], &w.qkv[size_t(i) * size_t(3 * h) + size_t(2 * h)]);
  }
  causal_attention(w.qkv.data(), size_t(3 * h), s, cache_layer, n, pos0, {cfg_.num_heads, cfg_.num_heads, cfg_.head_dim, 0},
                   w.att.data(), size_t(h));
  if (!observe({gpt2 ? 1 : 3}, w.att.data(), h)) return;
  linear_forward(L.wo, w.att.data(), size_t(n), x, /*accumulate=*/true);
  add_bias(x, L.bo.data(), n, h);
  if (!pre) {
    layer_norm(L.ln_attn, x, w.tmp.data(), n);
    std::copy_n(w.tmp.data(), hn, x);
  }
  // MLP block.
  in = x;
  if (pre) {
    layer_norm(L.ln_mlp, x, w.xn.data(), n);
    in = w.xn.data();
  }
  if (!observe({gpt2 ? 2 : 4}, in, h)) return;
  linear_forward(L.w1, in, size_t(n), w.mid.data());
  default_thread_pool().parallel_for(size_t(n), [&](size_t b, size_t end, int) {
    for (size_t i = b; i < end; ++i)
      for (int d = 0; d < inner; ++d) {
        float& v = w.mid[i * size_t(inner) + size_t(d)];
        v = activate(v + L.b1[size_t(d)], cfg_.activation);
      }
  });
  if (!observe({gpt2 ? 3 : 5}, w.mid.data(), inner)) return;
  linear_forward(L.w2, w.mid.data(), size_t(n), x, /*accumulate=*/true);
  add_bias(x, L.b2.data(), n, h);
  if (!pre) {
    layer_norm(L.ln_mlp, x, w.tmp.data(), n);
    std::copy_n(w.tmp.data(), hn, x);
  }
}

void GptModel::run_layer(int l, float* x, int n, const LinearObserver* observer) const {
  if (l < 0 || l >= cfg_.num_layers) fail("layer {} is outside 0..{}", l, cfg_.num_layers - 1);
  if (!run_scratch_ || run_scratch_->n != n) {
    run_scratch_.reset();  // the old buffers go before the new ones are made
    run_scratch_ = std::make_shared<RunScratch>(RunScratch{n, KVSession(1, n, cfg_.num_heads, cfg_.head_dim, KVCacheType::f32), Work(cfg_, n)});
  }
  // The layer writes every key and value it reads (positions 0..n-1), so nothing needs clearing.
  layer_forward(l, /*cache_layer=*/0, x, n, 0, run_scratch_->kv, run_scratch_->work, observer);
  check_finite_activations(x, n, cfg_.hidden_size, 0, layer_prefix_, l);
}

std::pair<int, std::string> GptModel::split_name(const std::string& name) const {
  if (name.rfind(layer_prefix_, 0) != 0) return {-1, ""};
  size_t i = layer_prefix_.size(), j = i;
  while (j < name.size() && std::isdigit(static_cast<unsigned char>(name[j]))) ++j;
  if (j == i || j - i > 6 || j >= name.size() || name[j] != '.') return {-1, ""};
  const int l = std::stoi(name.substr(i, j - i));
  if (l >= cfg_.num_layers) return {-1, ""};
  return {l, name.substr(j + 1)};
}

GptModel::Slot GptModel::slot(const std::string& name) const {
  const auto [l, suffix] = split_name(name);
  if (l < 0) fail("'{}' is not a tensor of a layer", name);
  Layer& L = layer(l);
  const int64_t h = cfg_.hidden_size, inner = cfg_.intermediate_size;
  const bool gpt2 = cfg_.family == ModelFamily::GPT2;
  struct Entry {
    const char* suffix;
    Slot slot;
    bool linear;
  };
  std::vector<Entry> table;
  if (gpt2) {
    table = {{"ln_1.weight", {&L.ln_attn.weight, 0, h, 1}, false},
             {"ln_1.bias", {&L.ln_attn.bias, 0, h, 1}, false},
             {"ln_2.weight", {&L.ln_mlp.weight, 0, h, 1}, false},
             {"ln_2.bias", {&L.ln_mlp.bias, 0, h, 1}, false},
             {"attn.c_attn.weight", {&L.wqkv.f32, 0, 3 * h, h}, true},
             {"attn.c_attn.bias", {&L.bqkv, 0, 3 * h, 1}, false},
             {"attn.c_proj.weight", {&L.wo.f32, 0, h, h}, true},
             {"attn.c_proj.bias", {&L.bo, 0, h, 1}, false},
             {"mlp.c_fc.weight", {&L.w1.f32, 0, inner, h}, true},
             {"mlp.c_fc.bias", {&L.b1, 0, inner, 1}, false},
             {"mlp.c_proj.weight", {&L.w2.f32, 0, h, inner}, true},
             {"mlp.c_proj.bias", {&L.b2, 0, h, 1}, false}};
  } else {
    table = {{"self_attn_layer_norm.weight", {&L.ln_attn.weight, 0, h, 1}, false},
             {"self_attn_layer_norm.bias", {&L.ln_attn.bias, 0, h, 1}, false},
             {"final_layer_norm.weight", {&L.ln_mlp.weight, 0, h, 1}, false},
             {"final_layer_norm.bias", {&L.ln_mlp.bias, 0, h, 1}, false},
             {"self_attn.q_proj.weight", {&L.wqkv.f32, 0, h, h}, true},
             {"self_attn.k_proj.weight", {&L.wqkv.f32, h * h, h, h}, true},
             {"self_attn.v_proj.weight", {&L.wqkv.f32, 2 * h * h, h, h}, true},
             {"self_attn.q_proj.bias", {&L.bqkv, 0, h, 1}, false},
             {"self_attn.k_proj.bias", {&L.bqkv, h, h, 1}, false},
             {"self_attn.v_proj.bias", {&L.bqkv, 2 * h, h, 1}, false},
             {"self_attn.out_proj.weight", {&L.wo.f32, 0, h, h}, true},
             {"self_attn.out_proj.bias", {&L.bo, 0, h, 1}, false},
             {"fc1.weight", {&L.w1.f32, 0, inner, h}, true},
             {"fc1.bias", {&L.b1, 0, inner, 1}, false},
             {"fc2.weight", {&L.w2.f32, 0, h, inner}, true},
             {"fc2.bias", {&L.b2, 0, h, 1}, false}};
  }
  for (const Entry& e : table)
    if (suffix == e.suffix) {
      if (e.linear && (L.wqkv.is_int8() || L.wqkv.is_packed() || L.wqkv.f32.empty()))
        fail("'{}': layer-by-layer access needs float32 weights (load_causal_lm_layerwise)", name);
      return e.slot;
    }
  fail("'{}' is not a weight, bias or norm of a layer", name);
}

std::vector<float> GptModel::weight(const std::string& name) const {
  const Slot s = slot(name);
  auto first = s.data->begin() + s.offset;
  return std::vector<float>(first, first + s.rows * s.cols);
}

void GptModel::replace_weight(const std::string& name, const std::vector<float>& w) {
  const Slot s = slot(name);
  if (int64_t(w.size()) != s.rows * s.cols)
    fail("replace_weight: '{}' needs {} x {} values, got {}", name, s.rows, s.cols, w.size());
  std::copy(w.begin(), w.end(), s.data->begin() + s.offset);
}

std::optional<CausalLM::InputProducer> GptModel::input_producer(const std::string& name) const {
  const auto [l, suffix] = split_name(name);
  if (l < 0) return std::nullopt;
  const std::string q = layer_name(l);
  const int64_t h = cfg_.hidden_size;
  const bool pre = cfg_.norm_before, relu = cfg_.activation == "relu";
  // A norm folds a scale only where its output feeds nothing but the linear layers (pre-LN); the
  // second MLP layer's input is act(fc1(x)): scales pass through ReLU (positively homogeneous), not GELU.
  if (cfg_.family == ModelFamily::GPT2) {
    if (suffix == "attn.c_attn.weight" && pre) return InputProducer::norm(q + "ln_1.weight", q + "ln_1.bias");
    if (suffix == "attn.c_proj.weight")  // the value rows of the fused q/k/v weight
      return InputProducer::linear_rows(q + "attn.c_attn.weight", q + "attn.c_attn.bias", 2 * h, h);
    if (suffix == "mlp.c_fc.weight" && pre) return InputProducer::norm(q + "ln_2.weight", q + "ln_2.bias");
    if (suffix == "mlp.c_proj.weight" && relu) return InputProducer::linear_rows(q + "mlp.c_fc.weight", q + "mlp.c_fc.bias");
    return std::nullopt;
  }
  if ((suffix == "self_attn.q_proj.weight" || suffix == "self_attn.k_proj.weight" || suffix == "self_attn.v_proj.weight") && pre)
    return InputProducer::norm(q + "self_attn_layer_norm.weight", q + "self_attn_layer_norm.bias");
  if (suffix == "self_attn.out_proj.weight")
    return InputProducer::linear_rows(q + "self_attn.v_proj.weight", q + "self_attn.v_proj.bias");
  if (suffix == "fc1.weight" && pre) return InputProducer::norm(q + "final_layer_norm.weight", q + "final_layer_norm.bias");
  if (suffix == "fc2.weight" && relu) return InputProducer::linear_rows(q + "fc1.weight", q + "fc1.bias");
  return std::nullopt;
}

void GptModel::forward(Session& session, std::span<const int32_t> tokens, float* logits, bool all_rows) const {
  auto& s = dynamic_cast<KVSession&>(session);
  const int n = int(tokens.size());
  if (n == 0) return;
  const int pos0 = s.start(n);
  const int h = cfg_.hidden_size, vocab = cfg_.vocab_size, e = embed_dim_;
  std::vector<float> x(size_t(n) * size_t(h));
  embed_at(tokens, pos0, x.data());
  Work w(cfg_, n);
  for (int l = 0; l < cfg_.num_layers; ++l) {
    layer_forward(l, l, x.data(), n, pos0, s, w, nullptr);
    s.check_range(layer_prefix_);
    check_finite_activations(x.data(), n, h, pos0, layer_prefix_, l);
  }
  s.advance(n);

  const size_t first = all_rows ? 0 : size_t(n - 1), rows = size_t(n) - first;
  const float* out = x.data() + first * size_t(h);
  if (!final_norm_.weight.empty()) {
    layer_norm(final_norm_, x.data(), w.xn.data(), n);
    out = w.xn.data() + first * size_t(h);
  }
  std::vector<float> emb;
  if (!project_out_.empty()) {
    emb.resize(rows * size_t(e));
    gemm_f32_nt(out, project_out_.data(), emb.data(), rows, size_t(e), size_t(h));
    out = emb.data();
  }
  const float* head = lm_head_.empty() ? embed_.data() : lm_head_.data();
  gemm_f32_nt(out, head, logits, rows, size_t(vocab), size_t(e));
}

}  // namespace lowbit
