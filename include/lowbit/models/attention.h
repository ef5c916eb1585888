#pragma once
// Shared pieces of the decoder models: the KV cache of one sequence and causal multi-head /
// grouped-query attention over it.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "lowbit/core/aligned.h"
#include "lowbit/kernels/attention.h"
#include "lowbit/models/model.h"

namespace lowbit {

// K and V of every layer, one KV head's positions together ([layer][kv head][position]), so that
// decode attention reads a head's keys and values as two streams; keys in blocks of 16 positions
// stored dimension-major, values row-major (kernels/attention.h). Elements f16 (default: half the
// memory and half the decode attention's traffic, as llama.cpp's default cache; keys and values are
// rounded to 11 significant bits, at most 2^-11 = 4.9e-4 relative) or float32 (exact; what the evaluation and the
// float-precision goldens use). Large caches on huge pages (core/aligned.h).
class KVSession : public Session {
 public:
  KVSession(int layers, int capacity, int kv_heads, int head_dim, KVCacheType type = KVCacheType::f16);
  // Stores position pos of layer: k and v hold kv_heads * head_dim floats each, heads side by side.
  // Different positions may be stored concurrently.
  void store(int layer, int pos, const float* k, const float* v) { store_heads(layer, 0, kv_heads_, pos, k, v); }
  // Heads [h0, h1) only: k and v hold (h1 - h0) * head_dim floats each.
  void store_heads(int layer, int h0, int h1, int pos, const float* k, const float* v);
  // One decode step's attention of g query heads (q: g * head_dim floats) over positions
  // [lo, lo + len) of KV head `head` (kernels/attention.h; scores: attend_scratch(g, len) floats).
  void attend(int layer, int head, const float* q, int g, int lo, int len, float scale, float* scores,
              float* out) const;
  // Keys and values of positions [0, len) of a KV head as float32 rows of head_dim (prefill's GEMMs).
  void unpack(int layer, int head, int len, float* k, float* v) const;
  // Throws when a finite key or value was stored as ±Inf in an f16 cache (|x| >= 65520), naming the
  // first such layer (layer_prefix + index) and position. The models call it before their
  // non-finite activation checks, which would otherwise blame the weights.
  void check_range(std::string_view layer_prefix) const;
  int head_dim() const { return head_dim_; }
  KVCacheType type() const { return type_; }
  void advance(int n) { position_ += n; }
  void reset() override {
    Session::reset();
    overflow_ = 0;
  }
  // The first position of n new tokens; throws when they would not fit.
  int start(int n) const;

 private:
  size_t head_offset(int layer, int head) const {
    return (size_t(layer) * size_t(kv_heads_) + size_t(head)) * size_t(blocks_ * kKVBlock) * size_t(head_dim_);
  }
  int kv_heads_, head_dim_, blocks_;  // blocks_: of kKVBlock positions per head
  KVCacheType type_;
  int64_t overflow_ = 0;  // 0, or (layer + 1) << 32 | position of the first f16 overflow
  stream_vector<float> k32_, v32_;
  stream_vector<uint16_t> k16_, v16_;
  AttendFn<float> attend32_;
  AttendFn<uint16_t> attend16_;
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
