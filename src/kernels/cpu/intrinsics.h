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
