#pragma once
// An allocator for the buffers the kernels stream through (re-laid weights): 64-byte aligned, so
// that a 64-byte vector load never straddles two cache lines (std::vector's 16-byte alignment made
// every load of the int4 / int8 decode kernels touch two lines: ~30 % below a plain read of the same
// bytes on a Zen 5), and buffers of 2 MB or more on 2 MB boundaries with madvise(MADV_HUGEPAGE):
// one TLB entry per 2 MB of a stream of hundreds of MB where the kernel's transparent huge pages
// are set to "madvise" (the advice is a hint; without huge pages nothing changes).
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

namespace lowbit {

template <class T>
struct StreamAllocator {
  using value_type = T;
  static constexpr size_t kHuge = size_t(2) << 20;
  StreamAllocator() = default;
  template <class U>
  StreamAllocator(const StreamAllocator<U>&) {}
  static size_t alignment(size_t n) { return n * sizeof(T) >= kHuge ? kHuge : 64; }
  static size_t huge_bytes(size_t n) { return (n * sizeof(T) + kHuge - 1) / kHuge * kHuge; }
  // Huge buffers come from their own mmap, not the heap: glibc serves big aligned requests from
  // memory it already has (freed earlier, faulted in as 4 KB pages), where the advice changes
  // nothing for the pages already there; in a decode benchmark 60 % of the re-laid weights ended up
  // on 4 KB pages that way. A fresh mapping faults in 2 MB pages from the first touch.
  T* allocate(size_t n) {
    if (alignment(n) != kHuge) return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64)));
    const size_t bytes = huge_bytes(n);
    void* raw = mmap(nullptr, bytes + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) throw std::bad_alloc();
    const uintptr_t r = reinterpret_cast<uintptr_t>(raw), a = (r + kHuge - 1) / kHuge * kHuge;
    if (a > r) munmap(raw, a - r);  // the slack before and after the aligned range
    if (r + kHuge > a) munmap(reinterpret_cast<void*>(a + bytes), r + kHuge - a);
    madvise(reinterpret_cast<void*>(a), bytes, MADV_HUGEPAGE);
    return reinterpret_cast<T*>(a);
  }
  void deallocate(T* p, size_t n) {
    if (alignment(n) == kHuge)
      munmap(p, huge_bytes(n));
    else
      ::operator delete(p, std::align_val_t(64));
  }
  template <class U>
  bool operator==(const StreamAllocator<U>&) const { return true; }
};

template <class T>
using stream_vector = std::vector<T, StreamAllocator<T>>;

}  // namespace lowbit
