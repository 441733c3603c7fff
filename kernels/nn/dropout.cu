// Dropout on CUDA: one thread per Philox block of 4 elements, drawing the same keep bits as the
// CPU from the shared stream (nn/basic_ops.hpp: dropout_block / dropout_keep_word), so the masks
// are identical on both devices for the same (seed, step).
#include <cuda_runtime.h>

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

template <class T>
__global__ void dropout_forward_kernel(const T* __restrict__ x, T* __restrict__ y,
                                       uint8_t* __restrict__ mask, int64_t n, float p, Acc<T> scale,
                                       uint64_t seed, uint64_t step) {
  const int64_t blocks = (n + 3) / 4;
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < blocks;
       b += int64_t(gridDim.x) * blockDim.x) {
    const Uint4 bits = nn::detail::dropout_block(seed, step, static_cast<uint64_t>(b));
    const int64_t first = 4 * b;
    const int count = n - first < 4 ? static_cast<int>(n - first) : 4;
    for (int l = 0; l < count; ++l) {
      const int64_t i = first + l;
      const bool keep = nn::detail::dropout_keep_word(lane(bits, l), p);
      mask[i] = keep ? 1 : 0;
      y[i] = keep ? T(static_cast<Acc<T>>(x[i]) * scale) : T(Acc<T>(0));
    }
  }
}

template <class T>
__global__ void dropout_backward_kernel(const T* __restrict__ g, const uint8_t* __restrict__ mask,
                                        T* __restrict__ out, int64_t n, Acc<T> scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = mask[i] ? T(static_cast<Acc<T>>(g[i]) * scale) : T(Acc<T>(0));
  }
}

}  // namespace

void dropout_forward(ConstTensorView x, float p, double scale, uint64_t seed, uint64_t step,
                     TensorView y, TensorView mask, const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(x.device.index));
  ::frugal::detail::visit_compute_float(x.dtype, "dropout_forward", [&]<class T>() {
    const int64_t n = x.numel();
    const LaunchShape ls = grid_stride_launch((n + 3) / 4);
    dropout_forward_kernel<T><<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(
        x.data_as<T>(), y.data_as<T>(), mask.data_as<uint8_t>(), n, p, static_cast<Acc<T>>(scale),
        seed, step);
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
}

void dropout_backward(ConstTensorView grad, ConstTensorView mask, double scale, TensorView out,
                      const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(grad.device.index));
  ::frugal::detail::visit_compute_float(grad.dtype, "dropout_backward", [&]<class T>() {
    const int64_t n = grad.numel();
    const LaunchShape ls = grid_stride_launch(n);
    dropout_backward_kernel<T><<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(
        grad.data_as<T>(), mask.data_as<uint8_t>(), out.data_as<T>(), n,
        static_cast<Acc<T>>(scale));
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace frugal::cu
