// k-means passes on the host: assignment over blocks of points (oneTBB), and exact fixed-point
// centroid sums (integer additions in any order give the same result, so the thread count does
// not matter).
#include <tbb/enumerable_thread_specific.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <vector>

#include "quant/vector_internal.hpp"

namespace frugal::cpu {

void kmeans_assign(ConstTensorView points, ConstTensorView centroids, int32_t* assign, float* dist,
                   const ExecContext& ctx) {
  const int64_t n = points.shape[0], d = points.shape[1], k = centroids.shape[0];
  const float* x = points.data_as<float>();
  const float* c = centroids.data_as<float>();
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, k * d));
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, grain),
                      [&](const tbb::blocked_range<int64_t>& r) {
                        for (int64_t i = r.begin(); i < r.end(); ++i) {
                          float best = detail::kmeans_dist(x + i * d, c, d);
                          int32_t arg = 0;
                          for (int64_t j = 1; j < k; ++j) {
                            const float v = detail::kmeans_dist(x + i * d, c + j * d, d);
                            if (v < best) {
                              best = v;
                              arg = static_cast<int32_t>(j);
                            }
                          }
                          assign[i] = arg;
                          dist[i] = best;
                        }
                      });
  });
}

void kmeans_accumulate(ConstTensorView points, const int32_t* assign, int64_t k, double scale,
                       int64_t* sums, int64_t* counts, const ExecContext& ctx) {
  const int64_t n = points.shape[0], d = points.shape[1];
  const float* x = points.data_as<float>();
  tbb::enumerable_thread_specific<std::vector<int64_t>> local(
      [&] { return std::vector<int64_t>(static_cast<size_t>(k * (d + 1)), 0); });
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, 1024),
                      [&](const tbb::blocked_range<int64_t>& r) {
                        std::vector<int64_t>& s = local.local();
                        for (int64_t i = r.begin(); i < r.end(); ++i) {
                          const int64_t a = assign[i];
                          for (int64_t j = 0; j < d; ++j)
                            s[a * d + j] += detail::kmeans_fixed(x[i * d + j], scale);
                          s[k * d + a] += 1;
                        }
                      });
  });
  for (const std::vector<int64_t>& s : local) {
    for (int64_t t = 0; t < k * d; ++t) sums[t] += s[t];
    for (int64_t a = 0; a < k; ++a) counts[a] += s[k * d + a];
  }
}

}  // namespace frugal::cpu
