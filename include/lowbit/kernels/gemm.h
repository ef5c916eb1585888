#pragma once
// Float32 matrix products for the reference (unquantized) forward pass, through BLAS.
#include <cstddef>

namespace lowbit {

// C[m][n] = A[m][k] · W[n][k]ᵀ (+ C when accumulate): a linear layer applied to m rows of input,
// W stored [out, in] as in Hugging Face checkpoints. Row-major, contiguous.
void gemm_f32_nt(const float* a, const float* w, float* c, size_t m, size_t n, size_t k, bool accumulate = false);

// C[m][n] (row stride ldc) = A[m][k] (row stride lda) · B, where B is W[n][k]ᵀ (b_transposed, row
// stride ldb) or B[k][n] (row stride ldb): for sub-matrices of interleaved buffers (attention heads).
void gemm_f32_strided(const float* a, size_t lda, const float* b, size_t ldb, bool b_transposed, float* c, size_t ldc,
                      size_t m, size_t n, size_t k);

// BLAS itself runs single-threaded; the calls above split their work over default_thread_pool().
// (Kept for callers that set threads: the pool's size is what counts.)
void set_blas_threads(int threads);

// Debian 12's OpenBLAS (0.3.21) does not recognise newer Intel cores (Sapphire Rapids among them)
// and falls back to its SSE3 "Prescott" kernels: float GEMMs 2-3x slower than its AVX-512 ones. It
// picks its kernels when the library loads, before main, from OPENBLAS_CORETYPE. Called first thing
// in main(): when that variable is unset and the kernels chosen are below what this CPU runs
// (SkylakeX for AVX-512 F/CD/BW/DQ/VL, Haswell for AVX2 + FMA), sets it and re-executes the program
// (/proc/self/exe, same arguments); if that fails, carries on with the slow kernels. A user's own
// OPENBLAS_CORETYPE is left alone.
void select_blas_kernels(char** argv);
// The kernels OpenBLAS runs ("SkylakeX", "Haswell", "Prescott", ...).
const char* blas_core_name();

}  // namespace lowbit
