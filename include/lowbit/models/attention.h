#pragma once
// Shared pieces of the decoder models: the KV cache of one sequence and causal multi-head /
// grouped-query attention over it.
#include <cstddef>
#include <vector>

#include "lowbit/core/aligned.h"
#include "lowbit/models/model.h"

namespace lowbit {

// K and V of every layer, float32, each head's rows contiguous: [layer][kv head][position][head_dim],
// so that decode attention reads one head's keys as one stream (rows of all heads side by side gave
// each head 256-byte pieces 1 KB apart, which the prefetchers follow poorly: bench/NOTES.md). Large
// caches on huge pages (core/aligned.h).
class KVSession : public Session {
 public:
  KVSession(int layers, int capacity, int kv_heads, int head_dim);
  // Head h's key / value at position pos; the next position's follows head_dim floats on.
  float* k_at(int layer, int head, int pos) { return k_.data() + at(layer, head, pos); }
  float* v_at(int layer, int head, int pos) { return v_.data() + at(layer, head, pos); }
  // Stores position pos of layer: k and v hold kv_heads * head_dim floats each, heads side by side.
  void store(int layer, int pos, const float* k, const float* v);
  int head_dim() const { return head_dim_; }
  void advance(int n) { position_ += n; }
  // The first position of n new tokens; throws when they would not fit.
  int start(int n) const;

 private:
  size_t at(int layer, int head, int pos) const {
    return ((size_t(layer) * size_t(kv_heads_) + size_t(head)) * size_t(capacity_) + size_t(pos)) * size_t(head_dim_);
  }
  int kv_heads_, head_dim_;
  stream_vector<float> k_, v_;
};

struct AttentionShape {
  int heads = 0, kv_heads = 0, head_dim = 0;
  int sliding_window = 0;  // > 0: a query attends to at most this many latest positions (Mistral)
};

// Causal attention of n new queries (positions pos0 .. pos0+n-1) over the cache of `layer`, which
// already holds their keys and values. q: row i at q + i*q_stride, heads side by side; out: row i at
// out + i*out_stride. softmax(q·k * 1/sqrt(head_dim)) · v per head; heads / kv_heads query heads
// share one KV head. Prefill runs two GEMMs per head; a few rows (decode) run a direct loop.
void causal_attention(const float* q, size_t q_stride, KVSession& s, int layer, int n, int pos0,
                      const AttentionShape& shape, float* out, size_t out_stride);

}  // namespace lowbit
