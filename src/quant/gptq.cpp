#include "lowbit/quant/gptq.h"

#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "lowbit/core/error.h"
#include "lowbit/core/thread_pool.h"

namespace lowbit {

namespace {

// Column ranges of the groups of a row (QuantSpec::group: 0 one per row, -1 one per tensor).
struct GroupLayout {
  int64_t size, per_row;
  bool per_tensor;
  GroupLayout(int64_t cols, int64_t group)
      : size(group > 0 ? std::min(group, cols) : cols), per_row(group > 0 ? (cols + size - 1) / size : 1),
        per_tensor(group < 0) {}
  int64_t of(int64_t col) const { return col / size; }
};

// Upper Cholesky factor of H⁻¹ (row-major, only the upper triangle meaningful), H damped in place.
std::vector<double> inverse_cholesky_upper(std::vector<double> h, int64_t n, double damp) {
  double mean_diag = 0;
  for (int64_t i = 0; i < n; ++i) mean_diag += h[size_t(i * n + i)];
  mean_diag /= double(n);
  for (int64_t i = 0; i < n; ++i) h[size_t(i * n + i)] += damp * mean_diag;
  // H = L Lᵀ, then H⁻¹ from the factor, then H⁻¹ = Uᵀ U.
  if (int info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', lapack_int(n), h.data(), lapack_int(n)); info != 0)
    fail("GPTQ: the damped Hessian is not positive definite (dpotrf info {}); raise --damp", info);
  if (int info = LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'L', lapack_int(n), h.data(), lapack_int(n)); info != 0)
    fail("GPTQ: inverting the Hessian failed (dpotri info {})", info);
  for (int64_t i = 0; i < n; ++i)  // symmetrize: the upper triangle from the lower one
    for (int64_t j = i + 1; j < n; ++j) h[size_t(i * n + j)] = h[size_t(j * n + i)];
  if (int info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', lapack_int(n), h.data(), lapack_int(n)); info != 0)
    fail("GPTQ: the inverse Hessian is not positive definite (dpotrf info {}); raise --damp", info);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < i; ++j) h[size_t(i * n + j)] = 0;
  return h;
}

}  // namespace

GptqResult gptq_quantize(const float* w_in, int64_t rows, int64_t cols, const std::vector<double>& hessian,
                         const std::string& format, const QuantSpec& spec, const GptqOptions& opt) {
  if (format != "affine" && format != "symmetric")
    fail("GPTQ quantizes to the uniform formats (affine, symmetric), not '{}'", format);
  // diagonal_only reads diag(H): the whole matrix, or the diagonal alone (cols values).
  const bool diag_given = opt.diagonal_only && int64_t(hessian.size()) == cols;
  if (int64_t(hessian.size()) != cols * cols && !diag_given)
    fail("GPTQ: Hessian has {} values, expected {}²{}", hessian.size(), cols, opt.diagonal_only ? " or its diagonal" : "");
  auto hdiag = [&](int64_t c) { return hessian[size_t(diag_given ? c : c * cols + c)]; };
  const GroupLayout groups(cols, spec.group);
  const int64_t n_grids = groups.per_tensor ? 1 : rows * groups.per_row;

  // Work in the processing order (a permutation of the columns under act-order).
  std::vector<int64_t> perm(static_cast<size_t>(cols));
  std::iota(perm.begin(), perm.end(), 0);
  std::vector<double> h;  // H in processing order; not needed (nor copied: cols² doubles) for diagonal_only
  if (!opt.diagonal_only) h = hessian;
  if (opt.act_order)
    std::stable_sort(perm.begin(), perm.end(),
                     [&](int64_t a, int64_t b) { return hdiag(a) > hdiag(b); });
  std::vector<double> w(size_t(rows * cols));  // w[r][k] = W[r][perm[k]]
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < cols; ++k) w[size_t(r * cols + k)] = w_in[r * cols + perm[size_t(k)]];
  if (opt.act_order && !opt.diagonal_only)
    for (int64_t a = 0; a < cols; ++a)
      for (int64_t b = 0; b < cols; ++b) h[size_t(a * cols + b)] = hessian[size_t(perm[size_t(a)] * cols + perm[size_t(b)])];
  // Inputs that never fired carry no information: fix their diagonal, zero their weights.
  for (int64_t k = 0; k < cols; ++k) {
    const int64_t c = perm[size_t(k)];
    if (hdiag(c) != 0) continue;
    if (!opt.diagonal_only) h[size_t(k * cols + k)] = 1;
    for (int64_t r = 0; r < rows; ++r) w[size_t(r * cols + k)] = 0;
  }
  // Diagonal only: U = chol(H⁻¹) is diagonal, so no error reaches another column; skip the O(cols³)
  // factorisations and the updates (imatrix on a 7B-shaped layer: minutes -> seconds).
  const std::vector<double> u = opt.diagonal_only ? std::vector<double>{} : inverse_cholesky_upper(std::move(h), cols, opt.damp);

  std::vector<UniformGrid> grids(static_cast<size_t>(n_grids));
  // Importance of each input column for the clipping search: diag(H), its mean square activation.
  std::vector<double> importance(static_cast<size_t>(cols));
  for (int64_t c = 0; c < cols; ++c) importance[size_t(c)] = hdiag(c);
  auto fit_group = [&](int64_t r, int64_t g, bool from_input) {  // from the (updated) weights of group g of row r
    const int64_t c0 = g * groups.size, c1 = std::min(cols, (g + 1) * groups.size);
    thread_local std::vector<double> v;
    v.resize(size_t(c1 - c0));
    // Without act-order the processing index of a column is the column itself.
    for (int64_t c = c0; c < c1; ++c) v[size_t(c - c0)] = from_input ? double(w_in[r * cols + c]) : w[size_t(r * cols + c)];
    const double* weight = &importance[size_t(c0)];
    if (opt.element_weights && opt.clip_steps > 0) {
      thread_local std::vector<double> ew;
      ew.resize(v.size());
      double sum_sq = 0;
      for (double x : v) sum_sq += x * x;
      const double sigma2 = 2 * sum_sq / double(std::max<size_t>(1, v.size()));
      for (size_t k = 0; k < v.size(); ++k) ew[k] = weight[k] * std::sqrt(sigma2 + v[k] * v[k]);
      weight = ew.data();
    }
    grids[size_t(r * groups.per_row + g)] =
        UniformGrid::fit_search(format, spec.bits, v.data(), weight, c1 - c0, opt.clip_steps, opt.clip_max_shrink);
  };
  if (groups.per_tensor) {
    double lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < rows * cols; ++i) {
      lo = std::min(lo, double(w_in[i]));
      hi = std::max(hi, double(w_in[i]));
    }
    grids[0] = UniformGrid::fit(format, spec.bits, lo, hi);
  } else if (opt.act_order) {  // static groups: every grid from the unquantized weights
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t g = 0; g < groups.per_row; ++g) fit_group(r, g, true);
  }

  std::vector<uint8_t> codes(size_t(rows * cols));
  std::vector<float> deq(size_t(rows * cols));
  const int64_t bs = std::max(1, opt.block);
  std::vector<double> err(size_t(rows * bs));
  ThreadPool& pool = default_thread_pool();
  for (int64_t i1 = 0; i1 < cols; i1 += bs) {
    const int64_t i2 = std::min(cols, i1 + bs), count = i2 - i1;
    // Rows are independent within a block: one chunk of rows per thread.
    pool.parallel_for(size_t(rows), [&](size_t rb, size_t re, int) {
      for (int64_t r = int64_t(rb); r < int64_t(re); ++r) {
        double* wr = &w[size_t(r * cols)];
        for (int64_t k = i1; k < i2; ++k) {
          const int64_t col = perm[size_t(k)];
          const int64_t g = groups.per_tensor ? 0 : groups.of(col);
          const size_t gi = groups.per_tensor ? 0 : size_t(r * groups.per_row + g);
          if (!groups.per_tensor && !opt.act_order && col == g * groups.size) fit_group(r, g, false);
          const UniformGrid& grid = grids[gi];
          const uint8_t c = grid.code(float(wr[k]));
          const float q = grid.value(c);
          codes[size_t(r * cols + col)] = c;
          deq[size_t(r * cols + col)] = q;
          if (opt.diagonal_only) continue;
          const double e = (wr[k] - double(q)) / u[size_t(k * cols + k)];
          err[size_t(r * bs + (k - i1))] = e;
          const double* uk = &u[size_t(k * cols)];
          for (int64_t j = k + 1; j < i2; ++j) wr[j] -= e * uk[j];
        }
      }
    });
    // Lazy update of the columns after the block: W[:, i2:] -= Err · U[i1:i2, i2:].
    if (i2 < cols && !opt.diagonal_only)
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), int(cols - i2), int(count), -1.0, err.data(),
                  int(bs), &u[size_t(i1 * cols + i2)], int(cols), 1.0, &w[size_t(i2)], int(cols));
  }
  GptqResult out;
  out.quantized = pack_uniform(format, spec, rows, cols, codes, grids);
  out.dequantized = std::move(deq);
  return out;
}

GptqResult rtn_uniform(const float* w, int64_t rows, int64_t cols, const std::string& format, const QuantSpec& spec) {
  std::vector<double> identity(size_t(cols * cols), 0.0);
  for (int64_t i = 0; i < cols; ++i) identity[size_t(i * cols + i)] = 1.0;
  GptqOptions opt;
  opt.damp = 0;
  return gptq_quantize(w, rows, cols, identity, format, spec, opt);
}

double output_error(const float* w, const float* w_hat, int64_t rows, int64_t cols, const std::vector<double>& h) {
  // Blocks of rows: D (block x cols), D·H by one dsymm, then Σ D ∘ (D H).
  constexpr int64_t kRows = 64;
  double total = 0;
  std::vector<double> d(size_t(std::min(rows, kRows) * cols)), dh(d.size());
  for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
    const int64_t n = std::min(kRows, rows - r0);
    for (int64_t i = 0; i < n * cols; ++i) d[size_t(i)] = double(w[r0 * cols + i]) - double(w_hat[r0 * cols + i]);
    cblas_dsymm(CblasRowMajor, CblasRight, CblasUpper, int(n), int(cols), 1.0, h.data(), int(cols), d.data(), int(cols),
                0.0, dh.data(), int(cols));
    for (int64_t i = 0; i < n * cols; ++i) total += d[size_t(i)] * dh[size_t(i)];
  }
  return total;
}

}  // namespace lowbit
