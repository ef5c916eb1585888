#include "lowbit/kernels/linear.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "lowbit/core/error.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/kernels/gemm.h"

namespace lowbit {

uint64_t LinearWeights::bytes() const {
  return f32.size() * 4 + q8.size() + q8_scale.size() * 4 + q8_rowsum.size() * 4 + q8_vnni.size();
}

namespace {

// q8 [rows][cols] -> q8_vnni (see linear.h).
void pack_vnni(LinearWeights& l) {
  const int64_t rp = l.rows_padded(), kq = l.cols_padded() / 4;
  l.q8_vnni.assign(size_t(rp * kq * 4), 0);
  for (int64_t r = 0; r < l.rows; ++r)
    for (int64_t c = 0; c < l.cols; ++c) {
      const int64_t block = r / 16, lane = r % 16, quad = c / 4, byte = c % 4;
      l.q8_vnni[size_t(((block * kq + quad) * 16 + lane) * 4 + byte)] = l.q8[size_t(r * l.cols + c)];
    }
}

}  // namespace

LinearWeights LinearWeights::from_f32(std::vector<float> w, int64_t rows, int64_t cols) {
  LinearWeights l;
  l.rows = rows;
  l.cols = cols;
  l.f32 = std::move(w);
  return l;
}

LinearWeights LinearWeights::from_q8(std::vector<int8_t> q, std::vector<float> scale, int64_t rows, int64_t cols) {
  LinearWeights l;
  l.rows = rows;
  l.cols = cols;
  l.q8 = std::move(q);
  l.q8_scale = std::move(scale);
  l.q8_rowsum.assign(size_t(rows), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) l.q8_rowsum[size_t(r)] += l.q8[size_t(r * cols + c)];
  pack_vnni(l);
  return l;
}

void LinearWeights::append_rows(const LinearWeights& o) {
  if (rows == 0) {
    *this = o;
    return;
  }
  if (o.cols != cols || o.is_int8() != is_int8())
    fail("fusing linear layers of different widths or kinds ({} vs {} columns)", cols, o.cols);
  rows += o.rows;
  f32.insert(f32.end(), o.f32.begin(), o.f32.end());
  q8.insert(q8.end(), o.q8.begin(), o.q8.end());
  q8_scale.insert(q8_scale.end(), o.q8_scale.begin(), o.q8_scale.end());
  q8_rowsum.insert(q8_rowsum.end(), o.q8_rowsum.begin(), o.q8_rowsum.end());
  if (is_int8()) pack_vnni(*this);
}

float quantize_row_q8_dyn(const float* x, size_t k, uint8_t* u8) {
  float absmax = 0;
  for (size_t i = 0; i < k; ++i) absmax = std::max(absmax, std::fabs(x[i]));
  const float scale = absmax / 127.0f;
  const float inv = absmax > 0 ? 127.0f / absmax : 0.0f;
  for (size_t i = 0; i < k; ++i) {
    const float v = x[i] * inv;                          // in [-127, 127]
    const int q = int(v + (v >= 0 ? 0.5f : -0.5f));      // round half away from zero (vectorizes)
    u8[i] = uint8_t(std::clamp(q, -127, 127) + 128);
  }
  return scale;
}

void gemm_q8_dyn_ref(const uint8_t* u8, size_t m, const LinearWeights& w, size_t r0, size_t r1, int32_t* acc) {
  const size_t k = size_t(w.cols), lda = size_t(w.cols_padded()), ldc = size_t(w.rows_padded());
  for (size_t i = 0; i < m; ++i)
    for (size_t r = r0; r < r1; ++r) {
      int32_t s = 0;
      for (size_t c = 0; c < k; ++c) s += int32_t(u8[i * lda + c]) * int32_t(w.q8[r * k + c]);
      acc[i * ldc + r] = s;
    }
}

GemmQ8Fn gemm_q8_dyn_best() {
  static const GemmQ8Fn fn = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vnni"))
      return &gemm_q8_dyn_avx512vnni;
    return &gemm_q8_dyn_ref;
  }();
  return fn;
}

const char* gemm_q8_dyn_best_name() { return gemm_q8_dyn_best() == &gemm_q8_dyn_ref ? "ref" : "avx512vnni"; }

void linear_forward(const LinearWeights& w, const float* x, size_t m, float* y, bool accumulate) {
  if (!w.is_int8()) {
    gemm_f32_nt(x, w.f32.data(), y, m, size_t(w.rows), size_t(w.cols), accumulate);
    return;
  }
  const size_t k = size_t(w.cols), rows = size_t(w.rows), lda = size_t(w.cols_padded());
  const size_t ldc = size_t(w.rows_padded());
  std::vector<uint8_t> u8(m * lda, 128);
  std::vector<float> sx(m);
  ThreadPool& pool = default_thread_pool();
  pool.parallel_for(m, [&](size_t b, size_t e, int) {
    for (size_t i = b; i < e; ++i) sx[i] = quantize_row_q8_dyn(x + i * k, k, &u8[i * lda]);
  });
  std::unique_ptr<int32_t[]> acc(new int32_t[m * ldc]);  // every used element is written by the kernel
  const GemmQ8Fn gemm = gemm_q8_dyn_best();
  // Output rows split over the threads in blocks of 16 (one VNNI register of outputs).
  const size_t blocks = ldc / 16;
  pool.parallel_for(blocks, [&](size_t b, size_t e, int) {
    gemm(u8.data(), m, w, b * 16, std::min(rows, e * 16), acc.get());
  });
  // (u8 - 128) · q = u8 · q - 128 Σq, then both scales.
  pool.parallel_for(m, [&](size_t b, size_t e, int) {
    for (size_t i = b; i < e; ++i)
      for (size_t r = 0; r < rows; ++r) {
        const float v = sx[i] * w.q8_scale[r] * float(acc[i * ldc + r] - 128 * w.q8_rowsum[r]);
        y[i * rows + r] = accumulate ? y[i * rows + r] + v : v;
      }
  });
}

}  // namespace lowbit
