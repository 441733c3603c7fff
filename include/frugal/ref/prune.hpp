#pragma once
/// Readable sorting-based references of the prune module that tests compare against.
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

namespace frugal::ref {

/// Mask (1 = kept) pruning the k smallest scores; ties prune the lower index first. Full sort.
inline std::vector<uint8_t> prune_mask_sorted(const std::vector<double>& s, int64_t k) {
  std::vector<int64_t> idx(s.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(),
            [&](int64_t a, int64_t b) { return s[a] < s[b] || (s[a] == s[b] && a < b); });
  std::vector<uint8_t> m(s.size(), 1);
  for (int64_t i = 0; i < k; ++i) m[idx[i]] = 0;
  return m;
}

/// The j-th largest (1-based) value of s, by a full descending sort.
inline double kth_largest(std::vector<double> s, int64_t j) {
  std::sort(s.begin(), s.end(), std::greater<double>());
  return s[j - 1];
}

/// N:M mask along rows of length K: keep the n largest of each group of m (ties: lower index).
inline std::vector<uint8_t> nm_mask_sorted(const std::vector<double>& s, int n, int m) {
  std::vector<uint8_t> out(s.size(), 0);
  for (std::size_t g = 0; g < s.size(); g += m) {
    std::vector<int> idx(m);
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return s[g + a] > s[g + b]; });
    for (int i = 0; i < n; ++i) out[g + idx[i]] = 1;
  }
  return out;
}

/// y (M, N) = (w .* mask) (M, K) x (K, N), double accumulation.
inline std::vector<double> masked_matmul(const std::vector<double>& w,
                                         const std::vector<uint8_t>& mask,
                                         const std::vector<double>& x, int64_t M, int64_t K,
                                         int64_t N) {
  std::vector<double> y(M * N, 0.0);
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t k = 0; k < K; ++k) {
      const double a = mask[i * K + k] ? w[i * K + k] : 0.0;
      if (a == 0.0) continue;
      for (int64_t j = 0; j < N; ++j) y[i * N + j] += a * x[k * N + j];
    }
  }
  return y;
}

/// Zhu & Gupta (2017) gradual sparsity at step t: s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3,
/// clamped to s_i before t0 and s_f after t0 + n dt.
inline double gradual_sparsity(double s_i, double s_f, int64_t t, int64_t t0, int64_t n,
                               int64_t dt) {
  if (t <= t0) return s_i;
  if (t >= t0 + n * dt) return s_f;
  const double f = 1.0 - static_cast<double>(t - t0) / static_cast<double>(n * dt);
  return s_f + (s_i - s_f) * f * f * f;
}

}  // namespace frugal::ref
