// LlamaModel's decode step split over the thread pool by heads and MLP channels (llama.h).
//
// Why: a decode step is ~90 matrix products of a few MB each. Run one after another, each split
// over the threads by rows, every product ends with its output spread over the cores' caches and
// the next one starts by handing the quantized input to the other core: on this VM a cache line
// moved between the two vCPUs costs ~300-600 ns when they sit on different dies (bench/NOTES.md,
// 14th session), and the kernels then read those lines one at a time as they need them. A scratch
// harness (15th session) streamed a decode step's int4 matrices 5-15 % faster as one job per step
// than as one job per product with freshly quantized inputs.
//
// Here each thread t owns KV heads [kv0, kv1) with their query heads and intermediate channels
// [i0, i1), and keeps its own copy of the hidden state x. Per layer it computes, on its own:
//   RMSNorm(x) -> q, k, v rows of its heads -> RoPE -> its heads' keys / values into the cache ->
//   attention of its query heads -> o_proj over its heads' columns (a partial sum of all rows);
// the threads exchange partial sums (x += Σ_t partial_t, the same additions in the same order on
// every thread, so the copies of x stay identical), then
//   RMSNorm(x) -> gate, up rows of its channels -> SiLU(gate)·up -> down_proj over its channels;
// and exchange again. Two meetings per layer, and only the 2 x hidden partial sums cross between
// cores; each thread streams its own weight rows / column parts (split_columns), one layer after
// another. The row-parallel products (o_proj, down_proj) are also balanced at run time: a thread
// done with its own part takes 64-row items of another's (SplitShare). Megatron-LM splits a
// transformer layer over GPUs the same way (Shoeybi et al. 2019, "Megatron-LM", section 3:
// column-parallel q/k/v and gate/up, row-parallel o and down).
//
// At load (arrange_split), each thread's rows of q / k / v / gate / up become segments of their own
// and, with its o / down parts, are copied into one allocation per thread in the order a step reads
// them (codes in one, group parameters in another): a thread then streams one run of memory per
// token instead of starting seven streams per layer. Each start cost ~1.8 µs (per call, time against
// bytes over a decode step's products: k / v rows at 22 GB/s per core against 30 for gate / up);
// tinyllama int4 decoded 3.5-5 % faster, llama-3.2-1b int4 6-18 % (bench/NOTES.md).
//
// The final norm and the output head run in the same job (where the head is an integer lanes
// matrix): no hand-off to the pool between the last layer and the head, and each thread's share of
// the vocabulary rows is streamed in calls of up to four 64-row items, like o / down (the head by
// itself was ~500 calls of one item per token). 0-1.2 % less time per token (bench/NOTES.md).
#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string_view>
#include <thread>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "llama_internal.h"
#include "lowbit/core/aligned.h"
#include "lowbit/core/error.h"
#include "lowbit/core/numerics.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/kernels/activation.h"
#include "lowbit/kernels/attention.h"
#include "lowbit/kernels/linear.h"
#include "lowbit/models/attention.h"

namespace lowbit {
namespace {

// Columns a split must start on: the weights' groups (the lanes layout keeps whole groups), and
// whole 64-column units.
int64_t split_align(const LinearWeights& w) {
  const PackedMatrix& m = w.packed.front().m;
  return m.group >= m.cols ? 64 : std::max<int64_t>(m.group, 64);
}

bool integer_lanes(const LinearWeights& w, size_t segments) {
  if (w.packed.size() != segments || !w.col_parts.empty() || !w.outlier_cols.empty()) return false;
  for (const auto& s : w.packed)
    if (!s.q8 || !s.m.lanes || !s.kernels->matmul_q8) return false;
  return true;
}

// Where the threads' shares of `inter` channels start (after the first's), on multiples of `align`.
std::vector<int64_t> channel_bounds(int64_t inter, int parts, int64_t align) {
  std::vector<int64_t> b;
  for (int t = 1; t < parts; ++t) b.push_back(int64_t(t) * inter / parts / align * align);
  return b;
}

// x[i] += Σ_t partial_t[i] (partial_t = slot + t · stride), the threads' partial sums added in
// thread order, element by element: the same result on every thread. 16 elements at a time, so that
// the compiler keeps them in vector registers (the scalar loop it replaced: ~0.03 ms of a tinyllama
// decode token, 44 exchanges; bench/NOTES.md).
void add_partials(float* __restrict x, const float* __restrict slot, int T, size_t stride, int n) {
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    float sum[16];
    for (int j = 0; j < 16; ++j) sum[j] = slot[i + j];
    for (int t = 1; t < T; ++t)
      for (int j = 0; j < 16; ++j) sum[j] += slot[size_t(t) * stride + size_t(i + j)];
    for (int j = 0; j < 16; ++j) x[i + j] += sum[j];
  }
  for (; i < n; ++i) {
    float sum = slot[i];
    for (int t = 1; t < T; ++t) sum += slot[size_t(t) * stride + size_t(i)];
    x[i] += sum;
  }
}

// Memory for one thread's weights (llama.h, arrange_split), from the stream allocator (2 MB pages)
// and not cleared: the pages are first touched by the copies, layer by layer, while the layers'
// former storage is freed, so the model's resident size grows by about one layer at a time.
struct SplitArena {
  StreamAllocator<uint8_t> alloc;
  uint8_t* codes = nullptr;
  uint8_t* params = nullptr;
  size_t code_bytes = 0, param_bytes = 0;
  SplitArena(size_t c, size_t p) : codes(alloc.allocate(c)), code_bytes(c), param_bytes(p) {
    params = alloc.allocate(p);
  }
  ~SplitArena() {
    alloc.deallocate(codes, code_bytes);
    alloc.deallocate(params, param_bytes);
  }
  SplitArena(const SplitArena&) = delete;
  SplitArena& operator=(const SplitArena&) = delete;
};

}  // namespace

// One thread's buffers; apart from the others' (its own lines).
struct alignas(64) SplitThread {
  int kv0 = 0, kv1 = 0;            // its KV heads
  int64_t i0 = 0, i1 = 0;          // its intermediate channels
  std::vector<float> x;            // its copy of the hidden state (thread 0 works on the caller's)
  std::vector<float> xn, q, k, v, att, gu, act, scores;
  QActs acts_in, acts_o, acts_down, acts_head;
  int bad_layer = -1;              // thread 0: the first layer whose output was not finite
  std::vector<float> bad_x;        // and that output
};

// One thread's rows of a row-parallel product (o_proj, down_proj: every row of its column part) in
// work items of 64 rows, as [front, back) packed in one word: the owner takes items from the front,
// any thread done with its own (or waiting for the others) from the back. The static split by heads
// and channels alone left one thread waiting ~14 % of a step at the meetings (the vCPUs do not get
// equal bandwidth); these two products are a third of a layer's bytes, enough to even it out.
struct alignas(64) SplitShare {
  std::atomic<uint64_t> range{0};
  const PackedSegment* seg = nullptr;  // written before range (release), read after it (acquire)
  const QActs* acts = nullptr;
};

// The owner's items of `share`, from the front, up to four per call of run(first, n) (one kernel
// call, one stream) and never more than half of those left, so that the last ones stay small for
// the balance: 1-1.5 % less time per token than one call per item (bench/NOTES.md).
template <class Run>
void run_own(SplitShare& share, Run&& run) {
  for (uint64_t r = share.range.load(std::memory_order_relaxed); uint32_t(r) < uint32_t(r >> 32);) {
    const uint32_t left = uint32_t(r >> 32) - uint32_t(r), take = std::clamp<uint32_t>(left / 2, 1, 4);
    if (share.range.compare_exchange_weak(r, r + take, std::memory_order_relaxed)) {
      run(uint32_t(r), take);
      r = share.range.load(std::memory_order_relaxed);
    }
  }
}

// Takes the last item left in `share` into `item` (false: none left).
bool take_back(SplitShare& share, uint64_t& item) {
  for (uint64_t r = share.range.load(std::memory_order_acquire); uint32_t(r) < uint32_t(r >> 32);) {
    item = (r >> 32) - 1;
    if (share.range.compare_exchange_weak(r, (item << 32) | uint32_t(r), std::memory_order_acquire)) return true;
  }
  return false;
}

// Work items a thread has finished, its own and taken, since the model's first split step (its own
// line; counted on across steps, so that no reset can race with a thread that is still reading).
struct alignas(64) SplitDone {
  std::atomic<uint64_t> items{0};
};

struct LlamaModel::DecodeSplit {
  std::vector<SplitThread> threads;
  std::unique_ptr<SplitShare[]> shares;  // [2][threads], double-buffered like `partial`
  std::unique_ptr<SplitDone[]> done;     // [threads]
  std::unique_ptr<SplitShare[]> head;    // [threads]: the output head's rows, items of 64
  std::vector<float> partial;  // [2][threads][hidden padded to a line]: double-buffered partial sums
  size_t stride = 0;
  uint64_t done_before = 0;  // all threads' items done by the end of the last step
};

int LlamaModel::split_parts() const {
  const char* v = std::getenv("LOWBIT_DECODE");
  if (v && *v && std::string_view(v) != "split") {
    if (std::string_view(v) == "rows") return 0;
    fail("LOWBIT_DECODE={}: expected split or rows", v);
  }
  const int T = default_thread_pool().size();
  const ModelConfig& c = cfg_;
  if (T < 2 || c.num_kv_heads % T != 0 || c.head_dim % 16 != 0 || c.intermediate_size < 64 * T) return 0;
  return T;
}

bool LlamaModel::split_layer(Layer& L) {
  const int T = split_;
  const int hd = cfg_.head_dim, group = cfg_.num_heads / cfg_.num_kv_heads, kv_per = cfg_.num_kv_heads / T;
  if (!integer_lanes(L.wqkv, 3) || !integer_lanes(L.wo, 1) || !integer_lanes(L.w_gate_up, 2) ||
      !integer_lanes(L.w_down, 1))
    return false;
  // One quantization of each input serves all the rows that read it.
  const auto& qkv = L.wqkv.packed;
  if (qkv[0].m.group != qkv[1].m.group || qkv[0].m.group != qkv[2].m.group ||
      L.w_gate_up.packed[0].m.group != L.w_gate_up.packed[1].m.group)
    return false;
  std::vector<int64_t> o_bounds;
  const int64_t ao = split_align(L.wo);
  for (int t = 1; t < T; ++t) {
    o_bounds.push_back(int64_t(t) * kv_per * group * hd);
    if (o_bounds.back() % ao != 0) return false;
  }
  // Every layer's threads must own the same channels (the same split of down_proj's columns).
  const std::vector<int64_t> d_bounds = channel_bounds(cfg_.intermediate_size, T, split_align(L.w_down));
  for (size_t i = 0; i < d_bounds.size(); ++i)  // (multiples of 64: row ranges of the lanes blocks too)
    if (d_bounds[i] <= (i ? d_bounds[i - 1] : 0)) return false;
  if (split_channels_.empty()) split_channels_ = d_bounds;
  if (d_bounds != split_channels_) return false;
  L.wo = L.wo.split_columns(o_bounds);
  L.w_down = L.w_down.split_columns(d_bounds);
  return true;
}

void LlamaModel::arrange_split() {
  const int T = split_, hd = cfg_.head_dim, group = cfg_.num_heads / cfg_.num_kv_heads, nkv = cfg_.num_kv_heads;
  const int64_t inter = cfg_.intermediate_size;
  // Thread t's rows of q, k / v and gate / up.
  struct Rows {
    int64_t q0, q1, k0, k1, i0, i1;
  };
  std::vector<Rows> rows;
  for (int t = 0; t < T; ++t) {
    const int64_t kv0 = int64_t(t) * nkv / T, kv1 = int64_t(t + 1) * nkv / T;
    rows.push_back({kv0 * group * hd, kv1 * group * hd, kv0 * hd, kv1 * hd, t == 0 ? 0 : split_channels_[size_t(t - 1)],
                    t == T - 1 ? inter : split_channels_[size_t(t)]});
  }
  // A thread's pieces of a layer in the order decode_split reads them.
  struct Piece {
    const PackedSegment* seg;
    int64_t r0, r1;
  };
  auto pieces = [&](const Layer& L, int t) {
    const Rows& r = rows[size_t(t)];
    const auto &qkv = L.wqkv.packed, &gu = L.w_gate_up.packed;
    const PackedSegment &o = L.wo.packed[size_t(t)], &down = L.w_down.packed[size_t(t)];
    return std::array<Piece, 7>{Piece{&qkv[0], r.q0, r.q1}, Piece{&qkv[1], r.k0, r.k1}, Piece{&qkv[2], r.k0, r.k1},
                                Piece{&o, 0, o.m.rows},        Piece{&gu[0], r.i0, r.i1},  Piece{&gu[1], r.i0, r.i1},
                                Piece{&down, 0, down.m.rows}};
  };
  std::vector<std::shared_ptr<SplitArena>> arenas;
  for (int t = 0; t < T; ++t) {
    LanesBytes total;
    for (const Layer& L : layers_)
      for (const Piece& p : pieces(L, t)) {
        const LanesBytes b = lanes_rows_bytes(p.seg->m, p.r0, p.r1);
        total.codes += b.codes;
        total.params += b.params;
      }
    arenas.push_back(std::make_shared<SplitArena>(total.codes, total.params));
  }
  std::vector<LanesBytes> at(static_cast<size_t>(T));  // where each thread's next piece goes
  for (Layer& L : layers_) {
    // [kind][thread]: q, k, v, o, gate, up, down.
    std::array<std::vector<PackedSegment>, 7> parts;
    for (int t = 0; t < T; ++t) {
      const std::array<Piece, 7> ps = pieces(L, t);
      SplitArena& a = *arenas[size_t(t)];
      LanesBytes& next = at[size_t(t)];
      for (size_t k = 0; k < ps.size(); ++k) {
        PackedSegment seg = *ps[k].seg;
        seg.m = lanes_rows_into(ps[k].seg->m, ps[k].r0, ps[k].r1, a.codes + next.codes, a.params + next.params);
        seg.keep = arenas[size_t(t)];
        const LanesBytes b = lanes_rows_bytes(ps[k].seg->m, ps[k].r0, ps[k].r1);
        next.codes += b.codes;
        next.params += b.params;
        parts[k].push_back(std::move(seg));
      }
    }
    // (Replacing the segments frees the layer's former copies.)
    L.wqkv.packed = parts[0];
    L.wqkv.packed.insert(L.wqkv.packed.end(), parts[1].begin(), parts[1].end());
    L.wqkv.packed.insert(L.wqkv.packed.end(), parts[2].begin(), parts[2].end());
    L.wo.packed = std::move(parts[3]);
    L.w_gate_up.packed = parts[4];
    L.w_gate_up.packed.insert(L.w_gate_up.packed.end(), parts[5].begin(), parts[5].end());
    L.w_down.packed = std::move(parts[6]);
#ifdef __GLIBC__
    // The former copies under 2 MB (k / v rows, parameter arrays) came from the heap, where glibc
    // keeps freed memory: without this llama-3.2-1b int4 held 63 MB more after the copies than the
    // row-split model does.
    malloc_trim(0);
#endif
  }
}

bool LlamaModel::decode_split(float* x, int pos, KVSession& s, const Work& w, float* logits) const {
  const int T = split_, hidden = cfg_.hidden_size, hd = cfg_.head_dim, half = hd / 2;
  const int nh = cfg_.num_heads, nkv = cfg_.num_kv_heads, group = nh / nkv;
  const int64_t inter = cfg_.intermediate_size;
  if (!split_scratch_) {
    auto d = std::make_shared<DecodeSplit>();
    d->threads.resize(size_t(T));
    const std::vector<int64_t>& b = split_channels_;
    for (int t = 0; t < T; ++t) {
      SplitThread& th = d->threads[size_t(t)];
      th.kv0 = t * nkv / T;
      th.kv1 = (t + 1) * nkv / T;
      th.i0 = t == 0 ? 0 : b[size_t(t - 1)];
      th.i1 = t == T - 1 ? inter : b[size_t(t)];
      const size_t nq = size_t(th.kv1 - th.kv0) * size_t(group * hd), nkvd = size_t(th.kv1 - th.kv0) * size_t(hd);
      const size_t ni = size_t(th.i1 - th.i0);
      th.x.resize(size_t(hidden));
      th.xn.resize(size_t(hidden));
      th.q.resize(nq);
      th.k.resize(nkvd);
      th.v.resize(nkvd);
      th.att.resize(nq);
      th.gu.resize(2 * ni);
      th.act.resize(ni);
    }
    d->stride = (size_t(hidden) + 15) / 16 * 16;
    d->partial.assign(2 * size_t(T) * d->stride, 0.0f);
    d->shares = std::make_unique<SplitShare[]>(2 * size_t(T));
    d->done = std::make_unique<SplitDone[]>(size_t(T));
    d->head = std::make_unique<SplitShare[]>(size_t(T));
    split_scratch_ = std::move(d);
  }
  DecodeSplit& d = *split_scratch_;
  for (auto& th : d.threads) {
    th.scores.resize(attend_scratch(group, pos + 1));
    th.bad_layer = -1;
  }
  const float* cos_row = w.cos_t.data();
  const float* sin_row = w.sin_t.data();
  const int lo = cfg_.sliding_window > 0 ? std::max(0, pos - cfg_.sliding_window + 1) : 0;
  const float scale = 1.0f / std::sqrt(float(hd));
  const SiluMulFn silu_mul = silu_mul_best();
  // The output head in this job too, where it is one integer lanes matrix: its vocabulary rows in
  // items of 64, thread t's share [t n / T, (t + 1) n / T) taken from the front by t and from the
  // back by any thread done with its own. Every thread holds the same x after the last exchange,
  // so each quantizes its own copy of the final norm's output and may run any item.
  const LinearWeights& head_w = lm_head_.rows == 0 ? embed_ : lm_head_;
  const PackedSegment* head = logits && integer_lanes(head_w, 1) ? &head_w.packed[0] : nullptr;
  const uint64_t head_items = head ? uint64_t(head->m.rows + 63) / 64 : 0;
  for (int t = 0; t < T; ++t)
    d.head[size_t(t)].range.store((head_items * uint64_t(t + 1) / uint64_t(T)) << 32 |
                                      (head_items * uint64_t(t) / uint64_t(T)),
                                  std::memory_order_relaxed);

  // y = a thread's segment (all its rows) times the quantized input: one kernel call, one stream
  // (calls of 64 rows each started their stream over: 0.3-0.7 % slower per token, bench/NOTES.md).
  auto rows = [](const PackedSegment& seg, const QActs& a, float* y) {
    seg.kernels->matmul_q8(seg.m, a, 0, seg.m.rows, y, 0, false);
  };
  d.done_before = 0;  // (the last step's job has ended: every count is final)
  for (int t = 0; t < T; ++t) d.done_before += d.done[size_t(t)].items.load(std::memory_order_relaxed);
  default_thread_pool().parallel_for(size_t(T), [&](size_t part, size_t, int) {
    SplitThread& th = d.threads[part];
    float* xt = part == 0 ? x : th.x.data();
    if (part != 0) std::copy_n(x, hidden, xt);
    int exchanges = 0;
    const uint64_t items = uint64_t(hidden + 63) / 64;  // of each part of a row-parallel product
    // This thread's items done; all threads' by the end of the current exchange.
    uint64_t finished = d.done[part].items.load(std::memory_order_relaxed), target = d.done_before;
    // Items [i, i + n) of a row-parallel product (64 rows each) in one kernel call.
    auto item = [&](const PackedSegment& sg, const QActs& qa, float* y, uint64_t i, uint64_t n = 1) {
      const int64_t r0 = int64_t(i) * 64;
      sg.kernels->matmul_q8(sg.m, qa, r0, std::min<int64_t>(hidden, r0 + 64 * int64_t(n)), y + r0, 0, false);
      finished += n;
      d.done[part].items.store(finished, std::memory_order_release);  // its rows written before
    };
    // One item of another thread's part of the current product, if any is left (false: none).
    auto take_one = [&] {
      const size_t e = size_t(exchanges % 2);
      for (int k = 1; k < T; ++k) {
        const size_t u = (part + size_t(k)) % size_t(T);
        SplitShare& other = d.shares[e * size_t(T) + u];
        // (Before the other thread publishes this product, its share still holds the one two
        // exchanges back, every item taken.)
        if (uint64_t back; take_back(other, back)) {
          prefetch_acts(*other.acts);  // written by the other core just before
          item(*other.seg, *other.acts, d.partial.data() + (e * size_t(T) + u) * d.stride, back);
          return true;
        }
      }
      return false;
    };
    // This thread's column part of a row-parallel product into its partial sum, from the front of
    // its share (the others may take items from the back).
    auto row_parallel = [&](const PackedSegment& seg, const QActs& a) {
      const size_t e = size_t(exchanges % 2);
      SplitShare& mine = d.shares[e * size_t(T) + part];
      mine.seg = &seg;
      mine.acts = &a;
      mine.range.store(items << 32, std::memory_order_release);
      float* y = d.partial.data() + (e * size_t(T) + part) * d.stride;
      run_own(mine, [&](uint64_t i, uint64_t n) { item(seg, a, y, i, n); });
    };
    // x += Σ_t partial_t once every item of every part is done; until then, items of the other
    // threads' parts (also those of a thread still before its product, once it gets there). Every
    // item of exchange e is done before any thread passes it, so a thread is at most one exchange
    // ahead: the other buffer of partial sums and shares is free for it to write.
    auto exchange = [&] {
      target += uint64_t(T) * items;
      for (int idle = 0;;) {
        if (take_one()) continue;
        uint64_t all = 0;
        for (int t = 0; t < T; ++t) all += d.done[size_t(t)].items.load(std::memory_order_acquire);
        if (all >= target) break;
        if (++idle < 20000)
          __builtin_ia32_pause();
        else
          std::this_thread::yield();  // (more threads than cores)
      }
      const float* slot = d.partial.data() + size_t(exchanges % 2) * size_t(T) * d.stride;
      for (int t = 0; t < T; ++t)
        if (size_t(t) != part) prefetch_lines(slot + size_t(t) * d.stride, size_t(hidden) * sizeof(float));
      add_partials(xt, slot, T, d.stride, hidden);
      ++exchanges;
    };
    const int nq = (th.kv1 - th.kv0) * group * hd, nk = (th.kv1 - th.kv0) * hd;
    const int64_t ni = th.i1 - th.i0;
    for (int l = 0; l < cfg_.num_layers; ++l) {
      const Layer& L = layers_[size_t(l)];
      // Attention: q, k, v of this thread's heads.
      rms_norm(xt, L.attn_norm.data(), th.xn.data(), hidden, cfg_.rms_eps);
      const auto& qkv = L.wqkv.packed;  // (arrange_split: q parts, k parts, v parts)
      quantize_token_acts(qkv[part], th.xn.data(), size_t(hidden), th.acts_in);
      rows(qkv[part], th.acts_in, th.q.data());
      rows(qkv[size_t(T) + part], th.acts_in, th.k.data());
      rows(qkv[2 * size_t(T) + part], th.acts_in, th.v.data());
      if (!L.bqkv.empty()) {
        const float* bq = L.bqkv.data() + size_t(th.kv0) * size_t(group * hd);
        const float* bk = L.bqkv.data() + size_t(nh * hd) + size_t(th.kv0 * hd);
        const float* bv = bk + size_t(nkv * hd);
        for (int i = 0; i < nq; ++i) th.q[size_t(i)] += bq[i];
        for (int i = 0; i < nk; ++i) th.k[size_t(i)] += bk[i], th.v[size_t(i)] += bv[i];
      }
      for (int h = 0; h < nq / hd; ++h) apply_rope(th.q.data() + size_t(h * hd), cos_row, sin_row, half);
      for (int j = 0; j < th.kv1 - th.kv0; ++j) apply_rope(th.k.data() + size_t(j * hd), cos_row, sin_row, half);
      s.store_heads(l, th.kv0, th.kv1, pos, th.k.data(), th.v.data());
      for (int j = 0; j < th.kv1 - th.kv0; ++j) {
        s.attend(l, th.kv0 + j, th.q.data() + size_t(j * group * hd), group, lo, pos - lo + 1, scale, th.scores.data(),
                 th.att.data() + size_t(j * group * hd));
      }
      const PackedSegment& o = L.wo.packed[part];
      quantize_token_acts(o, th.att.data(), size_t(nq), th.acts_o);
      row_parallel(o, th.acts_o);
      exchange();

      // MLP: gate / up of this thread's channels, then its share of down_proj.
      rms_norm(xt, L.ffn_norm.data(), th.xn.data(), hidden, cfg_.rms_eps);
      const auto& gu = L.w_gate_up.packed;  // (gate parts, up parts)
      quantize_token_acts(gu[part], th.xn.data(), size_t(hidden), th.acts_in);
      rows(gu[part], th.acts_in, th.gu.data());
      rows(gu[size_t(T) + part], th.acts_in, th.gu.data() + ni);
      silu_mul(th.gu.data(), th.gu.data() + ni, th.act.data(), size_t(ni));
      const PackedSegment& down = L.w_down.packed[part];
      quantize_token_acts(down, th.act.data(), size_t(ni), th.acts_down);
      row_parallel(down, th.acts_down);
      exchange();
      if (part == 0 && th.bad_layer < 0 && find_non_finite(xt, size_t(hidden)) >= 0) {
        th.bad_layer = l;
        th.bad_x.assign(xt, xt + hidden);
      }
    }
    if (!head) return;
    rms_norm(xt, final_norm_.data(), th.xn.data(), hidden, cfg_.rms_eps);
    quantize_token_acts(*head, th.xn.data(), size_t(hidden), th.acts_head);
    auto head_rows = [&](uint64_t i, uint64_t n) {
      const int64_t r0 = int64_t(i) * 64, r1 = std::min<int64_t>(head->m.rows, int64_t(i + n) * 64);
      head->kernels->matmul_q8(head->m, th.acts_head, r0, r1, logits + r0, 0, false);
    };
    run_own(d.head[part], head_rows);
    for (int k = 1; k < T; ++k)
      for (uint64_t back; take_back(d.head[(part + size_t(k)) % size_t(T)], back);) head_rows(back, 1);
  });
  const SplitThread& t0 = d.threads[0];
  s.check_range("model.layers.");
  if (t0.bad_layer >= 0) check_finite_activations(t0.bad_x.data(), 1, hidden, pos, "model.layers.", t0.bad_layer);
  return head != nullptr;
}

}  // namespace lowbit
