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
  uint64_t n = f32.size() * 4 + q8_scale.size() * 4 + q8_rowsum.size() * 4 + q8_vnni.size();
  for (const auto& s : packed) n += s.m.bytes();
  return n;
}

namespace {

// f(position in q8_vnni, r, c) for every weight of l, in q8_vnni's order (loading a model runs this
// over every weight: no divisions per element).
template <class F>
void for_each_vnni(const LinearWeights& l, F f) {
  const int64_t kq = l.cols_padded() / 4;
  size_t at = 0;
  for (int64_t r0 = 0; r0 < l.rows; r0 += 16)
    for (int64_t quad = 0; quad < kq; ++quad)
      for (int64_t r = r0; r < r0 + 16; ++r)
        for (int64_t c = 4 * quad; c < 4 * quad + 4; ++c, ++at)
          if (r < l.rows && c < l.cols) f(at, r, c);
}

// q8 [rows][cols] -> l.q8_vnni (see linear.h) and l.q8_rowsum, from bytes that hold q8 ^ flip (0, or
// 0x80 for codes stored as q8 + 128). Whole blocks of 16 rows and 4 columns as 16 copies of 4 bytes;
// the last rows and columns one weight at a time.
void pack_vnni(LinearWeights& l, const uint8_t* src, uint8_t flip) {
  l.q8_vnni.assign(size_t(l.rows_padded() * l.cols_padded()), 0);
  l.q8_rowsum.assign(size_t(l.rows), 0);
  const int64_t whole_rows = l.rows / 16 * 16, whole_quads = l.cols / 4, kq = l.cols_padded() / 4;
  const uint32_t flip4 = 0x01010101u * flip;
  auto q8 = [&](int64_t r, int64_t c) { return int8_t(src[size_t(r * l.cols + c)] ^ flip); };
  for (int64_t r0 = 0; r0 < whole_rows; r0 += 16)
    for (int64_t quad = 0; quad < whole_quads; ++quad)
      for (int64_t j = 0; j < 16; ++j) {
        uint32_t v;
        std::memcpy(&v, src + size_t((r0 + j) * l.cols + 4 * quad), 4);
        v ^= flip4;
        std::memcpy(&l.q8_vnni[size_t(((r0 / 16 * kq + quad) * 16 + j) * 4)], &v, 4);
      }
  for (int64_t r = 0; r < l.rows; ++r) {
    int32_t sum = 0;
    for (int64_t c = 0; c < l.cols; ++c) sum += q8(r, c);
    l.q8_rowsum[size_t(r)] = sum;
  }
  auto put = [&](int64_t r, int64_t c) { l.q8_vnni[size_t((((r / 16) * kq + c / 4) * 16 + r % 16) * 4 + c % 4)] = q8(r, c); };
  for (int64_t r = whole_rows; r < l.rows; ++r)
    for (int64_t c = 0; c < l.cols; ++c) put(r, c);
  for (int64_t r = 0; r < whole_rows; ++r)
    for (int64_t c = 4 * whole_quads; c < l.cols; ++c) put(r, c);
}

// l's weights row-major into q8 + r0 * cols.. (the inverse of pack_vnni).
void unpack_vnni(const LinearWeights& l, int8_t* q8, int64_t r0) {
  for_each_vnni(l, [&](size_t at, int64_t r, int64_t c) { q8[size_t((r0 + r) * l.cols + c)] = l.q8_vnni[at]; });
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
  if (q.size() != size_t(rows * cols) || scale.size() != size_t(rows))
    fail("from_q8: {} weights and {} scales for a {} x {} matrix", q.size(), scale.size(), rows, cols);
  l.q8_scale = std::move(scale);
  pack_vnni(l, reinterpret_cast<const uint8_t*>(q.data()), 0);
  return l;
}

LinearWeights LinearWeights::from_q8_codes(const uint8_t* codes, std::vector<float> scale, int64_t rows, int64_t cols) {
  LinearWeights l;
  l.rows = rows;
  l.cols = cols;
  if (scale.size() != size_t(rows)) fail("from_q8_codes: {} scales for {} rows", scale.size(), rows);
  l.q8_scale = std::move(scale);
  pack_vnni(l, codes, 0x80);
  return l;
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
  static const bool on = [] {
    const char* v = std::getenv("LOWBIT_LAYOUT");
    if (!v || !*v || std::string_view(v) == "lanes") return true;
    if (std::string_view(v) == "rows") return false;
    fail("LOWBIT_LAYOUT={}: expected lanes or rows", v);
  }();
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
  if (packed.size() != 1 || !packed[0].m.lanes || !col_parts.empty())
    fail("split_columns: a {} x {} weight that is not one packed matrix in the lanes layout", rows, cols);
  LinearWeights l;
  l.rows = rows;
  l.cols = cols;
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
    for (const auto& s : packed) {
      if (r < s.m.rows) return s.kernels->dequant(s.m, r, r + 1, out);
      r -= s.m.rows;
    }
  }
  for (int64_t c = 0; c < cols; ++c)
    out[c] = is_int8() ? float(q8_at(r, c)) * q8_scale[size_t(r)] : f32[size_t(r * cols + c)];
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
  if (o.act_scale != act_scale || o.outlier_cols != outlier_cols)
    fail("fusing linear layers that quantize their shared input differently (activation scale {} vs {}, {} vs {} "
         "outlier columns); quantize them with one scheme",
         act_scale, o.act_scale, outlier_cols.size(), o.outlier_cols.size());
  outlier_w.insert(outlier_w.end(), o.outlier_w.begin(), o.outlier_w.end());
  f32.insert(f32.end(), o.f32.begin(), o.f32.end());
  if (is_int8() && rows % 16 == 0) {  // whole blocks of 16 rows: the layouts follow one another
    q8_vnni.insert(q8_vnni.end(), o.q8_vnni.begin(), o.q8_vnni.end());
    q8_rowsum.insert(q8_rowsum.end(), o.q8_rowsum.begin(), o.q8_rowsum.end());
    q8_scale.insert(q8_scale.end(), o.q8_scale.begin(), o.q8_scale.end());
    rows += o.rows;
    return;
  }
  if (is_int8()) {  // both row-major for a moment (this one's last block is not whole)
    std::vector<int8_t> q(size_t((rows + o.rows) * cols));
    unpack_vnni(*this, q.data(), 0);
    unpack_vnni(o, q.data(), rows);
    q8_scale.insert(q8_scale.end(), o.q8_scale.begin(), o.q8_scale.end());
    rows += o.rows;
    pack_vnni(*this, reinterpret_cast<const uint8_t*>(q.data()), 0);
    return;
  }
  rows += o.rows;
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
      for (size_t c = 0; c < k; ++c) s += int32_t(u8[i * lda + c]) * int32_t(w.q8_at(int64_t(r), int64_t(c)));
      acc[i * ldc + r] = s;
    }
}

void quantize_row_q8_static(const float* x, size_t k, float scale, uint8_t* u8) {
  const float inv = 1.0f / scale;
  for (size_t i = 0; i < k; ++i) {
    // Clamped first (no int overflow on outliers); + copysign(0.5) then truncation rounds half away
    // from zero, in a form the compiler vectorizes.
    const float v = std::min(std::max(x[i] * inv, -127.0f), 127.0f);
    u8[i] = uint8_t(int(v + std::copysign(0.5f, v)) + 128);
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
    bool nibble, wide;
    int64_t group;
    uint64_t call;  // the product it holds
    QActs a;
  };
  thread_local std::vector<std::unique_ptr<Acts>> cache;  // the calling thread's (kept: no allocation per call)
  const bool wide = is_code_book(seg.m), nibble = seg.m.kind == PackedKind::U4 && !seg.m.lanes && !wide;
  const int64_t G = std::min(seg.m.group, seg.m.cols);
  Acts* a = nullptr;
  for (const auto& c : cache)
    if (c->nibble == nibble && c->wide == wide && c->group == G) a = c.get();
  if (!a) a = cache.emplace_back(std::make_unique<Acts>(Acts{nibble, wide, G, 0, {}})).get();
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

void linear_forward(const LinearWeights& w, const float* x, size_t m, float* y, bool accumulate) {
  if (w.is_packed()) return packed_forward(w, x, m, y, accumulate);
  if (!w.is_int8()) {
    gemm_f32_nt(x, w.f32.data(), y, m, size_t(w.rows), size_t(w.cols), accumulate);
    return;
  }
  const size_t k = size_t(w.cols), rows = size_t(w.rows), lda = size_t(w.cols_padded());
  const size_t ldc = size_t(w.rows_padded());
  ThreadPool& pool = default_thread_pool();
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
  std::vector<uint8_t> u8(m * lda, 128);
  std::vector<float> sx(m, w.act_scale);
  pool.parallel_for(m, [&](size_t b, size_t e, int) {
    for (size_t i = b; i < e; ++i) {
      if (w.act_scale > 0)
        quantize_row_q8_static(x + i * k, k, w.act_scale, &u8[i * lda]);
      else
        sx[i] = quantize_row_q8_dyn(x + i * k, k, &u8[i * lda]);
    }
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
  if (ko > 0)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(rows), int(ko), 1.0f, xo.data(), int(ko),
                w.outlier_w.data(), int(ko), 1.0f, y, int(rows));
}

}  // namespace lowbit
