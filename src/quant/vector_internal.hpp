#pragma once
// Backend contract of k-means (include/frugal/quant/vector.hpp). Internal header, usable from host
// code and from .cu files. points (n, d) and centroids (k, d) are contiguous f32.
#include <math.h>

#include <cstdint>

#include "frugal/core/config.hpp"
#include "frugal/core/tensor.hpp"
#include "quant/qgemm_internal.hpp"  // qgemm_mul / qgemm_add: products and sums never fused

namespace frugal::detail {

/// Squared distance of two d-vectors: float, coordinates in index order, no fma (identical on
/// every backend).
FRUGAL_INLINE float kmeans_dist(const float* x, const float* c, int64_t d) {
  float s = 0.f;
  for (int64_t j = 0; j < d; ++j) {
    const float t = x[j] - c[j];
    s = qgemm_add(s, qgemm_mul(t, t));
  }
  return s;
}

/// Fixed-point value of a coordinate: rint(x * scale) (scale a power of two: exact product).
FRUGAL_INLINE int64_t kmeans_fixed(float x, double scale) {
  return static_cast<int64_t>(rint(static_cast<double>(x) * scale));
}

}  // namespace frugal::detail

namespace frugal::cpu {

/// assign (n) i32 / dist (n) f32: nearest centroid (first on ties) and its squared distance.
void kmeans_assign(ConstTensorView points, ConstTensorView centroids, int32_t* assign, float* dist,
                   const ExecContext& ctx);
/// sums (k, d) += fixed-point coordinates per cluster, counts (k) += members.
void kmeans_accumulate(ConstTensorView points, const int32_t* assign, int64_t k, double scale,
                       int64_t* sums, int64_t* counts, const ExecContext& ctx);

}  // namespace frugal::cpu
