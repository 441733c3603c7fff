// k-means passes on a CUDA device: the assignment (one thread per point, the same float distance
// as the host, see ::frugal::detail::kmeans_dist) and the exact fixed-point centroid sums (64-bit
// integer atomics, whose result does not depend on their order).
#include "common/check.cuh"
#include "common/launch.cuh"
#include "cu_ops.hpp"
#include "quant/vector_internal.hpp"

namespace frugal::cu {
namespace {

__global__ void assign_kernel(const float* x, const float* c, int64_t n, int64_t k, int64_t d,
                              int32_t* assign, float* dist) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    float best = ::frugal::detail::kmeans_dist(x + i * d, c, d);
    int32_t arg = 0;
    for (int64_t j = 1; j < k; ++j) {
      const float v = ::frugal::detail::kmeans_dist(x + i * d, c + j * d, d);
      if (v < best) {
        best = v;
        arg = static_cast<int32_t>(j);
      }
    }
    assign[i] = arg;
    dist[i] = best;
  }
}

__global__ void accumulate_kernel(const float* x, const int32_t* assign, int64_t n, int64_t d,
                                  double scale, unsigned long long* sums,
                                  unsigned long long* counts) {
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < n * d;
       t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = t / d, j = t % d;
    const int64_t a = assign[i];
    // Two's complement: adding the unsigned image of a signed value is signed addition mod 2^64.
    atomicAdd(&sums[a * d + j],
              static_cast<unsigned long long>(::frugal::detail::kmeans_fixed(x[t], scale)));
    if (j == 0) atomicAdd(&counts[a], 1ull);
  }
}

}  // namespace

void kmeans_assign(ConstTensorView points, ConstTensorView centroids, TensorView assign,
                   TensorView dist, const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(points.device.index));
  const int64_t n = points.shape[0], d = points.shape[1], k = centroids.shape[0];
  const LaunchShape g = grid_stride_launch(n, 128);
  assign_kernel<<<g.blocks, g.threads, 0, stream_of(ctx)>>>(
      points.data_as<float>(), centroids.data_as<float>(), n, k, d, assign.data_as<int32_t>(),
      dist.data_as<float>());
  FRUGAL_CUDA_CHECK_LAUNCH();
}

void kmeans_accumulate(ConstTensorView points, ConstTensorView assign, double fixed_scale,
                       TensorView sums, TensorView counts, const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(points.device.index));
  const int64_t n = points.shape[0], d = points.shape[1];
  const LaunchShape g = grid_stride_launch(n * d);
  accumulate_kernel<<<g.blocks, g.threads, 0, stream_of(ctx)>>>(
      points.data_as<float>(), assign.data_as<int32_t>(), n, d, fixed_scale,
      reinterpret_cast<unsigned long long*>(sums.data_as<int64_t>()),
      reinterpret_cast<unsigned long long*>(counts.data_as<int64_t>()));
  FRUGAL_CUDA_CHECK_LAUNCH();
}

}  // namespace frugal::cu
