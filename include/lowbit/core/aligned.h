#pragma once
// An allocator for the buffers the kernels stream through (re-laid weights): 64-byte aligned, so
// that a 64-byte vector load never straddles two cache lines (std::vector's 16-byte alignment made
// every load of the int4 / int8 decode kernels touch two lines: ~30 % below a plain read of the same
// bytes on a Zen 5), and buffers of 2 MB or more on 2 MB boundaries with madvise(MADV_HUGEPAGE):
// one TLB entry per 2 MB of a stream of hundreds of MB where the kernel's transparent huge pages
// are set to "madvise" (the advice is a hint; without huge pages nothing changes).
#include <sys/mman.h>

#include <cstddef>
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
  T* allocate(size_t n) {
    const size_t align = alignment(n), bytes = (n * sizeof(T) + align - 1) / align * align;
    void* p = ::operator new(bytes, std::align_val_t(align));
    if (align == kHuge) madvise(p, bytes, MADV_HUGEPAGE);
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t n) { ::operator delete(p, std::align_val_t(alignment(n))); }
  template <class U>
  bool operator==(const StreamAllocator<U>&) const { return true; }
};

template <class T>
using stream_vector = std::vector<T, StreamAllocator<T>>;

}  // namespace lowbit
