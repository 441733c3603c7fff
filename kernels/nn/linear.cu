// Linear's bias ops on CUDA: the row-broadcast bias add (grid-stride) and the bias-gradient
// column sum. The column sum runs in two deterministic stages (no atomics): blocks of 32 columns
// x 8 row lanes sum fixed chunks of rows in double, then one pass adds the chunk partials of each
// column in chunk order and accumulates into grad_bias.
#include <cuda_runtime.h>

#include <algorithm>
#include <type_traits>

#include "common/check.cuh"
#include "common/launch.cuh"
#include "core/dtype_dispatch.hpp"
#include "cu_ops.hpp"
#include "nn/basic_ops.hpp"

namespace frugal::cu {
namespace {

template <class T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

constexpr int kColsPerBlock = 32;    // one warp across 32 adjacent columns: coalesced rows
constexpr int kRowLanes = 8;         // row lanes per block
constexpr int64_t kChunkRows = 256;  // rows per partial sum (fixed: the result depends only on M)

template <class T>
__global__ void add_bias_kernel(T* __restrict__ y, const T* __restrict__ b, int64_t n,
                                int64_t cols) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    y[i] = T(static_cast<Acc<T>>(y[i]) + static_cast<Acc<T>>(b[i % cols]));
  }
}

/// partial[chunk, col] = sum of grad[r, col] over the rows r of chunk blockIdx.y, in double.
template <class T>
__global__ void column_partial_kernel(const T* __restrict__ g, double* __restrict__ partial,
                                      int64_t m, int64_t n) {
  __shared__ double s[kRowLanes][kColsPerBlock];
  const int64_t col = int64_t(blockIdx.x) * kColsPerBlock + threadIdx.x;
  const int64_t r0 = int64_t(blockIdx.y) * kChunkRows;
  const int64_t r1 = min(m, r0 + kChunkRows);
  double acc = 0.0;
  if (col < n) {
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kRowLanes) {
      acc += static_cast<double>(static_cast<Acc<T>>(g[r * n + col]));
    }
  }
  s[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && col < n) {
    double t = 0.0;
    for (int k = 0; k < kRowLanes; ++k) t += s[k][threadIdx.x];  // fixed order
    partial[int64_t(blockIdx.y) * n + col] = t;
  }
}

/// grad_bias[col] += sum over chunks of partial[chunk, col], in chunk order.
template <class T>
__global__ void column_finish_kernel(const double* __restrict__ partial, T* __restrict__ gb,
                                     int64_t chunks, int64_t n) {
  for (int64_t col = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; col < n;
       col += int64_t(gridDim.x) * blockDim.x) {
    double t = 0.0;
    for (int64_t k = 0; k < chunks; ++k) t += partial[k * n + col];
    gb[col] = T(static_cast<Acc<T>>(static_cast<double>(static_cast<Acc<T>>(gb[col])) + t));
  }
}

}  // namespace

void linear_add_bias(TensorView y, ConstTensorView bias, const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(y.device.index));
  ::frugal::detail::visit_compute_float(y.dtype, "linear_add_bias", [&]<class T>() {
    const int64_t n = y.numel();
    const LaunchShape ls = grid_stride_launch(n);
    add_bias_kernel<T><<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(
        y.data_as<T>(), bias.data_as<T>(), n, y.shape[1]);
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
}

void linear_bias_grad(ConstTensorView grad, TensorView grad_bias, const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(grad.device.index));
  const int64_t m = grad.shape[0];
  const int64_t n = grad.shape[1];
  const int64_t chunks = (m + kChunkRows - 1) / kChunkRows;
  // Stream-ordered scratch for the (chunks, n) partial sums.
  Tensor partial = Tensor::empty({chunks, n}, DType::kF64, grad.device, ctx);
  ::frugal::detail::visit_compute_float(grad.dtype, "linear_bias_grad", [&]<class T>() {
    const dim3 block(kColsPerBlock, kRowLanes);
    const dim3 grid(static_cast<unsigned>((n + kColsPerBlock - 1) / kColsPerBlock),
                    static_cast<unsigned>(chunks));
    column_partial_kernel<T>
        <<<grid, block, 0, stream_of(ctx)>>>(grad.data_as<T>(), partial.data<double>(), m, n);
    FRUGAL_CUDA_CHECK_LAUNCH();
    const LaunchShape ls = grid_stride_launch(n);
    column_finish_kernel<T><<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(
        partial.data<double>(), grad_bias.data_as<T>(), chunks, n);
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace frugal::cu
