#include <cblas.h>

#include "lowbit/kernels/gemm.h"

namespace lowbit {

void gemm_f32_nt(const float* a, const float* w, float* c, size_t m, size_t n, size_t k, bool accumulate) {
  const float beta = accumulate ? 1.0f : 0.0f;
  if (m == 1) {  // one token (decode): y = W x
    cblas_sgemv(CblasRowMajor, CblasNoTrans, int(n), int(k), 1.0f, w, int(k), a, 1, beta, c, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(n), int(k), 1.0f, a, int(k), w, int(k), beta, c,
              int(n));
}

void gemm_f32_strided(const float* a, size_t lda, const float* b, size_t ldb, bool b_transposed, float* c, size_t ldc,
                      size_t m, size_t n, size_t k) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, b_transposed ? CblasTrans : CblasNoTrans, int(m), int(n), int(k), 1.0f, a,
              int(lda), b, int(ldb), 0.0f, c, int(ldc));
}

void set_blas_threads(int threads) {
  if (threads > 0) openblas_set_num_threads(threads);
}

}  // namespace lowbit
