#pragma once
// The machine's memory read bandwidth, STREAM-style (McCalpin's STREAM measures copy/scale/add/triad;
// decoding only reads weights, so this is its read-only "sum" kernel): each thread sums its slice of
// a buffer much larger than the last-level cache; the best of `repeats` passes counts. The buffer comes
// from the decode kernels' own allocator (2 MB pages, core/aligned.h) and is read with their load width
// (64 bytes where the CPU has AVX-512), touching each 4 KB page 16 KB ahead as they do (the L2
// prefetcher restarts at page boundaries): the best read the machine gives them, so that no kernel
// can stream faster than this "limit" (4 KB pages and 8-byte loads read ~15 % less; no page touch
// ~20 % less).
#include <cstddef>

namespace lowbit {

struct BandwidthResult {
  double gb_s = 0;       // best pass, 1e9 bytes per second
  double median_gb_s = 0;
  size_t bytes = 0;      // buffer size
  int threads = 0, repeats = 0;
};

// bytes == 0: 1 GiB, or 4x the last-level cache when that is larger (read from sysfs).
// Uses default_thread_pool() (all its threads).
BandwidthResult measure_read_bandwidth(size_t bytes = 0, int repeats = 5);

// Median nanoseconds for a value to go from default_thread_pool()'s first thread to its second and
// back (two atomics on their own cache lines, both threads spinning), over `rounds` round trips in
// batches; 0 with a single thread. A decode step hands work between the threads ~100 times and
// moves its activations across with it: on a VM whose two vCPUs the host places on near or far
// cores this moved between ~100 and ~600 ns from one minute to the next, and decode speed with it.
double measure_core_round_trip_ns(int rounds = 20000);

}  // namespace lowbit
