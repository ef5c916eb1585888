#pragma once
// A fixed pool of worker threads for data-parallel loops. parallel_for splits [0, n) into one
// contiguous chunk per thread (the calling thread takes the first) and returns when all are done.
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace lowbit {

class ThreadPool {
 public:
  explicit ThreadPool(int threads = 0);  // 0: one per hardware thread
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return int(workers_.size()) + 1; }
  // fn(begin, end, thread_index) over [0, n) split into size() chunks.
  void parallel_for(size_t n, const std::function<void(size_t, size_t, int)>& fn);
  // fn(i, thread_index) for every i in [0, n), balanced at run time: each thread starts on its own
  // contiguous share (front to back) and, when done, takes items from the back of the share with
  // the most left. For memory-bound loops where one thread's share can take longer than another's
  // (the two cores do not get equal bandwidth), so that neither waits at the end.
  void parallel_steal(size_t n, const std::function<void(size_t, int)>& fn);

 private:
  void worker_loop(int index);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  // A job is published by bumping generation_ after job_ / job_n_ / pending_ are written; workers
  // and the caller spin briefly before sleeping, since most jobs here last microseconds.
  const std::function<void(size_t, size_t, int)>* job_ = nullptr;
  size_t job_n_ = 0;
  std::atomic<uint64_t> generation_{0};
  alignas(64) std::atomic<int> pending_{0};  // apart from generation_: the workers write it
  alignas(64) std::atomic<int> sleepers_{0};  // workers waiting on wake_
  std::atomic<bool> caller_sleeping_{false};  // the caller waiting on done_
  std::atomic<bool> stop_{false};
  struct alignas(64) Share {  // parallel_steal's range of one thread
    std::atomic<uint64_t> range;
  };
  std::unique_ptr<Share[]> shares_;
};

// The process-wide pool used by the models (sized from $LOWBIT_THREADS or the hardware).
ThreadPool& default_thread_pool();
// Sets the size of default_thread_pool() before its first use; 0 means all hardware threads.
void set_default_threads(int threads);

}  // namespace lowbit
