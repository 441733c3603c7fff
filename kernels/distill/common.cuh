#pragma once
// Block reductions shared by the distillation kernels: fixed-shape trees (no atomics), so every
// result is the same run to run.
#include <cuda_runtime.h>

#include <cstdint>

namespace frugal::cu::distill_detail {

constexpr int kThreads = 256;  // threads of every block-per-row kernel (a power of two)

/// Sum over the block of one value per thread; every thread gets the total. `sh` holds
/// kThreads values; the call ends with a barrier so `sh` may be reused right away.
template <class A>
__device__ A block_sum(A v, A* sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int o = kThreads / 2; o > 0; o /= 2) {
    if (threadIdx.x < o) sh[threadIdx.x] += sh[threadIdx.x + o];
    __syncthreads();
  }
  const A total = sh[0];
  __syncthreads();
  return total;
}

/// Maximum over the block (NaN-ignoring: NaN inputs are caught by a separate finiteness sum).
template <class A>
__device__ A block_max(A v, A* sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int o = kThreads / 2; o > 0; o /= 2) {
    if (threadIdx.x < o) {
      const A w = sh[threadIdx.x + o];
      if (w > sh[threadIdx.x]) sh[threadIdx.x] = w;
    }
    __syncthreads();
  }
  const A total = sh[0];
  __syncthreads();
  return total;
}

/// Sums x[0, n) (doubles) with one block of kThreads in a fixed order; thread 0 writes *out.
static __global__ void sum_doubles(const double* __restrict__ x, int64_t n, double scale,
                                   double* __restrict__ out) {
  __shared__ double sh[kThreads];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) acc += x[i];
  const double total = block_sum<double>(acc, sh);
  if (threadIdx.x == 0) *out = total * scale;
}

/// Grid of a block-per-row kernel: one block per row, at most 65535 (rows loop beyond).
inline unsigned row_blocks(int64_t rows) {
  return static_cast<unsigned>(rows < 1 ? 1 : (rows > 65535 ? 65535 : rows));
}

}  // namespace frugal::cu::distill_detail
