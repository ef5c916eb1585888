#include "lowbit/models/attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <type_traits>

#include "lowbit/core/dtype.h"
#include "lowbit/core/error.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/kernels/attention.h"
#include "lowbit/kernels/gemm.h"

namespace lowbit {

KVSession::KVSession(int layers, int capacity, int kv_heads, int head_dim, KVCacheType type)
    : kv_heads_(kv_heads), head_dim_(head_dim), blocks_((capacity + kKVBlock - 1) / kKVBlock), type_(type) {
  capacity_ = capacity;
  const size_t n = size_t(layers) * size_t(kv_heads) * size_t(blocks_ * kKVBlock) * size_t(head_dim);
  if (type == KVCacheType::f16) {
    k16_.resize(n);
    v16_.resize(n);
  } else {
    k32_.resize(n);
    v32_.resize(n);
  }
  attend32_ = attend_best<float>(head_dim);
  attend16_ = attend_best<uint16_t>(head_dim);
}

namespace {

// Returns false when a finite key or value became ±Inf in f16.
template <class T>
bool store_head(T* k, T* v, int pos, int hd, const float* key, const float* value) {
  bool in_range = true;
  for (int d = 0; d < hd; ++d) {
    if constexpr (std::is_same_v<T, float>) {
      k[kv_key_index(pos, d, hd)] = key[d];
      v[size_t(pos) * size_t(hd) + size_t(d)] = value[d];
    } else {
      const uint16_t hk = f32_to_f16(key[d]), hv = f32_to_f16(value[d]);
      k[kv_key_index(pos, d, hd)] = hk;
      v[size_t(pos) * size_t(hd) + size_t(d)] = hv;
      in_range &= ((hk & 0x7fffu) != 0x7c00u || !std::isfinite(key[d])) && ((hv & 0x7fffu) != 0x7c00u || !std::isfinite(value[d]));
    }
  }
  return in_range;
}

template <class T>
void unpack_head(const T* k, const T* v, int len, int hd, float* key, float* value) {
  for (int p = 0; p < len; ++p)
    for (int d = 0; d < hd; ++d) {
      const size_t i = size_t(p) * size_t(hd) + size_t(d);
      if constexpr (std::is_same_v<T, float>) {
        key[i] = k[kv_key_index(p, d, hd)];
        value[i] = v[i];
      } else {
        key[i] = f16_to_f32(k[kv_key_index(p, d, hd)]);
        value[i] = f16_to_f32(v[i]);
      }
    }
}

}  // namespace

void KVSession::store_heads(int layer, int h0, int h1, int pos, const float* k, const float* v) {
  for (int h = h0; h < h1; ++h) {
    const size_t o = head_offset(layer, h), in = size_t(h - h0) * size_t(head_dim_);
    if (type_ == KVCacheType::f32) {
      store_head(k32_.data() + o, v32_.data() + o, pos, head_dim_, k + in, v + in);
    } else if (!store_head(k16_.data() + o, v16_.data() + o, pos, head_dim_, k + in, v + in)) {
      // Stores run inside pool jobs, which must not throw: the earliest overflow (layer, then
      // position; positions are stored concurrently) is kept for check_range().
      const int64_t at = (int64_t(layer + 1) << 32) | int64_t(pos);
      std::atomic_ref<int64_t> first(overflow_);
      int64_t seen = first.load(std::memory_order_relaxed);
      while ((seen == 0 || at < seen) && !first.compare_exchange_weak(seen, at, std::memory_order_relaxed)) {
      }
    }
  }
}

void KVSession::check_range(std::string_view layer_prefix) const {
  const int64_t o = std::atomic_ref<const int64_t>(overflow_).load(std::memory_order_relaxed);
  if (o == 0) return;
  fail("{}{}: a key or value at position {} is beyond the f16 KV cache's range (+-65504); run with --kv-cache f32",
       layer_prefix, int(o >> 32) - 1, int(o & 0xffffffff));
}

void KVSession::attend(int layer, int head, const float* q, int g, int lo, int len, float scale, float* scores,
                       float* out) const {
  const size_t o = head_offset(layer, head);
  if (type_ == KVCacheType::f16)
    attend16_(q, g, head_dim_, k16_.data() + o, v16_.data() + o, lo, len, scale, scores, out);
  else
    attend32_(q, g, head_dim_, k32_.data() + o, v32_.data() + o, lo, len, scale, scores, out);
}

void KVSession::unpack(int layer, int head, int len, float* k, float* v) const {
  const size_t o = head_offset(layer, head);
  if (type_ == KVCacheType::f16)
    unpack_head(k16_.data() + o, v16_.data() + o, len, head_dim_, k, v);
  else
    unpack_head(k32_.data() + o, v32_.data() + o, len, head_dim_, k, v);
}

int KVSession::start(int n) const {
  if (position_ + n > capacity_)
    fail("sequence of {} tokens exceeds the session's capacity of {} positions", position_ + n, capacity_);
  return position_;
}

namespace {

// First cache position a query at `pos` may attend to.
int first_visible(int pos, int sliding_window) { return sliding_window > 0 ? std::max(0, pos - sliding_window + 1) : 0; }

// Decode (a few rows): attention.h's kernel per (query row, KV head, run of that KV head's query
// heads), where BLAS calls per head cost more than they save. The keys and values of a KV head are
// read once for its query heads; the runs are halved until both threads have work.
void attention_rows(const float* q_all, size_t q_stride, KVSession& s, int layer, int n, int pos0,
                    const AttentionShape& a, float* out, size_t out_stride) {
  const int group = a.heads / a.kv_heads, hd = a.head_dim;
  const float scale = 1.0f / std::sqrt(float(hd));
  ThreadPool& pool = default_thread_pool();
  int run = group;
  while (run % 2 == 0 && size_t(n) * size_t(a.heads / run) < 2 * size_t(pool.size())) run /= 2;
  const size_t runs = size_t(a.heads / run), per_thread = attend_scratch(run, pos0 + n);
  std::vector<float> scratch(size_t(pool.size()) * per_thread);
  pool.parallel_for(size_t(n) * runs, [&](size_t begin, size_t end, int t) {
    float* scores = scratch.data() + size_t(t) * per_thread;
    for (size_t task = begin; task < end; ++task) {
      const int i = int(task / runs), h0 = int(task % runs) * run;
      const int pos = pos0 + i, lo = first_visible(pos, a.sliding_window);
      s.attend(layer, h0 / group, q_all + size_t(i) * q_stride + size_t(h0) * size_t(hd), run, lo, pos - lo + 1, scale,
               scores, out + size_t(i) * out_stride + size_t(h0) * size_t(hd));
    }
  });
}

}  // namespace

void causal_attention(const float* q, size_t q_stride, KVSession& s, int layer, int n, int pos0,
                      const AttentionShape& a, float* out, size_t out_stride) {
  if (n <= 4) {
    attention_rows(q, q_stride, s, layer, n, pos0, a, out, out_stride);
    return;
  }
  // Per head: S = Q_h K_hᵀ over the whole cache (one GEMM), causal mask + softmax by rows, O_h = S V_h.
  const int group = a.heads / a.kv_heads, hd = a.head_dim;
  const int len = pos0 + n;  // keys visible to the last query
  const float scale = 1.0f / std::sqrt(float(hd));
  ThreadPool& pool = default_thread_pool();
  // Kept between calls (calibration makes thousands of prefill calls; a fresh buffer was page faults
  // and clearing): every entry of the n x len block is written below before it is read.
  // (A thread_local named in the workers' lambda would be each worker's own: go through a reference.)
  thread_local std::vector<float> scores_buffer;
  std::vector<float>& scores = scores_buffer;
  scores.resize(size_t(n) * size_t(len));
  // Each KV head's keys and values as float32 rows (its cache stores keys in blocks, maybe as f16),
  // then its query heads' GEMMs.
  thread_local std::vector<float> kv_buffer;
  std::vector<float>& kv = kv_buffer;
  kv.resize(2 * size_t(len) * size_t(hd));
  float* const keys = kv.data();
  float* const values = kv.data() + size_t(len) * size_t(hd);
  for (int h = 0; h < a.heads; ++h) {
    const int kvh = h / group;
    if (h % group == 0) s.unpack(layer, kvh, len, keys, values);
    gemm_f32_strided(q + size_t(h) * size_t(hd), q_stride, keys, size_t(hd),
                     /*b_transposed=*/true, scores.data(), size_t(len), size_t(n), size_t(len), size_t(hd));
    pool.parallel_for(size_t(n), [&](size_t b, size_t e, int) {
      for (size_t i = b; i < e; ++i) {
        float* row = &scores[i * size_t(len)];
        const int pos = pos0 + int(i), lo = first_visible(pos, a.sliding_window);
        float mx = -INFINITY;
        for (int j = lo; j <= pos; ++j) mx = std::max(mx, row[j] * scale);
        float sum = 0;
        for (int j = lo; j <= pos; ++j) {
          row[j] = std::exp(row[j] * scale - mx);
          sum += row[j];
        }
        const float inv = 1.0f / sum;
        std::fill(row, row + lo, 0.0f);
        for (int j = lo; j <= pos; ++j) row[j] *= inv;
        std::fill(row + pos + 1, row + len, 0.0f);
      }
    });
    gemm_f32_strided(scores.data(), size_t(len), values, size_t(hd),
                     /*b_transposed=*/false, out + size_t(h) * size_t(hd), out_stride, size_t(n), size_t(hd),
                     size_t(len));
  }
}

}  // namespace lowbit
