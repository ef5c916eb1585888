#include "lowbit/core/thread_pool.h"

#include <algorithm>
#include <memory>

namespace lowbit {

ThreadPool::ThreadPool(int threads) {
  if (threads <= 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
    ++generation_;
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

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    int spins = 0;
    while (generation_.load(std::memory_order_acquire) == seen && spins < kSpins) {
      cpu_relax();
      ++spins;
    }
    if (generation_.load(std::memory_order_acquire) == seen) {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return generation_.load() != seen; });
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    run_chunk(*job_, job_n_, index, size());
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
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
  {
    std::lock_guard lock(mutex_);
    job_ = &fn;
    job_n_ = n;
    pending_.store(int(workers_.size()), std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  run_chunk(fn, n, 0, size());
  int spins = 0;
  while (pending_.load(std::memory_order_acquire) != 0 && spins < kSpins) {
    cpu_relax();
    ++spins;
  }
  if (pending_.load(std::memory_order_acquire) != 0) {
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return pending_.load() == 0; });
  }
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
