// Unscale-and-check on CUDA: g *= inv_scale with a non-finite test on the input bits in the same
// pass; a block that saw one sets flags[index] (a plain store of 1: idempotent, deterministic).
#include "common/check.cuh"
#include "common/launch.cuh"
#include "cu_ops.hpp"

namespace frugal::cu {
namespace {

__global__ void unscale_kernel(float* __restrict__ g, int64_t n, float inv_scale,
                               int* __restrict__ flag) {
  int bad = 0;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float v = g[i];
    bad |= (__float_as_uint(v) & 0x7F800000u) == 0x7F800000u;
    g[i] = __fmul_rn(v, inv_scale);
  }
  if (__syncthreads_or(bad) && threadIdx.x == 0) *flag = 1;
}

}  // namespace

void amp_unscale_check(TensorView g, float inv_scale, TensorView flags, int64_t index,
                       const ExecContext& ctx) {
  const int64_t n = g.numel();
  const LaunchShape ls = grid_stride_launch(n);
  unscale_kernel<<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(g.data_as<float>(), n, inv_scale,
                                                               flags.data_as<int32_t>() + index);
  FRUGAL_CUDA_CHECK_LAUNCH();
}

}  // namespace frugal::cu
