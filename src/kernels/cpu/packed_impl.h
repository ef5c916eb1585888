#pragma once
// The vector packed-weight kernels, written once over an ISA description V and included by one file
// per ISA (packed_avx2.cpp, packed_avx512.cpp), each compiled with its own -m flags. Everything here
// has internal linkage so that the two copies never meet at link time.
//
// V provides: vec (a register of kLanes floats), kChunk = 2 * kLanes (inputs per step), zero, load,
// add, mul, fmadd, set1, reduce (horizontal sum), store; Ctx (per-matrix constants: the U4 look-up table,
// the U8 zero); decode<K>(ctx, row, k, a, b): the values of step k of a row in two registers; and
// interleave(a, b, out): U4 registers back to column order (decode gives U4's even columns in a and
// odd columns in b, the order its nibbles come in, so U4 activations are permuted once per token
// to match: see prepare).
//
// decode / dequant give lut[code] (U4), code - zero (U8) or the float value; the group's scale and
// offset are applied once per group: Σ_c (v_c·s + o)·x_c = s·Σ_c v_c·x_c + o·Σ_c x_c.
#include <algorithm>
#include <cstddef>
#include <memory>

#include "intrinsics.h"
#include "lowbit/kernels/packed.h"

namespace lowbit {
namespace {

// A growing scratch buffer. (Not std::vector: its out-of-line members, instantiated here with this
// file's ISA flags, could be the copy the linker keeps for the whole program.)
struct Scratch {
  std::unique_ptr<float[]> p;
  size_t n = 0;
  float* get(size_t want) {
    if (want > n) p.reset(new float[want]), n = want;
    return p.get();
  }
};

template <class V>
struct PackedImpl {
  using vec = typename V::vec;
  static constexpr int64_t kLanes = V::kLanes, kChunk = 2 * V::kLanes;

  template <PackedKind K>
  static constexpr bool kFloatKind = K == PackedKind::F32 || K == PackedKind::F16 || K == PackedKind::BF16;

  static bool quantized(const PackedMatrix& w) { return w.kind == PackedKind::U8 || w.kind == PackedKind::U4; }
  // Group length as the loops see it: whole rows for float kinds and one-group-per-row matrices.
  static int64_t group_len(const PackedMatrix& w) { return quantized(w) ? std::min(w.group, w.cols) : w.cols; }

  static bool supports(const PackedMatrix& w) {
    if (!quantized(w)) return true;
    if (w.lanes) return false;  // the reference's (and the VNNI variant's)
    return w.group >= w.cols || (w.group > 0 && w.group % kChunk == 0);
  }

  // Unscaled value of column c (the scalar tail past the last whole step).
  static float base(const PackedMatrix& w, const uint8_t* row, int64_t c) {
    if (w.kind == PackedKind::U8) return float(int(row[c]) - w.zero);
    if (w.kind == PackedKind::U4) return w.lut[packed_code(w, row, c)];
    PackedMatrix one = w;  // float kinds: the stored value in this row
    one.data = row;
    return packed_value(one, 0, c);
  }

  // x in the order decode<K> yields values: U4 steps hold even columns then odd columns.
  static const float* prepare(const PackedMatrix& w, const float* x, Scratch& scratch) {
    if (w.kind != PackedKind::U4) return x;
    float* buf = scratch.get(size_t(w.cols));
    const int64_t steps = w.cols / kChunk;
    for (int64_t k = 0; k < steps; ++k) {
      const float* s = x + k * kChunk;
      float* d = buf + k * kChunk;
      for (int64_t j = 0; j < kLanes; ++j) {
        d[j] = s[2 * j];
        d[kLanes + j] = s[2 * j + 1];
      }
    }
    for (int64_t c = steps * kChunk; c < w.cols; ++c) buf[c] = x[c];
    return buf;
  }

  // R rows starting at r against one prepared activation row; out[j] = Σ_c W[r + j][c] · x[c].
  template <PackedKind K, int R>
  static void rows_dot(const PackedMatrix& w, const typename V::Ctx& ctx, int64_t r, const float* xp, const float* x,
                       const float* xsum, float* out) {
    const uint8_t* rows[R];
    for (int j = 0; j < R; ++j) rows[j] = w.data + size_t(r + j) * w.row_bytes;
    // Bytes of a row per step, and a prefetch every step that crosses into a new cache line.
    constexpr int64_t kStepBytes = K == PackedKind::U4   ? kChunk / 2
                                   : K == PackedKind::U8 ? kChunk
                                   : K == PackedKind::F32 ? 4 * kChunk
                                                          : 2 * kChunk;
    constexpr int64_t kPrefetchEvery = kStepBytes >= 64 ? 0 : 64 / kStepBytes - 1;
    constexpr bool kPrefetch = true;
    const int64_t G = group_len(w), ng = (w.cols + G - 1) / G, groups = w.groups();
    vec total[R];
    float scalar[R];
    for (int j = 0; j < R; ++j) total[j] = V::zero(), scalar[j] = 0;
    for (int64_t g = 0; g < ng; ++g) {
      const int64_t c0 = g * G, c1 = std::min(c0 + G, w.cols), k0 = c0 / kChunk, k1 = c1 / kChunk;
      vec acc[2 * R];
      for (int j = 0; j < 2 * R; ++j) acc[j] = V::zero();
      for (int64_t k = k0; k < k1; ++k) {
        const vec x0 = V::load(xp + k * kChunk), x1 = V::load(xp + k * kChunk + kLanes);
        for (int j = 0; j < R; ++j) {
          vec a, b;
          // The next R rows at this column (rows are contiguous): R streams read interleaved
          // are more than the hardware prefetcher keeps ahead of (+30-60 % decode speed).
          if constexpr (R > 1 && kPrefetch)
            if ((k & kPrefetchEvery) == 0)
              __builtin_prefetch(rows[j] + size_t(k * kStepBytes) + size_t(R) * w.row_bytes, 0, 3);
          // Float kinds run one row at a time: a single stream, each line fetched 4 KB ahead and
          // each page touched 8 KB before that (as the lanes kernels do, lanes_avx512.h).
          if constexpr (R == 1 && kFloatKind<K>)
            if ((k & kPrefetchEvery) == 0) {
              const uint8_t* at = rows[0] + size_t(k * kStepBytes) + 4096;
              __builtin_prefetch(at, 0, 3);
              touch_page_ahead(at, 8192);
            }
          V::template decode<K>(ctx, rows[j], k, a, b);
          acc[2 * j] = V::fmadd(a, x0, acc[2 * j]);
          acc[2 * j + 1] = V::fmadd(b, x1, acc[2 * j + 1]);
        }
      }
      for (int j = 0; j < R; ++j) {
        float tail = 0;
        for (int64_t c = k1 * kChunk; c < c1; ++c) tail += base(w, rows[j], c) * x[c];
        const vec sum = V::add(acc[2 * j], acc[2 * j + 1]);
        if constexpr (K == PackedKind::U8 || K == PackedKind::U4) {
          const size_t gi = size_t((r + j) * groups + g);
          const float s = w.scale_at(gi);
          total[j] = V::fmadd(sum, V::set1(s), total[j]);
          scalar[j] += s * tail + (w.has_offset() ? w.offset_at(gi) * xsum[g] : 0.0f);
        } else {
          total[j] = V::add(total[j], sum);
          scalar[j] += tail;
        }
      }
    }
    for (int j = 0; j < R; ++j) out[j] = V::reduce(total[j]) + scalar[j];
  }

  template <PackedKind K>
  static void matvec_kind(const PackedMatrix& w, const float* x, size_t m, size_t ldx, int64_t r0, int64_t r1,
                          float* y, size_t ldy, bool accumulate) {
    thread_local Scratch buf, xsum_buf;
    const typename V::Ctx ctx(w);
    const int64_t G = group_len(w), ng = (w.cols + G - 1) / G;
    for (size_t i = 0; i < m; ++i) {
      const float* xi = x + i * ldx;
      const float* xp = prepare(w, xi, buf);
      float* xsum = nullptr;
      if (quantized(w) && w.has_offset()) {
        xsum = xsum_buf.get(size_t(ng));
        for (int64_t g = 0; g < ng; ++g) {
          float s = 0;
          for (int64_t c = g * G, e = std::min(c + G, w.cols); c < e; ++c) s += xi[c];
          xsum[g] = s;
        }
      }
      float* yi = y + i * ldy;
      auto put = [&](int64_t r, float v) {
        float& o = yi[r - r0];
        o = accumulate ? o + v : v;
      };
      int64_t r = r0;
      // Float rows (F32 / F16 / BF16: 4-8 KB each at LLM widths) one at a time, one stream: tiles
      // of 4 interleaved rows streamed 16 % slower (tinyllama bf16 decode, bench/NOTES.md).
      for (; !kFloatKind<K> && r + 4 <= r1; r += 4) {
        float out[4];
        rows_dot<K, 4>(w, ctx, r, xp, xi, xsum, out);
        for (int j = 0; j < 4; ++j) put(r + j, out[j]);
      }
      for (; r < r1; ++r) {
        float out[1];
        rows_dot<K, 1>(w, ctx, r, xp, xi, xsum, out);
        put(r, out[0]);
      }
    }
  }

  static void matvec(const PackedMatrix& w, const float* x, size_t m, size_t ldx, int64_t r0, int64_t r1, float* y,
                     size_t ldy, bool accumulate) {
    switch (w.kind) {
      case PackedKind::F32: return matvec_kind<PackedKind::F32>(w, x, m, ldx, r0, r1, y, ldy, accumulate);
      case PackedKind::F16: return matvec_kind<PackedKind::F16>(w, x, m, ldx, r0, r1, y, ldy, accumulate);
      case PackedKind::BF16: return matvec_kind<PackedKind::BF16>(w, x, m, ldx, r0, r1, y, ldy, accumulate);
      case PackedKind::U8: return matvec_kind<PackedKind::U8>(w, x, m, ldx, r0, r1, y, ldy, accumulate);
      case PackedKind::U4: return matvec_kind<PackedKind::U4>(w, x, m, ldx, r0, r1, y, ldy, accumulate);
    }
  }

  template <PackedKind K>
  static void dequant_kind(const PackedMatrix& w, int64_t r0, int64_t r1, float* out) {
    const typename V::Ctx ctx(w);
    const int64_t G = group_len(w), groups = w.groups(), steps = w.cols / kChunk;
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* row = w.data + size_t(r) * w.row_bytes;
      float* o = out + size_t((r - r0) * w.cols);
      for (int64_t k = 0; k < steps; ++k) {
        vec a, b;
        V::template decode<K>(ctx, row, k, a, b);
        if constexpr (K == PackedKind::U8 || K == PackedKind::U4) {
          const size_t gi = size_t(r * groups + (k * kChunk) / G);
          const vec s = V::set1(w.scale_at(gi)), off = V::set1(w.offset_at(gi));
          a = V::add(V::mul(a, s), off);  // not fused: bit for bit what the formats' dequantize gives
          b = V::add(V::mul(b, s), off);
        }
        if constexpr (K == PackedKind::U4) {
          V::interleave(a, b, o + k * kChunk);
        } else {
          V::store(o + k * kChunk, a);
          V::store(o + k * kChunk + kLanes, b);
        }
      }
      for (int64_t c = steps * kChunk; c < w.cols; ++c) o[c] = packed_value(w, r, c);
    }
  }

  static void dequant(const PackedMatrix& w, int64_t r0, int64_t r1, float* out) {
    switch (w.kind) {
      case PackedKind::F32: return dequant_kind<PackedKind::F32>(w, r0, r1, out);
      case PackedKind::F16: return dequant_kind<PackedKind::F16>(w, r0, r1, out);
      case PackedKind::BF16: return dequant_kind<PackedKind::BF16>(w, r0, r1, out);
      case PackedKind::U8: return dequant_kind<PackedKind::U8>(w, r0, r1, out);
      case PackedKind::U4: return dequant_kind<PackedKind::U4>(w, r0, r1, out);
    }
  }
};

}  // namespace
}  // namespace lowbit
