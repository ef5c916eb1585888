#include "lowbit/models/attention.h"

#include <algorithm>
#include <cmath>

#include "lowbit/core/error.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/kernels/attention.h"
#include "lowbit/kernels/gemm.h"

namespace lowbit {

KVSession::KVSession(int layers, int capacity, int kv_heads, int head_dim) : kv_heads_(kv_heads), head_dim_(head_dim) {
  capacity_ = capacity;
  k_.resize(size_t(layers) * size_t(capacity) * size_t(kv_heads) * size_t(head_dim));
  v_.resize(k_.size());
}

void KVSession::store(int layer, int pos, const float* k, const float* v) {
  for (int h = 0; h < kv_heads_; ++h) {
    std::copy_n(k + size_t(h) * size_t(head_dim_), head_dim_, k_at(layer, h, pos));
    std::copy_n(v + size_t(h) * size_t(head_dim_), head_dim_, v_at(layer, h, pos));
  }
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
  const size_t runs = size_t(a.heads / run);
  const AttendFn attend = attend_best(hd);
  std::vector<float> scratch(size_t(pool.size()) * size_t(run) * size_t(pos0 + n));
  pool.parallel_for(size_t(n) * runs, [&](size_t begin, size_t end, int t) {
    float* scores = scratch.data() + size_t(t) * size_t(run) * size_t(pos0 + n);
    for (size_t task = begin; task < end; ++task) {
      const int i = int(task / runs), h0 = int(task % runs) * run;
      const int pos = pos0 + i, kvh = h0 / group, lo = first_visible(pos, a.sliding_window);
      attend(q_all + size_t(i) * q_stride + size_t(h0) * size_t(hd), run, hd, s.k_at(layer, kvh, lo),
             s.v_at(layer, kvh, lo), size_t(hd), pos - lo + 1, scale, scores,
             out + size_t(i) * out_stride + size_t(h0) * size_t(hd));
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
  for (int h = 0; h < a.heads; ++h) {
    const int kvh = h / group;
    gemm_f32_strided(q + size_t(h) * size_t(hd), q_stride, s.k_at(layer, kvh, 0), size_t(hd),
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
    gemm_f32_strided(scores.data(), size_t(len), s.v_at(layer, kvh, 0), size_t(hd),
                     /*b_transposed=*/false, out + size_t(h) * size_t(hd), out_stride, size_t(n), size_t(hd),
                     size_t(len));
  }
}

}  // namespace lowbit
