#include "lowbit/core/thread_pool.h"

#include <algorithm>
#include <memory>

#include "lowbit/core/error.h"

namespace lowbit {

ThreadPool::ThreadPool(int threads) {
  if (threads <= 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));
  shares_.reset(new Share[size_t(threads)]);
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  {
    std::lock_guard lock(mutex_);  // a worker between its check and its wait holds the lock
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

static void run_chunk(const std::function<void(size_t, size_t, int)>& fn, size_t n, int index, int count) {
  size_t begin = n * size_t(index) / size_t(count), end = n * size_t(index + 1) / size_t(count);
  if (begin < end) fn(begin, end, index);
}

namespace {
constexpr int kSpins = 20000;  // ~tens of microseconds of polling before sleeping
inline void cpu_relax() { __builtin_ia32_pause(); }
}  // namespace

// Hand-off without locks while everyone spins (a decode step makes ~100 jobs of tens of µs, and a
// line moved between this VM's two cores costs ~270 ns: the mutex and condition variables of the
// earlier version took ~3 such moves per job on top of the two a hand-off needs). The mutex and the
// condition variables are only for a thread that has stopped spinning: it counts itself in
// sleepers_ / caller_sleeping_ before it waits, and the other side, having published its change
// (sequentially consistent on both sides), takes the lock and notifies only when it sees one.
void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    int spins = 0;
    while (generation_.load(std::memory_order_acquire) == seen && spins < kSpins) {
      cpu_relax();
      ++spins;
    }
    if (generation_.load() == seen) {
      sleepers_.fetch_add(1);
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return generation_.load() != seen; });
      }
      sleepers_.fetch_sub(1);
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    run_chunk(*job_, job_n_, index, size());
    if (pending_.fetch_sub(1) == 1 && caller_sleeping_.load()) {
      std::lock_guard lock(mutex_);
      done_.notify_one();
    }
  }
}

void ThreadPool::parallel_for(size_t n, const std::function<void(size_t, size_t, int)>& fn) {
  if (workers_.empty() || n <= 1) {
    if (n > 0) fn(0, n, 0);
    return;
  }
  job_ = &fn;
  job_n_ = n;
  pending_.store(int(workers_.size()), std::memory_order_relaxed);
  generation_.fetch_add(1);  // publishes the job (sequentially consistent: see worker_loop)
  if (sleepers_.load() > 0) {
    { std::lock_guard lock(mutex_); }
    wake_.notify_all();
  }
  run_chunk(fn, n, 0, size());
  int spins = 0;
  while (pending_.load(std::memory_order_acquire) != 0 && spins < kSpins) {
    cpu_relax();
    ++spins;
  }
  if (pending_.load() != 0) {
    caller_sleeping_.store(true);
    {
      std::unique_lock lock(mutex_);
      done_.wait(lock, [&] { return pending_.load() == 0; });
    }
    caller_sleeping_.store(false);
  }
}

void ThreadPool::parallel_steal(size_t n, const std::function<void(size_t, int)>& fn) {
  const int count = size();
  if (workers_.empty() || n <= 1) {
    for (size_t i = 0; i < n; ++i) fn(i, 0);
    return;
  }
  if (n >= (size_t(1) << 32)) fail("parallel_steal: {} items (at most 2^32 - 1)", n);
  // Each share is one 64-bit word on its own line: low half its next item, high half its end;
  // owners take from the front and thieves from the back, both by compare-and-swap, so an item is
  // claimed once.
  Share* shares = shares_.get();
  for (int t = 0; t < count; ++t) {
    const uint64_t b = n * size_t(t) / size_t(count), e = n * size_t(t + 1) / size_t(count);
    shares[t].range.store(b | (e << 32), std::memory_order_relaxed);
  }
  parallel_for(size_t(count), [shares, count, &fn](size_t tb, size_t te, int) {
    for (size_t self = tb; self < te; ++self) {
      std::atomic<uint64_t>& own = shares[self].range;
      for (;;) {  // own share, front first
        uint64_t v = own.load(std::memory_order_acquire);
        const uint64_t b = v & 0xffffffffu, e = v >> 32;
        if (b >= e) break;
        if (own.compare_exchange_weak(v, (b + 1) | (e << 32), std::memory_order_acq_rel)) fn(size_t(b), int(self));
      }
      for (;;) {  // then the back of the fullest other share
        size_t victim = size_t(count);
        uint64_t most = 0;
        for (size_t t = 0; t < size_t(count); ++t) {
          const uint64_t v = shares[t].range.load(std::memory_order_acquire);
          const uint64_t b = v & 0xffffffffu, e = v >> 32;
          if (e > b && e - b > most) most = e - b, victim = t;
        }
        if (victim == size_t(count)) break;
        std::atomic<uint64_t>& r = shares[victim].range;
        uint64_t v = r.load(std::memory_order_acquire);
        const uint64_t b = v & 0xffffffffu, e = v >> 32;
        if (b < e && r.compare_exchange_weak(v, b | ((e - 1) << 32), std::memory_order_acq_rel)) fn(size_t(e - 1), int(self));
      }
    }
  });
}

namespace {
int g_default_threads = 0;
}

void set_default_threads(int threads) { g_default_threads = threads; }

ThreadPool& default_thread_pool() {
  static ThreadPool pool([] {
    if (g_default_threads > 0) return g_default_threads;
    if (const char* env = std::getenv("LOWBIT_THREADS")) return std::max(0, std::atoi(env));
    return 0;
  }());
  return pool;
}

}  // namespace lowbit
