#pragma once
// Matrix products straight on stored weights ("packed": the bytes of the checkpoint, usually inside
// its mmap'd safetensors file), with no float copy of the matrix ever made:
//   F32 / F16 / BF16   float weights as stored;
//   U8                 8-bit codes, one byte each:  w = (code - zero) * scale[g] + offset[g]
//   U4                 4-bit codes, two per byte (low nibble first, format.h's bit streams):
//                      w = lut[code] * scale[g] + offset[g]
// where g is the group of the input column (groups of `group` inputs along a row; the last one of a
// row may be shorter) and offset is absent (0) for symmetric formats. One U4 kernel covers affine
// int4 (lut = 0..15 and offset = min), symmetric int4 (lut = code - 8) and NF4 / FP4 (lut = code
// book, scale = block absmax).
//
// Each variant (ref: the scalar oracle; avx2; avx512) lives in its own file under src/kernels/ and
// is chosen once at start-up from the CPU's features (packed_kernels_best). A vector variant takes a
// matrix when its groups are whole vector chunks (group a multiple of 32 inputs, or one group per row)
// and hands any other to the reference.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "lowbit/core/aligned.h"
#include "lowbit/core/dtype.h"

namespace lowbit {

enum class PackedKind : uint8_t { F32, F16, BF16, U8, U4 };
const char* packed_kind_name(PackedKind k);

struct PackedMatrix {
  PackedKind kind = PackedKind::F32;
  int64_t rows = 0, cols = 0;
  const uint8_t* data = nullptr;  // row r starts at data + r * row_bytes
  size_t row_bytes = 0;
  // U8 / U4 only:
  int64_t group = 0;  // inputs per group (>= 1; cols for one group per row)
  // Per group scale and offset, [rows][groups()], each float32 or float16 (the checkpoint's own F16
  // parts, read where the file maps them: half the bytes per group of a float32 copy): exactly one
  // of scale / scale_f16 is set; neither offset nor offset_f16 means no offset.
  const float* scale = nullptr;
  const float* offset = nullptr;
  const uint16_t* scale_f16 = nullptr;
  const uint16_t* offset_f16 = nullptr;
  int zero = 0;                   // U8: the code of 0
  float lut[16] = {};             // U4: the value of each code, before scaling

  // U8, and U4 whose table is lut[c] = c - z: the integer zero z (then the codes can meet int8
  // activations in integer dot products); -1 otherwise (NF4, FP4). Set by int_zero_of().
  int int_zero = -1;

  // U8 / U4, "lanes" layout (relayout_lanes): rows in blocks of 16, each
  // block's codes as 64-byte units in which row l of the block owns bytes 4l..4l+3: U8 units hold 4
  // columns (byte t = column 4j + t), U4 units 8 (byte t = column 8j + t in its low nibble and
  // 8j + 4 + t in its high one). A register of one unit then holds 16 rows in its 16 lanes, and
  // vpdpbusd against 4 broadcast activations sums 16 rows at once with no per-row reduction, one
  // ascending stream of bytes per block (row-major 4-row tiles read four streams, which this
  // machine's prefetchers follow poorly). Scales and offsets are then [block][group][lanes_pstride];
  // rows past `rows` in the last block have code 0, scale 0 and offset 0. data is the first block;
  // row_bytes stays the row-major one.
  bool lanes = false;
  // Lanes layout: elements from one group's 16 parameters to the next group's. 16, or 32 where a
  // scale and an offset of one type are interleaved (offset = scale + 16: a group's 16 scales and 16
  // offsets in one 64-byte line at f16), so that a decode thread streams codes and one parameter
  // array, not two.
  int64_t lanes_pstride = 16;

  int64_t groups() const { return group > 0 ? (cols + group - 1) / group : 1; }
  float scale_at(size_t i) const { return scale_f16 ? f16_to_f32(scale_f16[i]) : scale[i]; }
  bool has_offset() const { return offset != nullptr || offset_f16 != nullptr; }
  float offset_at(size_t i) const { return offset_f16 ? f16_to_f32(offset_f16[i]) : offset ? offset[i] : 0.0f; }
  // Bytes one pass over the matrix reads (codes and scales).
  uint64_t bytes() const;
  // Where the scale / offset of row r, group g is (either layout).
  // Columns per 64-byte unit of the lanes layout.
  int64_t unit_cols() const { return kind == PackedKind::U4 ? 8 : 4; }
  size_t param_index(int64_t r, int64_t g) const {
    return lanes ? size_t(((r / 16) * groups() + g) * lanes_pstride + r % 16) : size_t(r * groups() + g);
  }
};

// Matrices the lanes layout takes: U8 with its integer table and U4 with any (integer tables go
// through the integer path; NF4 / FP4 code books through a float kernel that looks codes up 16 rows
// at a time), whole 64-column blocks (cols % 64 == 0) and groups of whole blocks (or one group per
// row).
bool lanes_eligible(const PackedMatrix& w);
// What a relaid matrix points to: codes, and scales / offsets in the source's own float type.
// (Aligned to 64 bytes, large ones to 2 MB with huge pages advised: core/aligned.h.)
struct PackedLanes {
  stream_vector<uint8_t> codes;
  stream_vector<uint16_t> scale_f16, offset_f16;  // offset_f16 empty where interleaved into scale_f16
  stream_vector<float> scale, offset;              // (the same for float32)
};
// w (row-major, lanes_eligible) re-laid into `out`: the same matrix in the lanes layout, pointing
// into out. Rows are split over the thread pool.
PackedMatrix relayout_lanes(const PackedMatrix& w, PackedLanes& out);

// Columns [c0, c1) of a lanes matrix as a lanes matrix of its own, copied into `out` (codes and
// parameters; c0, c1 on group and 64-column boundaries, or c1 = cols). One group per row stays one
// group per row (the part's width). For splitting a product over its inputs (LinearWeights::split_columns).
PackedMatrix lanes_columns(const PackedMatrix& w, int64_t c0, int64_t c1, PackedLanes& out);

// Rows [r0, r1) of a lanes matrix (r0 on a 16-row block; r1 on one or = rows) as a lanes matrix of
// its own whose codes and parameters are copied to memory the caller gives: `codes` gets
// lanes_rows_bytes().codes bytes, `params` .params (64-byte aligned, each parameter array from a
// 64-byte boundary). For laying out one thread's rows of many matrices one after another
// (LlamaModel's split decode: one stream per thread).
struct LanesBytes {
  size_t codes = 0, params = 0;
};
LanesBytes lanes_rows_bytes(const PackedMatrix& w, int64_t r0, int64_t r1);
PackedMatrix lanes_rows_into(const PackedMatrix& w, int64_t r0, int64_t r1, uint8_t* codes, uint8_t* params);

// Computes PackedMatrix::int_zero from kind, zero and lut.
int int_zero_of(const PackedMatrix& w);

// Activations quantized to int8 for the integer path ("q8 activations"; llama.cpp quantizes
// activations the same way in blocks of 32): one scale per token and block of 64 columns,
//   scale_k = absmax / 127,  q = round(x / scale_k) in [-127, 127] (half away from zero),
// so that, for weight group g made of blocks k,
//   Σ_c W[r][c] x[c] ≈ Σ_g [ s_g·Σ_k scale_k·(Σ_{c∈k} code_c q_c) − z·s_g·zsum_g + offset_g·sum_x_g ]
// with zsum_g = Σ_{k∈g} scale_k·Σ_{c∈k} q_c and the exact float sum_x_g = Σ_{c∈g} x_c; the sums over a
// block are exact int32. (One scale per whole row, int8-dyn's choice, is too coarse for models with
// outlier channels: DistilBERT's logits moved by 40%.)
struct QActs {
  static constexpr int64_t kBlock = 64;
  static constexpr int64_t kChunk = 128;  // nibble_order's unit
  size_t m = 0;
  int64_t cols = 0, group = 0, groups = 0, blocks = 0, stride = 0;  // stride = blocks * 64 (zero padded)
  // U4: each chunk of 128 columns holds its 64 even columns, then its 64 odd ones (the low and the
  // high nibbles of the chunk's 64 code bytes); stride and blocks are then padded to whole chunks
  // (a padding block has scale 0 and zero q).
  bool nibble_order = false;
  std::vector<int8_t> q;      // [m][stride]
  std::vector<float> scale;   // [m][blocks]
  std::vector<float> zsum, sum_x;  // [m][groups]
  int8_t at(size_t i, int64_t c) const;  // q of token i, column c (undoing nibble_order)

  // The wide form, for U4 code books (NF4, FP4: tables no integer reproduces) in the lanes layout:
  // int16 activations, scale_k = absmax / kWideMax, q16 = round(x / scale_k) in [-kWideMax,
  // kWideMax], against the table as int16 (code_book_i16: lut ≈ lut16·f), so that
  //   Σ_c W[r][c] x[c] ≈ Σ_g [ s_g·Σ_k (scale_k·f)·(Σ_{c∈k} lut16[code_c]·q16_c) + offset_g·sum_x_g ].
  // |lut16| ≤ 8191 and |q16| ≤ 4095 keep a block's 64 products within int32 (vpdpwssd sums them).
  // Rounding: 6e-5 of the table's largest entry per weight (the same for every weight of a code),
  // 1.2e-4 of the block's largest activation per activation; int8 activations (1/254) would be 30x
  // coarser. Within each 8 columns (a lanes unit) q16 holds columns 0 2 4 6 1 3 5 7: the pairs
  // (0, 2) (4, 6) (1, 3) (5, 7) that vpdpwssd multiplies against the unit's codes looked up at
  // nibble shifts 0, 4, 8, 12 of each 16-bit half. q and zsum are left empty / zero.
  static constexpr int kWideMax = 4095;
  bool wide = false;
  std::vector<int16_t> q16;   // [m][stride]
  int16_t at16(size_t i, int64_t c) const;  // q16 of token i, column c (undoing the pair order)
};
// x[i * ldx + c] for i < m, c < cols -> out; `group`: the weights' group (a multiple of 64, or >= cols).
// The reference; PackedKernels::quantize_acts is the fastest the variant has.
void quantize_acts(const float* x, size_t m, size_t ldx, int64_t cols, int64_t group, bool nibble_order, QActs& out);
// Sizes and zeroes `out` for m tokens of `cols` (checks the group): the part every variant shares.
void prepare_acts(size_t m, int64_t cols, int64_t group, bool nibble_order, QActs& out);
// The wide form (QActs::wide; cols a multiple of 8): the reference, and its sizing.
void quantize_acts_wide(const float* x, size_t m, size_t ldx, int64_t cols, int64_t group, QActs& out);
void prepare_acts_wide(size_t m, int64_t cols, int64_t group, QActs& out);
// A U4 code book's table as int16 for the wide form: out[c] = round(lut[c]·8191 / max|lut|) (half
// away from zero); returns f = max|lut| / 8191 (0 for an all-zero table).
constexpr int kCodeBookI16Max = 8191;
float code_book_i16(const PackedMatrix& w, int16_t out[16]);
// Whether w is a U4 code book (int_zero < 0: no integer path of its own).
inline bool is_code_book(const PackedMatrix& w) { return w.kind == PackedKind::U4 && w.int_zero < 0; }

struct PackedKernels {
  const char* name;
  // Whether this variant takes `w` (the reference takes everything).
  bool (*supports)(const PackedMatrix& w);
  // y[i * ldy + (r - r0)] (= or +=) Σ_c W[r][c] · x[i * ldx + c] for i < m, r in [r0, r1).
  void (*matvec)(const PackedMatrix& w, const float* x, size_t m, size_t ldx, int64_t r0, int64_t r1, float* y,
                 size_t ldy, bool accumulate);
  // out[(r - r0) * cols + c] = W[r][c] for r in [r0, r1): a tile of rows as float32 (for prefill).
  void (*dequant)(const PackedMatrix& w, int64_t r0, int64_t r1, float* out);
  // The integer path (nullptr where a variant has none): whether it takes w (int_zero >= 0 and
  // groups it can step through, or a code book the variant takes wide activations for), and
  // y[i * ldy + (r - r0)] (= or +=) the q8-activation product above (wide for code books).
  bool (*supports_q8)(const PackedMatrix& w) = nullptr;
  void (*matmul_q8)(const PackedMatrix& w, const QActs& a, int64_t r0, int64_t r1, float* y, size_t ldy,
                    bool accumulate) = nullptr;
  // quantize_acts for matmul_q8: q, scale and zsum bit for bit as the reference's; sum_x within
  // float rounding (summed in another order). nullptr: the reference.
  void (*quantize_acts)(const float* x, size_t m, size_t ldx, int64_t cols, int64_t group, bool nibble_order,
                        QActs& out) = nullptr;
  // Whether every entry point takes the lanes layout (PackedMatrix::lanes; the reference does, with
  // activations in natural order for matmul_q8).
  bool takes_lanes = false;
  // quantize_acts_wide, bit for bit as the reference's q16 and scale (nullptr: the reference).
  void (*quantize_acts_wide)(const float* x, size_t m, size_t ldx, int64_t cols, int64_t group, QActs& out) = nullptr;
};

const PackedKernels& packed_kernels_ref();
const PackedKernels& packed_kernels_avx2();
const PackedKernels& packed_kernels_avx512();
const PackedKernels& packed_kernels_avx512vnni();  // avx512 plus the integer path
// Whether the CPU can run a variant ("ref", "avx2", "avx512").
bool packed_kernels_available(const PackedKernels& k);
bool packed_q8_activations_enabled();
// The fastest variant this CPU runs (LOWBIT_KERNELS=ref|avx2|avx512|avx512vnni forces one it can
// run). LOWBIT_ACTIVATIONS=f32 turns the integer path off (weights-only quantization, float
// activations, everywhere); the default q8 uses it where the variant supports the matrix.
const PackedKernels& packed_kernels_best();

// Reference pieces the vector variants share for the parts they leave scalar.
float packed_value(const PackedMatrix& w, int64_t r, int64_t c);  // W[r][c]
uint8_t packed_code(const PackedMatrix& w, const uint8_t* row, int64_t c);  // U8 / U4 code of column c (row-major)
uint8_t packed_code_at(const PackedMatrix& w, int64_t r, int64_t c);  // U8 / U4 code of W[r][c], either layout

}  // namespace lowbit
