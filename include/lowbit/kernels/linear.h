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
// The int8 product has a scalar reference (gemm_q8_dyn_ref) and an AVX-512 VNNI version, picked
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
};

struct LinearWeights {
  int64_t rows = 0, cols = 0;     // out, in
  std::vector<float> f32;         // [rows][cols] (float)
  std::vector<float> q8_scale;    // [rows] (int8-dyn, w8a8, LLM.int8())
  std::vector<int32_t> q8_rowsum;  // Σ_k q8[r][k], for the unsigned-activation form of VNNI
  // The int8 weights q8[r][k] laid out for vpdpbusd: blocks of 16 rows; per block and per 4 inputs,
  // 64 bytes holding those 4 inputs of each of the 16 rows. Rows padded to 16 and inputs to 4 with
  // zeros. The only copy (q8_at reads one weight): a row-major one beside it doubled the memory.
  std::vector<int8_t> q8_vnni;
  float act_scale = 0;                 // int8: > 0 a static per-tensor activation scale; 0 per row (dynamic)
  std::vector<int32_t> outlier_cols;   // int8: ascending inputs computed in float (LLM.int8())
  std::vector<float> outlier_w;        // [rows][outlier_cols.size()]
  std::vector<PackedSegment> packed;  // [rows] split over segments (packed)
  // Packed and split over its inputs (split_columns): `packed` then holds one segment per part, all
  // rows of columns [col_parts[p], col_parts[p + 1]); empty: `packed` holds row segments.
  std::vector<int64_t> col_parts;

  bool is_packed() const { return !packed.empty(); }
  bool is_int8() const { return !q8_vnni.empty(); }
  int64_t rows_padded() const { return (rows + 15) / 16 * 16; }
  int64_t cols_padded() const { return (cols + 3) / 4 * 4; }
  int8_t q8_at(int64_t r, int64_t c) const {  // int8 weight of row r, input c (r < rows, c < cols)
    return q8_vnni[size_t((((r / 16) * (cols_padded() / 4) + c / 4) * 16 + r % 16) * 4 + c % 4)];
  }
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
// Quantizes one row: xq[k] + 128 as unsigned bytes (xq in [-127, 127]); returns the row's scale.
float quantize_row_q8_dyn(const float* x, size_t k, uint8_t* u8);
// The same with a static scale: xq = clamp(round(x / scale), -127, 127) (half away from zero).
void quantize_row_q8_static(const float* x, size_t k, float scale, uint8_t* u8);
// acc[i][r] = Σ_k u8[i][k] · q8[r][k] for i < m and rows [r0, r1) (r0, r1 multiples of 16 or r1 = rows).
// u8 rows have stride w.cols_padded() (bytes past cols are ignored: the padded weights are zero);
// acc rows have stride w.rows_padded().
using GemmQ8Fn = void (*)(const uint8_t* u8, size_t m, const LinearWeights& w, size_t r0, size_t r1, int32_t* acc);
void gemm_q8_dyn_ref(const uint8_t* u8, size_t m, const LinearWeights& w, size_t r0, size_t r1, int32_t* acc);
void gemm_q8_dyn_avx512vnni(const uint8_t* u8, size_t m, const LinearWeights& w, size_t r0, size_t r1, int32_t* acc);
// The variant linear_forward uses on this CPU, and its name ("avx512vnni" or "ref").
GemmQ8Fn gemm_q8_dyn_best();
const char* gemm_q8_dyn_best_name();

}  // namespace lowbit
