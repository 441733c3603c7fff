#pragma once
/// Scalar references for the low-rank tests (frugal/lowrank): matrices with known singular values,
/// dense products and the reconstructions of Tucker-2 and CP factors, all as plain loops in double
/// over row-major host vectors. Independent of Eigen and of the code under test.
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace frugal::ref {

/// Row-major (m, n) product of a (m, k) and b (k, n).
inline std::vector<double> matmul(const std::vector<double>& a, const std::vector<double>& b,
                                  int64_t m, int64_t k, int64_t n) {
  std::vector<double> c(static_cast<std::size_t>(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t p = 0; p < k; ++p) {
      const double av = a[static_cast<std::size_t>(i * k + p)];
      for (int64_t j = 0; j < n; ++j) {
        c[static_cast<std::size_t>(i * n + j)] += av * b[static_cast<std::size_t>(p * n + j)];
      }
    }
  }
  return c;
}

/// Row-major transpose of a (m, n).
inline std::vector<double> transpose(const std::vector<double>& a, int64_t m, int64_t n) {
  std::vector<double> t(a.size());
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      t[static_cast<std::size_t>(j * m + i)] = a[static_cast<std::size_t>(i * n + j)];
    }
  }
  return t;
}

/// Gaussian (m, n) matrix (std::mt19937_64 with `seed`), row-major.
inline std::vector<double> gaussian(int64_t m, int64_t n, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> dist(0.0, 1.0);
  std::vector<double> a(static_cast<std::size_t>(m * n));
  for (double& v : a) v = dist(gen);
  return a;
}

/// (m, k) matrix with orthonormal columns (k <= m): a Gaussian matrix orthonormalised by modified
/// Gram-Schmidt, applied twice ("twice is enough") so the columns are orthonormal to ~1e-15.
inline std::vector<double> orthonormal_columns(int64_t m, int64_t k, uint64_t seed) {
  std::vector<double> q = gaussian(m, k, seed);
  auto at = [&](int64_t i, int64_t j) -> double& { return q[static_cast<std::size_t>(i * k + j)]; };
  for (int pass = 0; pass < 2; ++pass) {
    for (int64_t j = 0; j < k; ++j) {
      for (int64_t p = 0; p < j; ++p) {
        double dot = 0.0;
        for (int64_t i = 0; i < m; ++i) dot += at(i, p) * at(i, j);
        for (int64_t i = 0; i < m; ++i) at(i, j) -= dot * at(i, p);
      }
      double norm = 0.0;
      for (int64_t i = 0; i < m; ++i) norm += at(i, j) * at(i, j);
      norm = std::sqrt(norm);
      for (int64_t i = 0; i < m; ++i) at(i, j) /= norm;
    }
  }
  return q;
}

/// A = Q1 diag(s) Q2^T (m, n) with random orthonormal Q1 (m, k), Q2 (n, k), k = s.size() <=
/// min(m, n): its singular values are exactly s (up to rounding), whatever their order.
inline std::vector<double> matrix_with_singular_values(int64_t m, int64_t n,
                                                       const std::vector<double>& s,
                                                       uint64_t seed) {
  const auto k = static_cast<int64_t>(s.size());
  std::vector<double> q1 = orthonormal_columns(m, k, seed);
  const std::vector<double> q2 = orthonormal_columns(n, k, seed + 1);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < k; ++j) q1[static_cast<std::size_t>(i * k + j)] *= s[static_cast<std::size_t>(j)];
  }
  return matmul(q1, transpose(q2, n, k), m, k, n);
}

/// W (co, ci, kh, kw) = sum_{a, b} U_out[o, a] U_in[i, b] core[a, b, h, w] for core (r1, r2, kh,
/// kw), U_out (co, r1), U_in (ci, r2); row-major.
inline std::vector<double> tucker2_reconstruct(const std::vector<double>& core,
                                               const std::vector<double>& u_out,
                                               const std::vector<double>& u_in, int64_t co,
                                               int64_t ci, int64_t r1, int64_t r2, int64_t kh,
                                               int64_t kw) {
  std::vector<double> w(static_cast<std::size_t>(co * ci * kh * kw), 0.0);
  for (int64_t o = 0; o < co; ++o)
    for (int64_t i = 0; i < ci; ++i)
      for (int64_t a = 0; a < r1; ++a)
        for (int64_t b = 0; b < r2; ++b) {
          const double f = u_out[static_cast<std::size_t>(o * r1 + a)] *
                           u_in[static_cast<std::size_t>(i * r2 + b)];
          for (int64_t hw = 0; hw < kh * kw; ++hw) {
            w[static_cast<std::size_t>((o * ci + i) * kh * kw + hw)] +=
                f * core[static_cast<std::size_t>((a * r2 + b) * kh * kw + hw)];
          }
        }
  return w;
}

/// W (co, ci, kh, kw) = sum_r A[o, r] B[i, r] C[h, r] D[w, r] for factors A (co, R), B (ci, R),
/// C (kh, R), D (kw, R); row-major.
inline std::vector<double> cp_reconstruct(const std::vector<double>& a,
                                          const std::vector<double>& b,
                                          const std::vector<double>& c,
                                          const std::vector<double>& d, int64_t co, int64_t ci,
                                          int64_t kh, int64_t kw, int64_t rank) {
  std::vector<double> w(static_cast<std::size_t>(co * ci * kh * kw), 0.0);
  for (int64_t o = 0; o < co; ++o)
    for (int64_t i = 0; i < ci; ++i)
      for (int64_t h = 0; h < kh; ++h)
        for (int64_t x = 0; x < kw; ++x) {
          double acc = 0.0;
          for (int64_t r = 0; r < rank; ++r) {
            acc += a[static_cast<std::size_t>(o * rank + r)] *
                   b[static_cast<std::size_t>(i * rank + r)] *
                   c[static_cast<std::size_t>(h * rank + r)] *
                   d[static_cast<std::size_t>(x * rank + r)];
          }
          w[static_cast<std::size_t>(((o * ci + i) * kh + h) * kw + x)] = acc;
        }
  return w;
}

/// Relative Frobenius distance ||a - b|| / ||b||.
inline double relative_distance(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0.0, den = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return den == 0.0 ? std::sqrt(num) : std::sqrt(num / den);
}

}  // namespace frugal::ref
