// Multi-tensor unscale-and-check on CUDA, one launch for all gradients: `chunks` (device, i64,
// rows of {address, length, tensor index}, lengths <= 64K elements) lists every gradient cut into
// chunks; block b handles chunks b, b + gridDim.x, ...: g *= inv_scale with a non-finite test on
// the input bits in the same pass; a chunk that saw one sets flags[tensor] (a plain store of 1:
// idempotent, deterministic).
#include "common/check.cuh"
#include "common/launch.cuh"
#include "cu_ops.hpp"

namespace frugal::cu {
namespace {

constexpr int kThreads = 256;

__global__ void unscale_multi_kernel(const int64_t* __restrict__ chunks, int64_t num_chunks,
                                     float inv_scale, int* __restrict__ flags) {
  for (int64_t c = blockIdx.x; c < num_chunks; c += gridDim.x) {
    float* g = reinterpret_cast<float*>(static_cast<uintptr_t>(chunks[3 * c]));
    const int64_t n = chunks[3 * c + 1];
    int bad = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      const float v = g[i];
      bad |= (__float_as_uint(v) & 0x7F800000u) == 0x7F800000u;
      g[i] = __fmul_rn(v, inv_scale);
    }
    if (__syncthreads_or(bad) && threadIdx.x == 0) flags[chunks[3 * c + 2]] = 1;
  }
}

}  // namespace

void amp_unscale_check_multi(ConstTensorView chunks, float inv_scale, TensorView flags,
                             const ExecContext& ctx) {
  const int64_t num_chunks = chunks.shape[0];
  if (num_chunks == 0) return;
  const int blocks = static_cast<int>(num_chunks < 65535 ? num_chunks : 65535);
  unscale_multi_kernel<<<blocks, kThreads, 0, stream_of(ctx)>>>(
      chunks.data_as<int64_t>(), num_chunks, inv_scale, flags.data_as<int32_t>());
  FRUGAL_CUDA_CHECK_LAUNCH();
}

}  // namespace frugal::cu
