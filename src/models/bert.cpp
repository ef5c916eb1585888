// BERT and DistilBERT sequence classifiers in float32 (see classifier.h for the maths).
//
// Both families share one forward pass; a table of tensor names (EncoderNames) maps it onto each
// family's checkpoint. The batch is packed: only real tokens (attention_mask 1) become rows of the
// activation matrix x [tokens, hidden], so padding costs nothing, and attention runs per sequence over
// that sequence's own rows, which is what transformers' additive mask computes (masked keys get
// exp(min - max) = 0 weight). The last layer only needs its output at each sequence's [CLS]: it
// computes keys and values for every token but queries, FFN and norms for the [CLS] rows alone.
#include <algorithm>
#include <cmath>
#include <numbers>

#include "lowbit/core/error.h"
#include "lowbit/core/numerics.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/formats/weights.h"
#include "lowbit/kernels/gemm.h"
#include "lowbit/models/classifier.h"

namespace lowbit {

namespace {

// State-dict names of one encoder family (transformers' modeling_bert.py / modeling_distilbert.py).
struct EncoderNames {
  const char* word_embeddings;
  const char* position_embeddings;
  const char* token_type_embeddings;  // nullptr: the family has no segment embeddings
  const char* embeddings_norm;
  const char* layer;  // prefix of layer {}
  const char* query;
  const char* key;
  const char* value;
  const char* attention_out;
  const char* attention_norm;
  const char* ffn_in;
  const char* ffn_out;
  const char* ffn_norm;
  const char* head_dense;  // BERT: the pooler (tanh); DistilBERT: pre_classifier (ReLU)
  const char* classifier;
};

constexpr EncoderNames kBertNames = {
    "bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight",
    "bert.embeddings.token_type_embeddings.weight", "bert.embeddings.LayerNorm",
    "bert.encoder.layer.{}.", "attention.self.query", "attention.self.key", "attention.self.value",
    "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm",
    "bert.pooler.dense", "classifier"};

constexpr EncoderNames kDistilBertNames = {
    "distilbert.embeddings.word_embeddings.weight", "distilbert.embeddings.position_embeddings.weight", nullptr,
    "distilbert.embeddings.LayerNorm",
    "distilbert.transformer.layer.{}.", "attention.q_lin", "attention.k_lin", "attention.v_lin",
    "attention.out_lin", "sa_layer_norm", "ffn.lin1", "ffn.lin2", "output_layer_norm",
    "pre_classifier", "classifier"};

struct Linear {
  LinearWeights w;       // [out, in]: float, or int8 with dynamic activations (int8-dyn)
  std::vector<float> b;  // [out]
  int64_t out = 0, in = 0;
};

struct Norm {
  std::vector<float> gamma, beta;  // [hidden]
};

Linear load_linear(const WeightStore& s, const std::string& prefix, int64_t out, int64_t in) {
  return {s.load_linear(prefix + ".weight", {out, in}), s.load_f32(prefix + ".bias", {out}), out, in};
}

// LayerNorm parameters: "weight"/"bias", or "gamma"/"beta" in checkpoints saved by old transformers.
Norm load_norm(const WeightStore& s, const std::string& prefix, int64_t n) {
  if (!s.has(prefix + ".weight") && s.has(prefix + ".gamma"))
    return {s.load_f32(prefix + ".gamma", {n}), s.load_f32(prefix + ".beta", {n})};
  return {s.load_f32(prefix + ".weight", {n}), s.load_f32(prefix + ".bias", {n})};
}

// DistilBERT's fixed sinusoidal positions (create_sinusoidal_embeddings), for checkpoints that do
// not store them: angle(p, j) = p / 10000^(2 floor(j/2) / dim); sin on even j, cos on odd j.
std::vector<float> sinusoidal_positions(int64_t n_pos, int64_t dim) {
  std::vector<float> out(size_t(n_pos * dim));
  for (int64_t p = 0; p < n_pos; ++p)
    for (int64_t j = 0; j < dim; ++j) {
      const double angle = double(p) / std::pow(10000.0, double(2 * (j / 2)) / double(dim));
      out[size_t(p * dim + j)] = float(j % 2 == 0 ? std::sin(angle) : std::cos(angle));
    }
  return out;
}

// x <- LayerNorm(x + residual) over one row of n (residual may be null). Mean and variance in double.
void add_layer_norm(float* x, const float* residual, const Norm& norm, int n, float eps) {
  if (residual)
    for (int i = 0; i < n; ++i) x[i] += residual[i];
  double mean = 0;
  for (int i = 0; i < n; ++i) mean += x[i];
  mean /= n;
  double var = 0;
  for (int i = 0; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  var /= n;
  const float inv = float(1.0 / std::sqrt(var + double(eps)));
  const float m = float(mean);
  for (int i = 0; i < n; ++i) x[i] = (x[i] - m) * inv * norm.gamma[size_t(i)] + norm.beta[size_t(i)];
}

float activate(float x, EncoderActivation act) {
  switch (act) {
    case EncoderActivation::gelu:  // x Φ(x), Φ the standard normal CDF (torch.nn.functional.gelu)
      return 0.5f * x * (1.0f + std::erf(x * float(std::numbers::sqrt2 / 2)));
    case EncoderActivation::gelu_tanh: {  // transformers NewGELUActivation
      const float c = float(std::sqrt(2.0 / std::numbers::pi));
      return 0.5f * x * (1.0f + std::tanh(c * (x + 0.044715f * x * x * x)));
    }
    case EncoderActivation::relu:
      return x > 0 ? x : 0;
  }
  return x;
}

// Softmax of row[0..n) scaled by `scale`, in place.
void softmax_row(float* row, int n, float scale) {
  float mx = -INFINITY;
  for (int j = 0; j < n; ++j) mx = std::max(mx, row[j] * scale);
  float sum = 0;
  for (int j = 0; j < n; ++j) {
    row[j] = std::exp(row[j] * scale - mx);
    sum += row[j];
  }
  const float inv = 1.0f / sum;
  for (int j = 0; j < n; ++j) row[j] *= inv;
}

class EncoderClassifier final : public SequenceClassifier {
 public:
  EncoderClassifier(EncoderConfig config, const WeightStore& store);
  const EncoderConfig& config() const override { return cfg_; }
  void forward(const EncoderBatch& batch, float* logits) const override;
  uint64_t weight_bytes() const override;

 private:
  struct Layer {
    LinearWeights wqkv;       // [3 hidden, hidden]: query rows, key rows, value rows
    std::vector<float> bqkv;  // [3 hidden]
    Linear out;               // [hidden, hidden]
    Norm attn_norm;
    Linear ffn_in;            // [intermediate, hidden]
    Linear ffn_out;           // [hidden, intermediate]
    Norm ffn_norm;
  };
  // y[rows][out] = x[rows][in] Wᵀ + b
  void linear(const float* x, const Linear& l, float* y, size_t rows) const;
  // Self-attention of the packed sequences. qkv [tokens][3 hidden]; seq_start[b] is the first row of
  // sequence b. cls_only: queries only at each sequence's first row (out [batch][hidden]), else at
  // every row (out [tokens][hidden]).
  void attention(const float* qkv, const std::vector<int>& seq_start, bool cls_only, float* out) const;

  EncoderConfig cfg_;
  const EncoderNames* names_;
  std::vector<float> word_, position_, token_type_;  // [vocab | max_positions | type_vocab, hidden]
  Norm embed_norm_;
  std::vector<Layer> layers_;
  Linear head_dense_;   // [hidden, hidden]
  Linear classifier_;   // [labels, hidden]
};

EncoderClassifier::EncoderClassifier(EncoderConfig config, const WeightStore& s) : cfg_(std::move(config)) {
  names_ = cfg_.arch == EncoderArch::bert ? &kBertNames : &kDistilBertNames;
  const EncoderNames& n = *names_;
  const int64_t H = cfg_.hidden_size, I = cfg_.intermediate_size;
  from_quantized_ = s.quantized();
  word_ = s.load_f32(n.word_embeddings, {cfg_.vocab_size, H});
  if (!s.has(n.position_embeddings) && cfg_.sinusoidal_positions)
    position_ = sinusoidal_positions(cfg_.max_positions, H);
  else
    position_ = s.load_f32(n.position_embeddings, {cfg_.max_positions, H});
  if (n.token_type_embeddings) token_type_ = s.load_f32(n.token_type_embeddings, {cfg_.type_vocab_size, H});
  embed_norm_ = load_norm(s, n.embeddings_norm, H);
  layers_.resize(size_t(cfg_.num_layers));
  for (int l = 0; l < cfg_.num_layers; ++l) {
    const std::string p = fmt::format(fmt::runtime(n.layer), l);
    Layer& L = layers_[size_t(l)];
    for (const char* part : {n.query, n.key, n.value}) {
      Linear q = load_linear(s, p + part, H, H);
      L.wqkv.append_rows(q.w);
      L.bqkv.insert(L.bqkv.end(), q.b.begin(), q.b.end());
    }
    L.out = load_linear(s, p + n.attention_out, H, H);
    L.attn_norm = load_norm(s, p + n.attention_norm, H);
    L.ffn_in = load_linear(s, p + n.ffn_in, I, H);
    L.ffn_out = load_linear(s, p + n.ffn_out, H, I);
    L.ffn_norm = load_norm(s, p + n.ffn_norm, H);
  }
  head_dense_ = load_linear(s, n.head_dense, H, H);
  classifier_ = load_linear(s, n.classifier, cfg_.num_labels, H);
}

uint64_t EncoderClassifier::weight_bytes() const {
  auto lin = [](const Linear& l) { return l.w.bytes() + l.b.size() * sizeof(float); };
  auto norm = [](const Norm& n) { return (n.gamma.size() + n.beta.size()) * sizeof(float); };
  uint64_t n = (word_.size() + position_.size() + token_type_.size()) * sizeof(float) + norm(embed_norm_) +
               lin(head_dense_) + lin(classifier_);
  for (const auto& L : layers_)
    n += L.wqkv.bytes() + L.bqkv.size() * sizeof(float) + lin(L.out) + norm(L.attn_norm) + lin(L.ffn_in) +
         lin(L.ffn_out) + norm(L.ffn_norm);
  return n;
}

void EncoderClassifier::linear(const float* x, const Linear& l, float* y, size_t rows) const {
  linear_forward(l.w, x, rows, y);
  default_thread_pool().parallel_for(rows, [&](size_t b, size_t e, int) {
    for (size_t i = b; i < e; ++i)
      for (int64_t j = 0; j < l.out; ++j) y[i * size_t(l.out) + size_t(j)] += l.b[size_t(j)];
  });
}

void EncoderClassifier::attention(const float* qkv, const std::vector<int>& seq_start, bool cls_only,
                                  float* out) const {
  const int H = cfg_.hidden_size, hd = cfg_.head_dim, heads = cfg_.num_heads, stride = 3 * H;
  const float scale = 1.0f / std::sqrt(float(hd));
  const size_t nseq = seq_start.size() - 1;
  ThreadPool& pool = default_thread_pool();
  std::vector<float> scores;
  for (size_t b = 0; b < nseq; ++b) {
    const int first = seq_start[b], n = seq_start[b + 1] - first;
    const int nq = cls_only ? 1 : n;  // query rows
    const float* base = qkv + size_t(first) * size_t(stride);
    float* o = out + (cls_only ? b : size_t(first)) * size_t(H);
    scores.resize(size_t(heads) * size_t(nq) * size_t(n));
    // S_h = Q_h K_hᵀ for every head: [heads][nq][n]
    for (int h = 0; h < heads; ++h)
      gemm_f32_strided(base + size_t(h * hd), size_t(stride), base + size_t(H + h * hd), size_t(stride),
                       /*b_transposed=*/true, scores.data() + size_t(h) * size_t(nq) * size_t(n), size_t(n),
                       size_t(nq), size_t(n), size_t(hd));
    const size_t rows = size_t(heads) * size_t(nq);
    if (rows * size_t(n) >= 16384) {
      pool.parallel_for(rows, [&](size_t rb, size_t re, int) {
        for (size_t r = rb; r < re; ++r) softmax_row(scores.data() + r * size_t(n), n, scale);
      });
    } else {  // a short sequence: not worth waking the pool
      for (size_t r = 0; r < rows; ++r) softmax_row(scores.data() + r * size_t(n), n, scale);
    }
    // O_h = P_h V_h into the head's columns of out
    for (int h = 0; h < heads; ++h)
      gemm_f32_strided(scores.data() + size_t(h) * size_t(nq) * size_t(n), size_t(n), base + size_t(2 * H + h * hd),
                       size_t(stride), /*b_transposed=*/false, o + size_t(h * hd), size_t(H), size_t(nq), size_t(hd),
                       size_t(n));
  }
}

void EncoderClassifier::forward(const EncoderBatch& batch, float* logits) const {
  const int B = batch.batch, S = batch.seq_len, H = cfg_.hidden_size, I = cfg_.intermediate_size;
  if (B <= 0 || S <= 0) fail("encoder batch: {} sequences of {} positions; expected at least one of each", B, S);
  const size_t cells = size_t(B) * size_t(S);
  if (batch.input_ids.size() != cells)
    fail("encoder batch: input_ids holds {} ids, expected batch {} x seq_len {}", batch.input_ids.size(), B, S);
  if (!batch.attention_mask.empty() && batch.attention_mask.size() != cells)
    fail("encoder batch: attention_mask holds {} values, expected {}", batch.attention_mask.size(), cells);
  if (!batch.token_type_ids.empty() && batch.token_type_ids.size() != cells)
    fail("encoder batch: token_type_ids holds {} values, expected {}", batch.token_type_ids.size(), cells);
  if (S > cfg_.max_positions)
    fail("encoder batch: sequences of {} positions exceed the model's max_position_embeddings {} ({}); truncate "
         "them (--max-len)", S, cfg_.max_positions, cfg_.path.string());
  ThreadPool& pool = default_thread_pool();

  // Pack the real tokens: row r holds (input id, position, token type); sequence b is rows
  // [seq_start[b], seq_start[b + 1]).
  std::vector<int> seq_start(size_t(B) + 1, 0), row_id, row_pos, row_type;
  row_id.reserve(cells);
  for (int b = 0; b < B; ++b) {
    seq_start[size_t(b)] = int(row_id.size());
    for (int p = 0; p < S; ++p) {
      const size_t k = size_t(b) * size_t(S) + size_t(p);
      const int32_t m = batch.attention_mask.empty() ? 1 : batch.attention_mask[k];
      if (m != 0 && m != 1) fail("encoder batch: attention_mask[{}][{}] = {}, expected 0 or 1", b, p, m);
      if (p == 0 && m == 0)
        fail("encoder batch: sequence {} starts with padding; the classifier reads position 0 ([CLS]), so pad on "
             "the right", b);
      if (m == 0) continue;
      const int32_t id = batch.input_ids[k];
      if (id < 0 || id >= cfg_.vocab_size)
        fail("encoder batch: token id {} at [{}][{}] is outside the vocabulary [0, {})", id, b, p, cfg_.vocab_size);
      const int32_t type = batch.token_type_ids.empty() ? 0 : batch.token_type_ids[k];
      if (type != 0 && (token_type_.empty() || type < 0 || type >= cfg_.type_vocab_size))
        fail("encoder batch: token type {} at [{}][{}] is outside [0, {})", type, b, p,
             token_type_.empty() ? 1 : cfg_.type_vocab_size);
      row_id.push_back(id);
      row_pos.push_back(p);
      row_type.push_back(type);
    }
  }
  seq_start[size_t(B)] = int(row_id.size());
  const size_t T = row_id.size();

  // Embeddings, then LayerNorm: x [T][H].
  std::vector<float> x(T * size_t(H));
  pool.parallel_for(T, [&](size_t rb, size_t re, int) {
    for (size_t r = rb; r < re; ++r) {
      float* xr = &x[r * size_t(H)];
      const float* w = &word_[size_t(row_id[r]) * size_t(H)];
      const float* p = &position_[size_t(row_pos[r]) * size_t(H)];
      for (int i = 0; i < H; ++i) xr[i] = w[i] + p[i];
      if (!token_type_.empty()) {
        const float* t = &token_type_[size_t(row_type[r]) * size_t(H)];
        for (int i = 0; i < H; ++i) xr[i] += t[i];
      }
      add_layer_norm(xr, nullptr, embed_norm_, H, cfg_.layer_norm_eps);
    }
  });

  std::vector<float> qkv(T * size_t(3 * H)), ctx(T * size_t(H)), tmp(T * size_t(H)), ffn(T * size_t(I));
  size_t rows = T;  // rows of x still computed (T, then B in the last layer)
  for (int l = 0; l < cfg_.num_layers; ++l) {
    const Layer& L = layers_[size_t(l)];
    const bool last = l + 1 == cfg_.num_layers;
    // Q, K, V of every token.
    linear_forward(L.wqkv, x.data(), T, qkv.data());
    pool.parallel_for(T, [&](size_t rb, size_t re, int) {
      for (size_t r = rb; r < re; ++r)
        for (int j = 0; j < 3 * H; ++j) qkv[r * size_t(3 * H) + size_t(j)] += L.bqkv[size_t(j)];
    });
    attention(qkv.data(), seq_start, last, ctx.data());
    if (last) {  // from here on only the [CLS] rows matter
      rows = size_t(B);
      for (int b = 0; b < B; ++b)
        std::copy_n(&x[size_t(seq_start[size_t(b)]) * size_t(H)], H, &x[size_t(b) * size_t(H)]);
    }
    // x = LN(x + O ctx)
    linear(ctx.data(), L.out, tmp.data(), rows);
    pool.parallel_for(rows, [&](size_t rb, size_t re, int) {
      for (size_t r = rb; r < re; ++r)
        add_layer_norm(&x[r * size_t(H)], &tmp[r * size_t(H)], L.attn_norm, H, cfg_.layer_norm_eps);
    });
    // x = LN(x + W2 act(W1 x))
    linear(x.data(), L.ffn_in, ffn.data(), rows);
    pool.parallel_for(rows, [&](size_t rb, size_t re, int) {
      for (size_t k = rb * size_t(I); k < re * size_t(I); ++k) ffn[k] = activate(ffn[k], cfg_.activation);
    });
    linear(ffn.data(), L.ffn_out, tmp.data(), rows);
    pool.parallel_for(rows, [&](size_t rb, size_t re, int) {
      for (size_t r = rb; r < re; ++r)
        add_layer_norm(&x[r * size_t(H)], &tmp[r * size_t(H)], L.ffn_norm, H, cfg_.layer_norm_eps);
    });
    // Rows are the batch's packed tokens: the "position" reported is the row.
    const std::string_view layer_name = names_->layer;  // "bert.encoder.layer.{}."
    check_finite_activations(x.data(), int(rows), H, 0, layer_name.substr(0, layer_name.size() - 3), l);
  }

  // Heads on the [CLS] rows (x[0..B)): BERT tanh(pooler), DistilBERT relu(pre_classifier); then classifier.
  std::vector<float> pooled(size_t(B) * size_t(H));
  linear(x.data(), head_dense_, pooled.data(), size_t(B));
  for (float& v : pooled) v = cfg_.arch == EncoderArch::bert ? std::tanh(v) : std::max(v, 0.0f);
  linear(pooled.data(), classifier_, logits, size_t(B));
}

}  // namespace

EncoderBatch make_encoder_batch(std::span<const std::vector<int32_t>> sequences, int pad_id) {
  EncoderBatch b;
  b.batch = int(sequences.size());
  for (const auto& s : sequences) b.seq_len = std::max(b.seq_len, int(s.size()));
  b.input_ids.assign(size_t(b.batch) * size_t(b.seq_len), pad_id);
  b.attention_mask.assign(b.input_ids.size(), 0);
  for (size_t i = 0; i < sequences.size(); ++i) {
    std::copy(sequences[i].begin(), sequences[i].end(), b.input_ids.begin() + std::ptrdiff_t(i * size_t(b.seq_len)));
    std::fill_n(b.attention_mask.begin() + std::ptrdiff_t(i * size_t(b.seq_len)), sequences[i].size(), 1);
  }
  return b;
}

std::vector<float> SequenceClassifier::classify(std::span<const std::vector<int32_t>> sequences) const {
  std::vector<float> logits(sequences.size() * size_t(num_labels()));
  if (sequences.empty()) return logits;
  for (size_t i = 0; i < sequences.size(); ++i)
    if (sequences[i].empty()) fail("classify: sequence {} is empty (it needs at least its [CLS] token)", i);
  forward(make_encoder_batch(sequences, config().pad_token_id), logits.data());
  return logits;
}

std::unique_ptr<SequenceClassifier> load_sequence_classifier(const std::filesystem::path& dir) {
  EncoderConfig cfg = load_encoder_config(dir);
  WeightStore weights(dir);
  return std::make_unique<EncoderClassifier>(std::move(cfg), weights);
}

std::vector<int32_t> encode_for_classifier(const Tokenizer& tok, std::string_view text, int max_len, bool* truncated) {
  // The template around every text, found once from a probe: frame = prefix + suffix, and the
  // prefix is the part before the probe's own ids.
  const std::vector<int32_t> frame = tok.encode_with_special("");
  const std::vector<int32_t> probe = tok.encode("a"), probe_framed = tok.encode_with_special("a");
  size_t prefix = frame.size() + 1;
  if (probe_framed.size() == frame.size() + probe.size())
    for (size_t p = 0; p <= frame.size() && prefix > frame.size(); ++p)
      if (std::equal(frame.begin(), frame.begin() + std::ptrdiff_t(p), probe_framed.begin()) &&
          std::equal(probe.begin(), probe.end(), probe_framed.begin() + std::ptrdiff_t(p)) &&
          std::equal(frame.begin() + std::ptrdiff_t(p), frame.end(),
                     probe_framed.begin() + std::ptrdiff_t(p + probe.size())))
        prefix = p;
  if (prefix > frame.size())
    fail("classify: the tokenizer's special-token template is not a fixed prefix and suffix around the text");
  if (max_len > 0 && frame.size() > size_t(max_len))
    fail("classify: max length {} is shorter than the {} special tokens every input needs", max_len, frame.size());
  std::vector<int32_t> body = tok.encode(text);
  const bool cut = max_len > 0 && frame.size() + body.size() > size_t(max_len);
  if (cut) body.resize(size_t(max_len) - frame.size());
  if (truncated) *truncated = cut;
  std::vector<int32_t> out(frame.begin(), frame.begin() + std::ptrdiff_t(prefix));
  out.insert(out.end(), body.begin(), body.end());
  out.insert(out.end(), frame.begin() + std::ptrdiff_t(prefix), frame.end());
  return out;
}

std::vector<float> label_scores(const EncoderConfig& cfg, const float* logits) {
  const int n = cfg.num_labels;
  std::vector<float> p(logits, logits + n);
  if (cfg.problem_type == ProblemType::single_label) {
    const float mx = *std::max_element(p.begin(), p.end());
    double sum = 0;
    for (float& v : p) sum += (v = std::exp(v - mx));
    for (float& v : p) v = float(v / sum);
  } else if (cfg.problem_type == ProblemType::multi_label) {
    for (float& v : p) v = 1.0f / (1.0f + std::exp(-v));
  }
  return p;
}

}  // namespace lowbit
