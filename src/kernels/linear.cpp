#include "lowbit/kernels/linear.h"

#include <cblas.h>
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <string_view>

#include "lowbit/core/env.h"
#include "lowbit/core/error.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/kernels/bf16_gemm.h"
#include "lowbit/kernels/gemm.h"

namespace lowbit {

size_t bf16_m(size_t m) { return (m + 31) / 32 * 32; }
size_t bf16_k(size_t k) { return (k + 31) / 32 * 32; }

// The CPU checks are here, in a file built for any x86-64, not in the kernels' own (whose flags let
// the compiler use AVX-512 anywhere in them).
bool amx_bf16_available() {
  static const bool ok = [] {
    if (const char* v = std::getenv("LOWBIT_AMX"); v && std::strcmp(v, "0") == 0) return false;
    // CPUID leaf 7: EDX bit 24 AMX-TILE, bit 22 AMX-BF16 (clang 14's __builtin_cpu_supports knows
    // neither); the kernel grants the tile state (arch_prctl ARCH_REQ_XCOMP_PERM, 0x1023, for
    // XFEATURE_XTILEDATA, 18), or refuses.
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 24)) || !(d & (1u << 22))) return false;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512bw")) return false;
    return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
  }();
  return ok;
}

bool avx512_bf16_available() {
  static const bool ok = [] {
    // CPUID leaf 7 sub-leaf 1: EAX bit 5 AVX512_BF16 (with F, BW and VL, which the kernel also uses).
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d) || !(a & (1u << 5))) return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  }();
  return ok;
}

Bf16GemmFn bf16_gemm_best() {
  static const Bf16GemmFn fn = []() -> Bf16GemmFn {
    if (const char* v = std::getenv("LOWBIT_BF16_GEMM"); v && std::strcmp(v, "0") == 0) return nullptr;
    if (amx_bf16_available()) return &amx_gemm;
    if (avx512_bf16_available()) return &avx512bf16_gemm;
    return nullptr;
  }();
  return fn;
}

const char* bf16_gemm_best_name() {
  const Bf16GemmFn fn = bf16_gemm_best();
  return fn == &amx_gemm ? "amx" : fn == &avx512bf16_gemm ? "avx512bf16" : "none";
}

uint64_t LinearWeights::bytes() const {
  // What a pass over the weights reads.
  uint64_t n = f32.size() * 4;
  for (const auto& s : packed) n += s.m.bytes();
  return n;
}

namespace {

// An int8 segment (LinearWeights::int8_acts) from row-major bytes src[rows][cols] that hold the codes
// q8 + 128 xor `to_code` (0x80 for signed q8, 0 for codes): whole groups of 4 columns as 4-byte
// copies, the row's last columns one at a time (loading a model runs this over every weight).
PackedSegment int8_segment(const uint8_t* src, uint8_t to_code, int64_t rows, int64_t cols, const float* scale) {
  auto buf = std::make_shared<PackedLanes>();
  const int64_t blocks = (rows + 15) / 16, units = (cols + 3) / 4, quads = cols / 4;
  buf->codes.assign(size_t(blocks * units * 64), 0);
  buf->scale.assign(size_t(blocks * 16), 0.0f);
  std::copy_n(scale, rows, buf->scale.data());
  const uint32_t flip4 = 0x01010101u * to_code;
  default_thread_pool().parallel_for(size_t(rows), [&](size_t b, size_t e, int) {
    for (size_t r = b; r < e; ++r) {
      const uint8_t* row = src + r * size_t(cols);
      uint8_t* dst = buf->codes.data() + (r / 16) * size_t(units) * 64 + (r % 16) * 4;
      for (int64_t j = 0; j < quads; ++j) {
        uint32_t v;
        std::memcpy(&v, row + 4 * j, 4);
        v ^= flip4;
        std::memcpy(dst + 64 * j, &v, 4);
      }
      for (int64_t c = 4 * quads; c < cols; ++c) dst[64 * quads + (c % 4)] = uint8_t(row[c] ^ to_code);
    }
  });
  PackedMatrix m;
  m.kind = PackedKind::U8;
  m.rows = rows;
  m.cols = cols;
  m.data = buf->codes.data();
  m.row_bytes = size_t(cols);
  m.group = cols;
  m.scale = buf->scale.data();
  m.zero = 128;
  m.int_zero = int_zero_of(m);
  m.lanes = true;
  m.lanes_pstride = 16;
  PackedSegment seg;
  seg.m = m;
  seg.token_acts = true;
  // Decode steps on the lanes kernels where the variant runs them (whole 64-column units); else gemm_q8_dyn.
  const PackedKernels& best = packed_kernels_best();
  seg.q8 = cols % 64 == 0 && best.takes_lanes && best.supports_q8 && best.matmul_q8 && best.supports_q8(m);
  seg.kernels = seg.q8 ? &best : &packed_kernels_ref();
  seg.keep = std::move(buf);
  return seg;
}

// An int8 weight of one segment (int8_segment's arguments).
LinearWeights int8_weights(const uint8_t* src, uint8_t to_code, const std::vector<float>& scale, int64_t rows,
                           int64_t cols) {
  if (rows <= 0 || cols <= 0) fail("an int8 weight of {} x {}: expected at least one row and column", rows, cols);
  LinearWeights l;
  l.rows = rows;
  l.cols = cols;
  l.int8_acts = true;
  l.packed.push_back(int8_segment(src, to_code, rows, cols, scale.data()));
  return l;
}

// The row of rows segment that holds row r (r becomes its row there).
const PackedSegment& segment_of(const std::vector<PackedSegment>& segs, int64_t& r) {
  for (const auto& s : segs) {
    if (r < s.m.rows) return s;
    r -= s.m.rows;
  }
  fail("row outside the weight's segments");
}

}  // namespace

int8_t LinearWeights::q8_at(int64_t r, int64_t c) const {
  if (!is_int8() || !col_parts.empty()) fail("q8_at: not an int8 weight held by rows");
  const PackedSegment& s = segment_of(packed, r);
  return int8_t(packed_code_at(s.m, r, c) ^ 0x80);
}

float LinearWeights::q8_scale_at(int64_t r) const {
  if (!is_int8()) fail("q8_scale_at: not an int8 weight");
  if (!col_parts.empty()) return packed.front().m.scale[r];  // every part holds every row's scale
  const PackedSegment& s = segment_of(packed, r);
  return s.m.scale[r];
}

void LinearWeights::set_act_scale(float s) {
  if (!is_int8()) fail("set_act_scale: not an int8 weight");
  for (auto& seg : packed) seg.act_scale = s;
}

LinearWeights LinearWeights::from_f32(std::vector<float> w, int64_t rows, int64_t cols) {
  LinearWeights l;
  l.rows = rows;
  l.cols = cols;
  l.f32 = std::move(w);
  return l;
}

LinearWeights LinearWeights::from_q8(std::vector<int8_t> q, std::vector<float> scale, int64_t rows, int64_t cols) {
  if (q.size() != size_t(rows * cols) || scale.size() != size_t(rows))
    fail("from_q8: {} weights and {} scales for a {} x {} matrix", q.size(), scale.size(), rows, cols);
  return int8_weights(reinterpret_cast<const uint8_t*>(q.data()), 0x80, scale, rows, cols);
}

LinearWeights LinearWeights::from_q8_codes(const uint8_t* codes, std::vector<float> scale, int64_t rows, int64_t cols) {
  if (scale.size() != size_t(rows)) fail("from_q8_codes: {} scales for {} rows", scale.size(), rows);
  return int8_weights(codes, 0, scale, rows, cols);
}

LinearWeights LinearWeights::from_packed(const PackedMatrix& m, std::shared_ptr<const void> keep) {
  LinearWeights l;
  l.rows = m.rows;
  l.cols = m.cols;
  PackedMatrix pm = m;
  pm.int_zero = int_zero_of(pm);
  const PackedKernels& best = packed_kernels_best();
  const bool q8_on = packed_q8_activations_enabled() && best.supports_q8;
  bool q8 = q8_on && best.supports_q8(pm);
  // Integer tables on the integer path, or U4 code books (NF4, FP4) for the lanes kernels.
  if ((q8 || is_code_book(pm)) && best.takes_lanes && packed_lanes_enabled() && lanes_eligible(pm)) {
    // Re-laid once at load for the decode kernels (PackedMatrix::lanes); the caller may then let go
    // of the source bytes (WeightStore drops their pages from memory).
    auto lanes = std::make_shared<PackedLanes>();
    pm = relayout_lanes(pm, *lanes);
    keep = std::move(lanes);
    q8 = q8_on && best.supports_q8(pm);  // code books: on wide (int16) activations where the variant has them
  }
  l.packed.push_back({pm, q8 || best.supports(pm) ? &best : &packed_kernels_ref(), q8, std::move(keep)});
  return l;
}

bool packed_lanes_enabled() {
  static const bool on = env_switch("LOWBIT_LAYOUT", "lanes", "rows");
  return on;
}

namespace {

// A float32 LinearWeights as one packed segment owning its data (to stack it with packed ones).
LinearWeights f32_as_packed(const LinearWeights& l) {
  auto data = std::make_shared<std::vector<float>>(l.f32);
  PackedMatrix m;
  m.kind = PackedKind::F32;
  m.rows = l.rows;
  m.cols = l.cols;
  m.data = reinterpret_cast<const uint8_t*>(data->data());
  m.row_bytes = size_t(l.cols) * sizeof(float);
  return LinearWeights::from_packed(m, data);
}

}  // namespace

LinearWeights LinearWeights::split_columns(const std::vector<int64_t>& bounds) const {
  if (packed.size() != 1 || !packed[0].m.lanes || !col_parts.empty() || (is_int8() && !packed[0].q8) ||
      !outlier_cols.empty())
    fail("split_columns: a {} x {} weight that is not one packed matrix in the lanes layout", rows, cols);
  LinearWeights l;
  l.rows = rows;
  l.cols = cols;
  l.int8_acts = int8_acts;
  l.col_parts.push_back(0);
  for (int64_t b : bounds) {
    if (b <= l.col_parts.back() || b >= cols) fail("split_columns: bounds must ascend inside 1..{}", cols - 1);
    l.col_parts.push_back(b);
  }
  l.col_parts.push_back(cols);
  for (size_t p = 0; p + 1 < l.col_parts.size(); ++p) {
    auto lanes = std::make_shared<PackedLanes>();
    PackedSegment seg = packed[0];
    seg.m = lanes_columns(packed[0].m, l.col_parts[p], l.col_parts[p + 1], *lanes);
    seg.keep = std::move(lanes);
    l.packed.push_back(std::move(seg));
  }
  return l;
}

void LinearWeights::row_f32(int64_t r, float* out) const {
  if (r < 0 || r >= rows) fail("row {} outside a weight of {} rows", r, rows);
  if (!col_parts.empty()) {
    for (size_t p = 0; p < packed.size(); ++p) packed[p].kernels->dequant(packed[p].m, r, r + 1, out + col_parts[p]);
    return;
  }
  if (is_packed()) {
    int64_t rs = r;
    const PackedSegment& s = segment_of(packed, rs);
    return s.kernels->dequant(s.m, rs, rs + 1, out);
  }
  for (int64_t c = 0; c < cols; ++c)
    out[c] = is_int8() ? float(q8_at(r, c)) * q8_scale_at(r) : f32[size_t(r * cols + c)];
  for (size_t j = 0; j < outlier_cols.size(); ++j) out[outlier_cols[j]] = outlier_w[size_t(r) * outlier_cols.size() + j];
}

void LinearWeights::append_rows(const LinearWeights& o) {
  if (!col_parts.empty() || !o.col_parts.empty()) fail("append_rows: weights split over their columns");
  if (rows == 0) {
    *this = o;
    return;
  }
  if (o.cols == cols && (is_packed() || o.is_packed()) && !is_int8() && !o.is_int8()) {
    if (!is_packed()) *this = f32_as_packed(*this);
    const LinearWeights other = o.is_packed() ? o : f32_as_packed(o);
    packed.insert(packed.end(), other.packed.begin(), other.packed.end());
    rows += o.rows;
    return;
  }
  if (o.cols != cols || o.is_int8() != is_int8())
    fail("fusing linear layers of different widths or kinds ({} vs {} columns)", cols, o.cols);
  // Fused projections read one input: it must be quantized one way for all of them.
  if (o.act_scale() != act_scale() || o.outlier_cols != outlier_cols)
    fail("fusing linear layers that quantize their shared input differently (activation scale {} vs {}, {} vs {} "
         "outlier columns); quantize them with one scheme",
         act_scale(), o.act_scale(), outlier_cols.size(), o.outlier_cols.size());
  outlier_w.insert(outlier_w.end(), o.outlier_w.begin(), o.outlier_w.end());
  f32.insert(f32.end(), o.f32.begin(), o.f32.end());
  packed.insert(packed.end(), o.packed.begin(), o.packed.end());  // int8: one segment per part
  rows += o.rows;
}

float quantize_row_q8_dyn(const float* x, size_t k, int8_t* xq) {
  float absmax = 0;
  for (size_t i = 0; i < k; ++i) absmax = std::max(absmax, std::fabs(x[i]));
  const float scale = absmax / 127.0f;
  const float inv = absmax > 0 ? 127.0f / absmax : 0.0f;
  for (size_t i = 0; i < k; ++i) {
    const float v = x[i] * inv;                          // in [-127, 127]
    const int q = int(v + (v >= 0 ? 0.5f : -0.5f));      // round half away from zero (vectorizes)
    xq[i] = int8_t(std::clamp(q, -127, 127));
  }
  return scale;
}

void gemm_q8_dyn_ref(const int8_t* xq, size_t m, size_t lda, const PackedMatrix& w, size_t r0, size_t r1, int32_t* acc,
                     size_t ldc) {
  const size_t k = size_t(w.cols);
  for (size_t i = 0; i < m; ++i)
    for (size_t r = r0; r < r1; ++r) {
      int32_t s = 0;
      for (size_t c = 0; c < k; ++c) s += int32_t(xq[i * lda + c]) * int32_t(packed_code_at(w, int64_t(r), int64_t(c)));
      acc[i * ldc + r] = s;
    }
}

void quantize_row_q8_static(const float* x, size_t k, float scale, int8_t* xq) {
  const float inv = 1.0f / scale;
  for (size_t i = 0; i < k; ++i) {
    // Clamped first (no int overflow on outliers); + copysign(0.5) then truncation rounds half away
    // from zero, in a form the compiler vectorizes.
    const float v = std::min(std::max(x[i] * inv, -127.0f), 127.0f);
    xq[i] = int8_t(int(v + std::copysign(0.5f, v)));
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

namespace {

// Decode (few input rows): the packed kernels on blocks of rows, both threads reading weights; a
// single row (a decode step) goes through the integer path (int8 activations in blocks of 64,
// packed.h) where the segment has one. Prefill: tiles of rows dequantized into a per-thread buffer
// (never the whole matrix) and multiplied by BLAS with float activations, so perplexity, encoder
// batches and prompts see exactly the weight-only quantization.
// (Int8 activations everywhere cost llama-16m-wiki int4 +0.3 % perplexity, KLD +0.003, but moved
// DistilBERT's logits by 40 % (outlier channels): so they stay where the speed is memory-bound.)
constexpr size_t kPackedGemmMinRows = 8;  // input rows from which tile + GEMM beats the matvec kernels

// Int8 activations for the segments on the integer path (m == 1), one QActs per (nibble order,
// group), quantized by the calling thread before the work is handed out; the other threads read
// that QActs (2 KB for 2048 columns), not x (8 KB). On this VM a line moved between the cores
// costs ~270 ns, and x was written by the caller just before: in an in-process harness with the
// model's data flow (x written before each call, y read after it) this streamed a decode step's
// int4 matrices 7-10 % faster than each thread quantizing x itself (bench/NOTES.md, 14th session).
// `call` (next_acts_call) names one product: segments of the same call with the same (nibble order,
// group) share one quantization.
uint64_t next_acts_call() {
  static std::atomic<uint64_t> calls{0};
  return calls.fetch_add(1, std::memory_order_relaxed) + 1;
}

const QActs& caller_acts(const PackedSegment& seg, const float* x, size_t k, uint64_t call) {
  struct Acts {
    bool nibble, wide, token;
    float act_scale;
    int64_t group;
    uint64_t call;  // the product it holds
    QActs a;
  };
  thread_local std::vector<std::unique_ptr<Acts>> cache;  // the calling thread's (kept: no allocation per call)
  const bool wide = is_code_book(seg.m), nibble = seg.m.kind == PackedKind::U4 && !seg.m.lanes && !wide;
  const int64_t G = std::min(seg.m.group, seg.m.cols);
  Acts* a = nullptr;
  for (const auto& c : cache)
    if (c->nibble == nibble && c->wide == wide && c->group == G && c->token == seg.token_acts &&
        c->act_scale == seg.act_scale)
      a = c.get();
  if (!a)
    a = cache.emplace_back(std::make_unique<Acts>(Acts{nibble, wide, seg.token_acts, seg.act_scale, G, 0, {}})).get();
  if (a->call != call) {
    quantize_token_acts(seg, x, k, a->a);
    a->call = call;
  }
  return a->a;
}

// y (= or +=) x · Wᵀ over the row segments `segs` (rows in all, k columns; x rows ldx apart).
void packed_forward(std::span<const PackedSegment> segs, int64_t rows, size_t k, const float* x, size_t ldx, size_t m,
                    float* y, bool accumulate) {
  const size_t ldy = size_t(rows);
  const bool gemm = m >= kPackedGemmMinRows;
  // Work items of 64 rows: even for the pool to split, and large enough that the per-item set-up
  // (activation permutation, group sums: O(cols)) stays ~1/64 of the item's work.
  const int64_t tile = 64;
  // Prefill of quantized (U8 / U4) segments in bf16 (AMX or AVX-512 BF16: bf16 tiles, float32 sums,
  // bf16_gemm.h); the activations are converted once per call, the weights per work item of 128 rows.
  const Bf16GemmFn bf16_gemm = gemm ? bf16_gemm_best() : nullptr;
  auto on_bf16 = [&](const PackedSegment& s) {
    return bf16_gemm && (s.m.kind == PackedKind::U8 || s.m.kind == PackedKind::U4);
  };
  std::vector<uint16_t> a_bf16;
  for (const auto& s : segs)
    if (on_bf16(s) && a_bf16.empty()) {
      a_bf16.resize(bf16_m(m) * bf16_k(k));
      bf16_pack_acts(x, m, ldx, k, a_bf16.data());
    }
  struct Item {
    const PackedSegment* seg;
    int64_t r0, r1, out0;  // rows of the segment; its first row's column in y
  };
  std::vector<Item> items;
  size_t n_items = 0;
  for (const auto& s : segs) {
    const int64_t t = on_bf16(s) ? 2 * tile : tile;
    n_items += size_t((s.m.rows + t - 1) / t);
  }
  items.reserve(n_items);  // one allocation (growing it item by item was ~0.5 µs of a decode call)
  int64_t out0 = 0;
  for (const auto& s : segs) {
    const int64_t t = on_bf16(s) ? 2 * tile : tile;
    for (int64_t r = 0; r < s.m.rows; r += t) items.push_back({&s, r, std::min(s.m.rows, r + t), out0});
    out0 += s.m.rows;
  }
  const uint64_t call = next_acts_call();
  std::vector<const QActs*> acts(segs.size(), nullptr);  // per segment, where it takes the integer path
  if (m == 1)
    for (size_t si = 0; si < segs.size(); ++si)
      if (segs[si].q8) acts[si] = &caller_acts(segs[si], x, k, call);
  if (gemm) set_blas_threads(0);  // BLAS single-threaded inside the pool's workers
  // Balanced at run time: the cores do not get equal shares of the bandwidth, and a static split
  // left one waiting for the other at every layer (~8 % of a decode step).
  default_thread_pool().parallel_steal(items.size(), [&](size_t i, int) {
    thread_local std::vector<float> buf;
    thread_local std::vector<uint16_t> b_bf16;
    const Item& it = items[i];
    const PackedMatrix& pm = it.seg->m;
    float* yo = y + it.out0 + it.r0;
    if (it.seg->q8 && m == 1) {
      // This thread's first item of the call: pull in the caller's activations (and, where the
      // product adds to y, the lines of y it will read) before the kernel walks them one by one.
      thread_local uint64_t seen_call = 0;
      if (seen_call != call) {
        seen_call = call;
        for (const QActs* a : acts)
          if (a) prefetch_acts(*a);
      }
      if (accumulate) prefetch_lines(yo, size_t(it.r1 - it.r0) * sizeof(float));
      it.seg->kernels->matmul_q8(pm, *acts[size_t(it.seg - segs.data())], it.r0, it.r1, yo, ldy, accumulate);
      return;
    }
    if (!gemm) {
      it.seg->kernels->matvec(pm, x, m, ldx, it.r0, it.r1, yo, ldy, accumulate);
      return;
    }
    const size_t n = size_t(it.r1 - it.r0);
    if (on_bf16(*it.seg) && pm.lanes && it.r0 % 16 == 0) {  // tiles straight from the re-laid codes
      b_bf16.resize(bf16_m(n) * bf16_k(k));
      bf16_pack_weights_lanes(pm, it.r0, it.r1, b_bf16.data());
      bf16_gemm(a_bf16.data(), m, b_bf16.data(), n, k, yo, ldy, accumulate);
      return;
    }
    buf.resize(n * k);
    it.seg->kernels->dequant(pm, it.r0, it.r1, buf.data());
    if (on_bf16(*it.seg)) {
      b_bf16.resize(bf16_m(n) * bf16_k(k));
      bf16_pack_weights(buf.data(), n, k, b_bf16.data());
      bf16_gemm(a_bf16.data(), m, b_bf16.data(), n, k, yo, ldy, accumulate);
      return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(n), int(k), 1.0f, x, int(ldx), buf.data(), int(k),
                accumulate ? 1.0f : 0.0f, yo, int(ldy));
  });
}

// A weight split over its columns: one product per part, adding to the first's.
void packed_forward(const LinearWeights& w, const float* x, size_t m, float* y, bool accumulate) {
  if (w.col_parts.empty()) return packed_forward(w.packed, w.rows, size_t(w.cols), x, size_t(w.cols), m, y, accumulate);
  for (size_t p = 0; p < w.packed.size(); ++p)
    packed_forward(std::span(&w.packed[p], 1), w.rows, size_t(w.col_parts[p + 1] - w.col_parts[p]), x + w.col_parts[p],
                   size_t(w.cols), m, y, accumulate || p > 0);
}

}  // namespace

void quantize_token_acts(const PackedSegment& seg, const float* x, size_t k, QActs& out) {
  const int64_t G = std::min(seg.m.group, seg.m.cols);
  if (seg.token_acts) {  // int8-dyn / w8a8: one scale for the token, as gemm_q8_dyn's inputs get
    prepare_acts(1, int64_t(k), G, false, out);
    const float s = seg.act_scale > 0 ? seg.act_scale : quantize_row_q8_dyn(x, k, out.q.data());
    if (seg.act_scale > 0) quantize_row_q8_static(x, k, seg.act_scale, out.q.data());
    std::fill(out.scale.begin(), out.scale.end(), s);
    // zsum and sum_x as quantize_acts sums them (block by block; column by column).
    constexpr int64_t B = QActs::kBlock;
    for (int64_t b = 0; b * B < int64_t(k); ++b) {
      int32_t qsum = 0;
      for (int64_t c = b * B; c < std::min(int64_t(k), (b + 1) * B); ++c) qsum += out.q[size_t(c)];
      out.zsum[size_t(b * B / G)] += s * float(qsum);
    }
    for (int64_t g = 0; g < out.groups; ++g) {
      float sum = 0;
      for (int64_t c = g * G; c < std::min((g + 1) * G, int64_t(k)); ++c) sum += x[c];
      out.sum_x[size_t(g)] = sum;
    }
    return;
  }
  if (is_code_book(seg.m))  // int16 activations against the table as int16
    return (seg.kernels->quantize_acts_wide ? seg.kernels->quantize_acts_wide : quantize_acts_wide)(x, 1, k, int64_t(k), G, out);
  const bool nibble = seg.m.kind == PackedKind::U4 && !seg.m.lanes;  // row-major U4 reads nibble order
  (seg.kernels->quantize_acts ? seg.kernels->quantize_acts : quantize_acts)(x, 1, k, int64_t(k), G, nibble, out);
}

void prefetch_lines(const void* p, size_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(c + o, 0, 3);
}

void prefetch_acts(const QActs& a) {
  prefetch_lines(a.q.data(), a.q.size());
  prefetch_lines(a.q16.data(), a.q16.size() * sizeof(int16_t));
  prefetch_lines(a.scale.data(), a.scale.size() * sizeof(float));
  prefetch_lines(a.zsum.data(), a.zsum.size() * sizeof(float));
  prefetch_lines(a.sum_x.data(), a.sum_x.size() * sizeof(float));
}

namespace {

// Input rows quantized for gemm_q8_dyn: int8 per token (dynamic absmax / 127, or the static scale
// act_scale > 0), rows lda apart (zero padded to whole 64-byte blocks), each row's scale and Σ q.
struct Q8Rows {
  size_t m = 0, k = 0, lda = 0;
  std::vector<int8_t> q;
  std::vector<float> scale;
  std::vector<int32_t> sum;
};

Q8Rows quantize_q8_rows(const float* x, size_t ldx, size_t m, size_t k, float act_scale) {
  Q8Rows a;
  a.m = m;
  a.k = k;
  a.lda = (k + 63) / 64 * 64;
  a.q.assign(m * a.lda, 0);
  a.scale.assign(m, act_scale);
  a.sum.assign(m, 0);
  default_thread_pool().parallel_for(m, [&](size_t b, size_t e, int) {
    for (size_t i = b; i < e; ++i) {
      int8_t* q = &a.q[i * a.lda];
      if (act_scale > 0)
        quantize_row_q8_static(x + i * ldx, k, act_scale, q);
      else
        a.scale[i] = quantize_row_q8_dyn(x + i * ldx, k, q);
      int32_t sum = 0;
      for (size_t c = 0; c < k; ++c) sum += q[c];
      a.sum[i] = sum;
    }
  });
  return a;
}

// y[i * ldy + r] (= or +=) the int8 product of segment s (int8_acts) for its rows r over the quantized
// rows a (a.k = the segment's columns): gemm_q8_dyn over 16-row blocks split over the threads, each
// rescaling its own.
void int8_gemm(const PackedSegment& s, const Q8Rows& a, float* y, size_t ldy, bool accumulate) {
  const size_t m = a.m, rows = size_t(s.m.rows), ldc = (rows + 15) / 16 * 16;
  std::unique_ptr<int32_t[]> acc(new int32_t[m * ldc]);  // every used element is written by the kernel
  const GemmQ8Fn gemm = gemm_q8_dyn_best();
  default_thread_pool().parallel_for(ldc / 16, [&](size_t b, size_t e, int) {
    const size_t r0 = b * 16, r1 = std::min(rows, e * 16);
    gemm(a.q.data(), m, a.lda, s.m, r0, r1, acc.get(), ldc);
    // (q + 128) · xq summed, less 128 Σ xq: Σ q · xq; then both scales.
    for (size_t i = 0; i < m; ++i)
      for (size_t r = r0; r < r1; ++r) {
        const float v = a.scale[i] * s.m.scale[r] * float(acc[i * ldc + r] - 128 * a.sum[i]);
        float& o = y[i * ldy + r];
        o = accumulate ? o + v : v;
      }
  });
}

// int8-dyn / w8a8 / LLM.int8(): one input row on the segments' lanes kernels (as a decode step of
// int8 runs), several on gemm_q8_dyn.
void int8_forward(const LinearWeights& w, const float* x, size_t m, float* y, bool accumulate) {
  const size_t k = size_t(w.cols), rows = size_t(w.rows);
  // LLM.int8(): the outlier inputs moved out of x (so they neither reach the int8 product nor set
  // the rows' scales) into xo [m][ko].
  const size_t ko = w.outlier_cols.size();
  std::vector<float> x_in, xo(m * ko);
  if (ko > 0) {
    x_in.assign(x, x + m * k);
    for (size_t i = 0; i < m; ++i)
      for (size_t j = 0; j < ko; ++j) {
        float& v = x_in[i * k + size_t(w.outlier_cols[j])];
        xo[i * ko + j] = v;
        v = 0.0f;
      }
    x = x_in.data();
  }
  bool lanes = m == 1;
  for (const auto& s : w.packed) lanes = lanes && s.q8;
  if (lanes) {
    packed_forward(w, x, m, y, accumulate);
  } else if (!w.col_parts.empty()) {  // each part its own columns of x
    for (size_t p = 0; p < w.packed.size(); ++p) {
      const PackedSegment& s = w.packed[p];
      int8_gemm(s, quantize_q8_rows(x + w.col_parts[p], k, m, size_t(s.m.cols), s.act_scale), y, rows, accumulate || p > 0);
    }
  } else {  // row segments (fused q | k | v, a split decode's parts): one quantization of x for all
    const Q8Rows a = quantize_q8_rows(x, k, m, k, w.packed.front().act_scale);
    size_t out0 = 0;
    for (const auto& s : w.packed) {
      int8_gemm(s, a, y + out0, rows, accumulate);
      out0 += size_t(s.m.rows);
    }
  }
  if (ko > 0)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(rows), int(ko), 1.0f, xo.data(), int(ko),
                w.outlier_w.data(), int(ko), 1.0f, y, int(rows));
}

}  // namespace

void linear_forward(const LinearWeights& w, const float* x, size_t m, float* y, bool accumulate) {
  if (w.is_int8()) return int8_forward(w, x, m, y, accumulate);
  if (w.is_packed()) return packed_forward(w, x, m, y, accumulate);
  gemm_f32_nt(x, w.f32.data(), y, m, size_t(w.rows), size_t(w.cols), accumulate);
}

}  // namespace lowbit
