#include "lowbit/kernels/bandwidth.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <memory>
#include <vector>

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

// Sum of 64-bit words; four independent chains so the loads, not the adds, set the pace.
uint64_t sum_words(const uint64_t* p, size_t n) {
  uint64_t a = 0, b = 0, c = 0, d = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) a += p[i], b += p[i + 1], c += p[i + 2], d += p[i + 3];
  for (; i < n; ++i) a += p[i];
  return a + b + c + d;
}

}  // namespace

BandwidthResult measure_read_bandwidth(size_t bytes, int repeats) {
  if (bytes == 0) bytes = std::max<size_t>(size_t(1) << 30, 4 * last_level_cache_bytes());
  if (repeats < 1) fail("bandwidth: repeats must be >= 1");
  ThreadPool& pool = default_thread_pool();
  const size_t n = bytes / sizeof(uint64_t);
  std::unique_ptr<uint64_t[]> buf(new uint64_t[n]);
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
    pool.parallel_for(n, [&](size_t b, size_t e, int t) { partial[size_t(t)] = sum_words(buf.get() + b, e - b); });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (uint64_t v : partial) sink = sink + v;
    if (r > 0) rates.push_back(double(n * sizeof(uint64_t)) / s / 1e9);
  }
  std::sort(rates.begin(), rates.end());
  return {rates.back(), rates[rates.size() / 2], n * sizeof(uint64_t), pool.size(), repeats};
}

}  // namespace lowbit
