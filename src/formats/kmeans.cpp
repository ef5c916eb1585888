// k-means (Lloyd) code books: 2^k centroids per row (QuantSpec::group 0) or for the whole tensor
// (-1), k = 1..8; each weight stores the index of its nearest centroid.
//
//   codebook = Lloyd's algorithm on the values of the row (or tensor), QuantSpec::iterations steps
//   code     = argmin_j |x - codebook[j]|   (ties: the lower index)
//   x^       = codebook[code]
//
// Parts:
//   "q"         U8        [rows][ceil(cols * k / 8)]  k-bit codes, little-endian bit stream per row
//   "codebook"  F16 (F32) [rows or 1][2^k]            centroids in ascending order
//
// The algorithm, deterministic and exact in one dimension:
//   - sort the values; centroid j starts at the sorted value at quantile (j + 1/2) / 2^k;
//   - with sorted centroids every cluster is a contiguous range of the sorted values, bounded by the
//     midpoints between neighbouring centroids, so an iteration is 2^k binary searches plus prefix
//     sums (the mean of a range is (S[hi] - S[lo]) / (hi - lo));
//   - an empty cluster is re-seeded at the value farthest from its centroid (a range end of the
//     cluster with the largest squared error, each cluster used once per iteration);
//   - stop after `iterations` steps or when no centroid moves.
// The centroids are then rounded to the stored type and the codes chosen against the stored values.
//
// Bits per weight: k (each row padded to a byte) + 16 * 2^k / cols per row (per tensor: / rows*cols).
#include <algorithm>
#include <cmath>
#include <numeric>

#include "format_internal.h"
#include "lowbit/core/error.h"

namespace lowbit {

namespace {

constexpr int kMinBits = 1, kMaxBits = 8;

void check_kmeans_group(std::string_view what, int64_t group) {
  if (group != 0 && group != -1)
    fail("{}: kmeans takes group 0 (a code book per row) or -1 (one per tensor), got {}", what, group);
}

// Lloyd's algorithm on `sorted` (ascending, n >= 1): returns `count` centroids in ascending order.
std::vector<double> lloyd_1d(const std::vector<float>& sorted, int count, int iterations) {
  const int64_t n = int64_t(sorted.size());
  std::vector<double> prefix(size_t(n) + 1, 0.0), prefix_sq(size_t(n) + 1, 0.0);  // sums of x and x^2
  for (int64_t i = 0; i < n; ++i) {
    prefix[i + 1] = prefix[i] + sorted[i];
    prefix_sq[i + 1] = prefix_sq[i] + double(sorted[i]) * sorted[i];
  }

  std::vector<double> centroids(static_cast<size_t>(count));
  for (int j = 0; j < count; ++j)
    centroids[j] = sorted[std::min<int64_t>(n - 1, int64_t((j + 0.5) * double(n) / count))];

  // Cluster j is sorted[lo[j], hi[j]).
  std::vector<int64_t> lo(static_cast<size_t>(count)), hi(static_cast<size_t>(count));
  for (int it = 0; it < iterations; ++it) {
    // Assignment: values <= the midpoint go to the lower centroid (ties: lower index).
    for (int j = 0; j < count; ++j) {
      lo[j] = j == 0 ? 0 : hi[j - 1];
      if (j + 1 == count) {
        hi[j] = n;
      } else {
        const double mid = 0.5 * (centroids[j] + centroids[j + 1]);
        hi[j] = std::upper_bound(sorted.begin() + lo[j], sorted.end(), mid,
                                 [](double m, float v) { return m < double(v); }) - sorted.begin();
      }
    }
    // Update: the mean of each non-empty cluster; empty ones re-seeded at the farthest value.
    std::vector<double> next(centroids);
    std::vector<double> sse(size_t(count), 0.0);
    for (int j = 0; j < count; ++j) {
      const int64_t m = hi[j] - lo[j];
      if (m == 0) continue;
      const double sum = prefix[hi[j]] - prefix[lo[j]];
      next[j] = sum / double(m);
      sse[j] = std::max(0.0, (prefix_sq[hi[j]] - prefix_sq[lo[j]]) - sum * sum / double(m));
    }
    for (int j = 0; j < count; ++j) {
      if (hi[j] > lo[j]) continue;
      int worst = -1;
      for (int i = 0; i < count; ++i)
        if (hi[i] - lo[i] >= 2 && sorted[lo[i]] != sorted[hi[i] - 1] && (worst < 0 || sse[i] > sse[worst])) worst = i;
      if (worst < 0) break;  // every cluster holds one distinct value: nothing to split
      const double a = sorted[lo[worst]], b = sorted[hi[worst] - 1];
      next[j] = std::fabs(a - next[worst]) > std::fabs(b - next[worst]) ? a : b;
      sse[worst] = -1;  // use each cluster once per iteration
    }
    std::sort(next.begin(), next.end());
    if (next == centroids) break;
    centroids.swap(next);
  }
  return centroids;
}

// Index of the value of `book` (ascending, size >= 1) nearest to x; ties: the lower index.
int nearest_sorted(const float* book, int count, float x) {
  const int above = int(std::lower_bound(book, book + count, x) - book);  // first book[j] >= x
  if (above == 0) return 0;
  if (above == count) return count - 1;
  // book[above - 1] < x <= book[above]; equal values further down would have been found first.
  const double below_err = double(x) - book[above - 1], above_err = double(book[above]) - x;
  int j = above_err < below_err ? above : above - 1;
  while (j > 0 && book[j - 1] == book[j]) --j;  // duplicates: the lowest index
  return j;
}

}  // namespace

QuantizedTensor quantize_kmeans_ref(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec) {
  check_quantize_args("kmeans", rows, cols, spec, kMinBits, kMaxBits);
  check_kmeans_group("quantize kmeans", spec.group);
  const bool per_tensor = spec.group == -1;
  const int count = 1 << spec.bits;
  const int64_t books = per_tensor ? 1 : rows;
  const int64_t span = per_tensor ? rows * cols : cols;  // values per code book

  std::vector<double> centroids;
  centroids.reserve(size_t(books * count));
  std::vector<float> sorted(static_cast<size_t>(span));
  for (int64_t b = 0; b < books; ++b) {
    std::copy(w + b * span, w + (b + 1) * span, sorted.begin());
    std::sort(sorted.begin(), sorted.end());
    const std::vector<double> c = lloyd_1d(sorted, count, spec.iterations);
    centroids.insert(centroids.end(), c.begin(), c.end());
  }

  const DType dtype = choose_param_dtype(centroids, Round::nearest);
  std::vector<float> book(centroids.size());
  for (size_t i = 0; i < book.size(); ++i) book[i] = round_param(centroids[i], dtype, Round::nearest);
  // (centroids are means of finite floats, so they fit float32; F16 is checked by choose_param_dtype)

  std::vector<uint8_t> codes(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float* row_book = book.data() + (per_tensor ? 0 : r * count);
    for (int64_t c = 0; c < cols; ++c) codes[r * cols + c] = uint8_t(nearest_sorted(row_book, count, w[r * cols + c]));
  }

  QuantizedTensor out;
  out.format = "kmeans";
  out.spec = spec;
  out.rows = rows;
  out.cols = cols;
  out.parts.push_back(pack_code_rows(codes, rows, cols, spec.bits));
  out.parts.push_back(make_param_part("codebook", dtype, {books, count}, book));
  return out;
}

void dequantize_kmeans_ref(const QuantizedTensor& q, float* out) {
  check_quantized_header(q, "kmeans", kMinBits, kMaxBits);
  check_kmeans_group(fmt::format("kmeans tensor [{} x {}]", q.rows, q.cols), q.spec.group);
  const bool per_tensor = q.spec.group == -1;
  const int count = 1 << q.spec.bits;
  const std::vector<float> book =
      load_param_part(q, q.require("codebook", {per_tensor ? 1 : q.rows, count}, DType::F16, DType::F32));
  const std::vector<uint8_t> codes = unpack_code_rows(q, q.spec.bits);  // every k-bit code indexes the book
  for (int64_t r = 0; r < q.rows; ++r) {
    const float* row_book = book.data() + (per_tensor ? 0 : r * count);
    for (int64_t c = 0; c < q.cols; ++c) out[r * q.cols + c] = row_book[codes[r * q.cols + c]];
  }
}

double bits_per_weight_kmeans(int64_t rows, int64_t cols, const QuantSpec& spec) {
  check_quantize_args("kmeans", rows, cols, spec, kMinBits, kMaxBits);
  check_kmeans_group("kmeans bits_per_weight", spec.group);
  return layout_bits_per_weight(rows, cols,
                                {{{rows, int64_t(packed_bytes(cols, spec.bits))}, DType::U8},
                                 {{spec.group == -1 ? 1 : rows, int64_t(1) << spec.bits}, DType::F16}});
}

}  // namespace lowbit
