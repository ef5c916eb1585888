#pragma once
// The weights of a linear layer as a model holds them, and y = x Wᵀ over them:
//   float:  W [rows = out][cols = in] float32, through BLAS;
//   packed: the stored weights themselves (usually inside the mmap'd checkpoint): float32/16,
//           bfloat16, or 8-/4-bit codes with group scales, computed on by the packed kernels
//           (packed.h) with no float copy of the matrix; a list of row segments, so that fused
//           projections (q|k|v, gate|up) stay separate tensors in the file;
//   int8 with dynamic activations ("int8-dyn", the seeds' dynamic quantization): W as int8 codes
//           with one float scale per output row; each input row is quantized to int8 at run time
//           (scale = absmax / 127), products accumulate in int32, and the result is rescaled:
//             y[i][r] = sx_i · sw_r · Σ_k xq[i][k] · wq[r][k]
//           with a static activation scale ("w8a8", calibrated: act_scale > 0) sx_i = act_scale for
//           every row, xq = clamp(round(x / act_scale), -127, 127); and with outlier columns
//           ("llm-int8"), those inputs are taken out of x before it is quantized and multiplied in
//           float32 by their own weights: y += x[:, outlier_cols] · outlier_wᵀ.
//           The weights are held once, as U8 segments (codes wq + 128) in the lanes layout (packed.h),
//           so that a decode step (one input row) runs on the same integer kernels as int8 / int4,
//           with one activation scale per token (PackedSegment::token_acts); several input rows run on
//           gemm_q8_dyn over the same bytes. A weight split over its columns (split_columns, the
//           split decode) quantizes each part's inputs with a scale of their own.
// The int8 GEMM has a scalar reference (gemm_q8_dyn_ref) and an AVX-512 VNNI version, picked
// once at start-up from the CPU's features; both give bit-identical results.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "lowbit/kernels/packed.h"

namespace lowbit {

// Rows of a packed linear weight, with what keeps its bytes alive (the mapped file, or owned
// buffers for scales and for weights that had to be converted).
struct PackedSegment {
  PackedMatrix m;
  const PackedKernels* kernels = nullptr;  // the variant that runs it (packed_kernels_best, or ref)
  bool q8 = false;  // decode steps run on the integer path (kernels->matmul_q8, int8 activations)
  std::shared_ptr<const void> keep;
  // int8-dyn / w8a8 / LLM.int8(): the integer path's activations take one scale per token (absmax /
  // 127, or the static act_scale > 0), not one per block of 64 (quantize_token_acts).
  bool token_acts = false;
  float act_scale = 0;
};

struct LinearWeights {
  int64_t rows = 0, cols = 0;     // out, in
  std::vector<float> f32;         // [rows][cols] (float)
  // int8-dyn, w8a8, LLM.int8(): activations quantized to int8 per token. The weights are `packed`:
  // one U8 segment per fused part (codes q8 + 128, zero 128, one group per row, float32 scales) in the
  // lanes layout (blocks of 16 rows; per block and 4 inputs, 64 bytes holding those 4 inputs of each
  // of the 16 rows; rows padded to 16 and inputs to 4 with code 0). The only copy (q8_at reads one
  // weight).
  bool int8_acts = false;
  std::vector<int32_t> outlier_cols;   // int8: ascending inputs computed in float (LLM.int8())
  std::vector<float> outlier_w;        // [rows][outlier_cols.size()]
  std::vector<PackedSegment> packed;  // [rows] split over segments (packed)
  // Packed and split over its inputs (split_columns): `packed` then holds one segment per part, all
  // rows of columns [col_parts[p], col_parts[p + 1]); empty: `packed` holds row segments.
  std::vector<int64_t> col_parts;

  bool is_packed() const { return !packed.empty() && !int8_acts; }  // weights-only quantized / float, packed
  bool is_int8() const { return int8_acts; }
  int64_t rows_padded() const { return (rows + 15) / 16 * 16; }
  int64_t cols_padded() const { return (cols + 3) / 4 * 4; }
  // int8: > 0 a static per-tensor activation scale (w8a8); 0 one per input row (dynamic). Held by the
  // segments (PackedSegment::act_scale), which the decode kernels read.
  float act_scale() const { return packed.empty() ? 0.0f : packed.front().act_scale; }
  void set_act_scale(float s);
  int8_t q8_at(int64_t r, int64_t c) const;  // int8 weight of row r, input c (not split over its columns)
  float q8_scale_at(int64_t r) const;        // int8: row r's scale
  uint64_t bytes() const;  // what one pass of the kernels reads (weights, scales)
  // Stacks `other`'s rows under these (fused projections); both of one kind and width.
  void append_rows(const LinearWeights& other);
  static LinearWeights from_f32(std::vector<float> w, int64_t rows, int64_t cols);
  static LinearWeights from_q8(std::vector<int8_t> q, std::vector<float> scale, int64_t rows, int64_t cols);
  // The same from codes stored as q + 128 (8-bit symmetric checkpoints), read where they lie.
  static LinearWeights from_q8_codes(const uint8_t* codes, std::vector<float> scale, int64_t rows, int64_t cols);
  // A packed matrix; `keep` owns (or keeps mapped) everything m points to.
  static LinearWeights from_packed(const PackedMatrix& m, std::shared_ptr<const void> keep);
  // This matrix (one packed segment in the lanes layout) as parts over columns [0, b1), [b1, b2), ...,
  // [bn, cols) for inner bounds 0 < b1 < ... < cols on its groups: a product split over the threads by
  // its inputs reads one part per thread, each its own stream (LlamaModel's decode). The parts are
  // copies; this matrix may be dropped.
  LinearWeights split_columns(const std::vector<int64_t>& bounds) const;
  // Row r as float32 (embedding look-ups): out[cols].
  void row_f32(int64_t r, float* out) const;
};

// One token x[k] quantized for seg's integer path (kernels->matmul_q8): its group, its variant's
// quantize_acts (the reference where it has none); the wide form (int16) for a code book.
void quantize_token_acts(const PackedSegment& seg, const float* x, size_t k, QActs& out);
// Asks for every 64-byte line of [p, p + bytes) at once (T0), and for all of a's lines: data another
// core has just written, read in a kernel's order one line at a time as it needs them, is a miss in
// that core's cache after another (on this VM ~300-600 ns each with the two vCPUs on different dies);
// asked for together, the misses overlap.
void prefetch_lines(const void* p, size_t bytes);
void prefetch_acts(const QActs& a);

// Whether from_packed re-lays eligible U8 / U4 matrices for the integer path into the lanes layout
// (PackedMatrix::lanes; LOWBIT_LAYOUT=rows keeps them row-major, for comparisons).
bool packed_lanes_enabled();

// y[m][rows] = x[m][cols] · Wᵀ (+ y when accumulate). x and y must not overlap (the threads read x,
// some of them quantizing it, while others already write y).
void linear_forward(const LinearWeights& w, const float* x, size_t m, float* y, bool accumulate = false);

// The int8-dyn product's pieces, exposed for the conformance test and benchmarks.
// Quantizes one row to xq in [-127, 127]; returns the row's scale (absmax / 127).
float quantize_row_q8_dyn(const float* x, size_t k, int8_t* xq);
// The same with a static scale: xq = clamp(round(x / scale), -127, 127) (half away from zero).
void quantize_row_q8_static(const float* x, size_t k, float scale, int8_t* xq);
// acc[i * ldc + r] = Σ_c xq[i * lda + c] · code[r][c] for i < m and rows [r0, r1) of w (r0 a multiple of
// 16), w an int8 segment (LinearWeights::int8_acts: U8 codes q8 + 128 in the lanes layout, inputs
// padded to 4 with code 0, so the activations' padding never counts). The caller subtracts
// 128 · Σ_c xq[i][c] for Σ xq · q8.
using GemmQ8Fn = void (*)(const int8_t* xq, size_t m, size_t lda, const PackedMatrix& w, size_t r0, size_t r1,
                          int32_t* acc, size_t ldc);
void gemm_q8_dyn_ref(const int8_t* xq, size_t m, size_t lda, const PackedMatrix& w, size_t r0, size_t r1, int32_t* acc,
                     size_t ldc);
void gemm_q8_dyn_avx512vnni(const int8_t* xq, size_t m, size_t lda, const PackedMatrix& w, size_t r0, size_t r1,
                            int32_t* acc, size_t ldc);
// The variant linear_forward uses on this CPU, and its name ("avx512vnni" or "ref").
GemmQ8Fn gemm_q8_dyn_best();
const char* gemm_q8_dyn_best_name();

}  // namespace lowbit
