// Float32 GEMMs through BLAS, one BLAS thread per worker of lowbit's own pool: BLAS runs
// single-threaded (its idle threads would otherwise spin against the pool's on a small machine) and
// each call is split into row blocks (or, for few rows, column blocks) across the pool.
#include <cblas.h>

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <mutex>
#include <string_view>

#include "lowbit/core/thread_pool.h"
#include "lowbit/kernels/gemm.h"

namespace lowbit {

const char* blas_core_name() { return openblas_get_corename(); }

void select_blas_kernels(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE")) return;
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("avx512vl");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const std::string_view core = blas_core_name();
  // The cores whose kernels already use what the CPU has (OpenBLAS's names, any case).
  auto is_one_of = [&](std::initializer_list<std::string_view> names) {
    for (std::string_view n : names)
      if (core.size() == n.size() && std::equal(core.begin(), core.end(), n.begin(), [](char a, char b) {
            return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
          }))
        return true;
    return false;
  };
  const char* want = nullptr;
  if (avx512 && !is_one_of({"skylakex", "cooperlake", "sapphirerapids"}))
    want = "SkylakeX";
  else if (!avx512 && avx2 && !is_one_of({"haswell", "zen", "skylakex", "cooperlake", "sapphirerapids"}))
    want = "Haswell";
  if (!want || setenv("OPENBLAS_CORETYPE", want, 1) != 0) return;
  execv("/proc/self/exe", argv);  // returns only on failure: keep going as we are
  unsetenv("OPENBLAS_CORETYPE");
}

namespace {

void blas_single_threaded() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

// Splits C[m][n] into one block per thread: by rows when there are enough, else by columns.
template <typename Block>
void split(size_t m, size_t n, size_t k, Block&& block) {
  blas_single_threaded();
  ThreadPool& pool = default_thread_pool();
  const size_t threads = size_t(pool.size());
  if (threads == 1 || m * n * k < (size_t(1) << 16)) {  // too small to be worth waking a thread
    block(0, m, 0, n);
  } else if (m >= 4 * threads) {
    pool.parallel_for(m, [&](size_t b, size_t e, int) { block(b, e, 0, n); });
  } else {
    const size_t chunks = (n + 15) / 16;  // column blocks of 16 keep rows of W contiguous per thread
    pool.parallel_for(chunks, [&](size_t b, size_t e, int) { block(0, m, b * 16, std::min(n, e * 16)); });
  }
}

}  // namespace

void gemm_f32_nt(const float* a, const float* w, float* c, size_t m, size_t n, size_t k, bool accumulate) {
  const float beta = accumulate ? 1.0f : 0.0f;
  split(m, n, k, [&](size_t m0, size_t m1, size_t n0, size_t n1) {
    if (m1 - m0 == 1) {  // one token (decode): y = W x
      cblas_sgemv(CblasRowMajor, CblasNoTrans, int(n1 - n0), int(k), 1.0f, w + n0 * k, int(k), a + m0 * k, 1, beta,
                  c + m0 * n + n0, 1);
      return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m1 - m0), int(n1 - n0), int(k), 1.0f, a + m0 * k, int(k),
                w + n0 * k, int(k), beta, c + m0 * n + n0, int(n));
  });
}

void gemm_f32_strided(const float* a, size_t lda, const float* b, size_t ldb, bool b_transposed, float* c, size_t ldc,
                      size_t m, size_t n, size_t k) {
  split(m, n, k, [&](size_t m0, size_t m1, size_t n0, size_t n1) {
    const float* bb = b_transposed ? b + n0 * ldb : b + n0;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, b_transposed ? CblasTrans : CblasNoTrans, int(m1 - m0), int(n1 - n0),
                int(k), 1.0f, a + m0 * lda, int(lda), bb, int(ldb), 0.0f, c + m0 * ldc + n0, int(ldc));
  });
}

void set_blas_threads(int) { blas_single_threaded(); }

}  // namespace lowbit
