#pragma once
// <immintrin.h> for the ISA files. GCC 12's AVX-512 headers build _mm512_undefined_* from an
// uninitialised variable, so inlining e.g. _mm512_cvtepi32_ps or _mm512_reduce_add_ps warns in
// every caller (GCC bug 105593, fixed in GCC 13): silenced for the header's own lines only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#else
#include <immintrin.h>
#endif

#include <cstddef>
#include <cstdint>

namespace lowbit {
// Where `at` starts a 4 KB page, prefetch (into L2) the line `ahead` bytes on: the L2 stream
// prefetcher stops at every page boundary and restarts only after misses in the new page, so a
// stream that touches its pages early keeps it running (bench/NOTES.md, 11th session).
inline void touch_page_ahead(const void* at, size_t ahead) {
  if ((reinterpret_cast<uintptr_t>(at) & 4095) == 0) __builtin_prefetch(static_cast<const char*>(at) + ahead, 0, 2);
}
}  // namespace lowbit
