#include "lowbit/kernels/bandwidth.h"

#include "cpu/intrinsics.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <functional>
#include <memory>
#include <vector>

#include "lowbit/core/aligned.h"
#include "lowbit/core/error.h"
#include "lowbit/core/thread_pool.h"

namespace lowbit {

namespace {

// The largest cache of cpu0 (sysfs, e.g. "480M" / "2048K"), or 0.
size_t last_level_cache_bytes() {
  size_t best = 0;
  for (int i = 0; i < 8; ++i) {
    std::ifstream f("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/size");
    std::string s;
    if (!(f >> s) || s.empty()) continue;
    size_t v = 0, k = 0;
    while (k < s.size() && s[k] >= '0' && s[k] <= '9') v = v * 10 + size_t(s[k++] - '0');
    if (k < s.size() && (s[k] == 'K' || s[k] == 'k')) v <<= 10;
    if (k < s.size() && (s[k] == 'M' || s[k] == 'm')) v <<= 20;
    best = std::max(best, v);
  }
  return best;
}

constexpr size_t kPageAhead = 16384;  // see sum_words_avx512

// Sum of 64-bit words; four independent chains so the loads, not the adds, set the pace.
uint64_t sum_words(const uint64_t* p, size_t n) {
  uint64_t a = 0, b = 0, c = 0, d = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    touch_page_ahead(p + i, kPageAhead);
    a += p[i], b += p[i + 1], c += p[i + 2], d += p[i + 3];
  }
  for (; i < n; ++i) a += p[i];
  return a + b + c + d;
}

// The same with 64-byte loads (the decode kernels' width): on a Zen 5 VM 74 GB/s where 8-byte loads
// read 66 (both on 2 MB pages). p 64-byte aligned. Like the decode kernels, it touches each 4 KB page
// ahead of the loads (16 KB): the L2 stream prefetcher restarts at page boundaries, and a plain
// sequential read left 10-28 % of the bandwidth unused (in-process A/B, bench/NOTES.md).
__attribute__((target("avx512f"))) uint64_t sum_words_avx512(const uint64_t* p, size_t n) {
  __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    touch_page_ahead(p + i, kPageAhead);
    a = _mm512_add_epi64(a, _mm512_load_si512(p + i));
    b = _mm512_add_epi64(b, _mm512_load_si512(p + i + 8));
    c = _mm512_add_epi64(c, _mm512_load_si512(p + i + 16));
    d = _mm512_add_epi64(d, _mm512_load_si512(p + i + 24));
  }
  uint64_t t = _mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(a, b), _mm512_add_epi64(c, d)));
  for (; i < n; ++i) t += p[i];
  return t;
}

}  // namespace

BandwidthResult measure_read_bandwidth(size_t bytes, int repeats) {
  if (bytes == 0) bytes = std::max<size_t>(size_t(1) << 30, 4 * last_level_cache_bytes());
  if (repeats < 1) fail("bandwidth: repeats must be >= 1");
  ThreadPool& pool = default_thread_pool();
  const size_t n = bytes / 64 * 8;  // whole 64-byte lines
  // The best read the machine gives the kernels: their allocator (2 MB pages where the kernel allows,
  // core/aligned.h) and their load width where the CPU has AVX-512. (Plain 4 KB pages and 8-byte loads
  // measured 60-66 GB/s where this reads 74, below what the decode kernels themselves stream.)
  // Allocated, not value-initialised (a vector would clear 1-2 GB on this thread first): the pages are
  // first touched below by the threads that read them.
  StreamAllocator<uint64_t> alloc;
  std::unique_ptr<uint64_t[], std::function<void(uint64_t*)>> buf(alloc.allocate(n), [&](uint64_t* p) { alloc.deallocate(p, n); });
  __builtin_cpu_init();
  const bool wide = __builtin_cpu_supports("avx512f");
  auto sum = [&](const uint64_t* p, size_t count) { return wide ? sum_words_avx512(p, count) : sum_words(p, count); };
  // Touch every page from the thread that will read it (first-touch placement), with values that
  // keep the sum from being folded away.
  pool.parallel_for(n, [&](size_t b, size_t e, int) {
    for (size_t i = b; i < e; ++i) buf[i] = i * 0x9E3779B97F4A7C15ull;
  });
  std::vector<double> rates;
  volatile uint64_t sink = 0;
  for (int r = 0; r < repeats + 1; ++r) {  // the first pass warms up and is not counted
    std::vector<uint64_t> partial(size_t(pool.size()), 0);
    const auto t0 = std::chrono::steady_clock::now();
    // Slices of whole 64-byte lines, so that every slice stays aligned.
    pool.parallel_for(n / 8, [&](size_t b, size_t e, int t) { partial[size_t(t)] = sum(buf.get() + 8 * b, 8 * (e - b)); });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (uint64_t v : partial) sink = sink + v;
    if (r > 0) rates.push_back(double(n * sizeof(uint64_t)) / s / 1e9);
  }
  std::sort(rates.begin(), rates.end());
  return {rates.back(), rates[rates.size() / 2], n * sizeof(uint64_t), pool.size(), repeats};
}

double measure_core_round_trip_ns(int rounds) {
  ThreadPool& pool = default_thread_pool();
  if (pool.size() < 2 || rounds < 1) return 0.0;
  struct alignas(64) Flag {
    std::atomic<int> v{0};
  };
  Flag ping, pong;
  constexpr int kBatch = 1000;
  const int batches = std::max(1, rounds / kBatch);
  std::vector<double> per_batch;
  // Thread 0 sends i and waits for it back; thread 1 returns each value; the other threads idle.
  pool.parallel_for(size_t(pool.size()), [&](size_t b, size_t e, int) {
    for (size_t t = b; t < e; ++t) {
      if (t == 0) {
        for (int k = 0; k < batches; ++k) {
          const auto t0 = std::chrono::steady_clock::now();
          for (int i = k * kBatch + 1; i <= (k + 1) * kBatch; ++i) {
            ping.v.store(i, std::memory_order_release);
            while (pong.v.load(std::memory_order_acquire) != i) __builtin_ia32_pause();
          }
          per_batch.push_back(std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / kBatch);
        }
      } else if (t == 1) {
        for (int i = 1; i <= batches * kBatch; ++i) {
          while (ping.v.load(std::memory_order_acquire) != i) __builtin_ia32_pause();
          pong.v.store(i, std::memory_order_release);
        }
      }
    }
  });
  std::sort(per_batch.begin(), per_batch.end());
  return per_batch[per_batch.size() / 2];
}

}  // namespace lowbit
