// Elementwise add / sub / mul / scale / axpy on contiguous device buffers: grid-stride loops that
// compute in float (double for f64), like the CPU backend.
#include <type_traits>

#include "common/check.cuh"
#include "common/launch.cuh"
#include "core/dtype_dispatch.hpp"
#include "core/ops_internal.hpp"
#include "cu_ops.hpp"

namespace frugal::cu {
namespace {

/// Arithmetic type of T: double for f64, float for f32 / f16 / bf16.
template <class T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <class T, int kOp>
__global__ void binary_kernel(const T* a, const T* b, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const auto x = static_cast<Acc<T>>(a[i]);
    const auto y = static_cast<Acc<T>>(b[i]);
    Acc<T> r;
    if constexpr (kOp == static_cast<int>(::frugal::detail::BinaryOp::kAdd)) {
      r = x + y;
    } else if constexpr (kOp == static_cast<int>(::frugal::detail::BinaryOp::kSub)) {
      r = x - y;
    } else {
      r = x * y;
    }
    out[i] = T(r);
  }
}

template <class T>
__global__ void scale_kernel(const T* x, Acc<T> alpha, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = T(static_cast<Acc<T>>(x[i]) * alpha);
  }
}

template <class T>
__global__ void axpy_kernel(Acc<T> alpha, const T* x, T* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    y[i] = T(static_cast<Acc<T>>(y[i]) + alpha * static_cast<Acc<T>>(x[i]));
  }
}

}  // namespace

void binary_op(int op, ConstTensorView a, ConstTensorView b, TensorView out,
               const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(out.device.index));
  const int64_t n = out.numel();
  const LaunchShape ls = grid_stride_launch(n);
  const cudaStream_t s = stream_of(ctx);
  ::frugal::detail::visit_compute_float(a.dtype, "binary_op", [&]<class T>() {
    const T* pa = a.data_as<T>();
    const T* pb = b.data_as<T>();
    T* po = out.data_as<T>();
    using ::frugal::detail::BinaryOp;
    switch (static_cast<BinaryOp>(op)) {
      case BinaryOp::kAdd:
        binary_kernel<T, static_cast<int>(BinaryOp::kAdd)>
            <<<ls.blocks, ls.threads, 0, s>>>(pa, pb, po, n);
        break;
      case BinaryOp::kSub:
        binary_kernel<T, static_cast<int>(BinaryOp::kSub)>
            <<<ls.blocks, ls.threads, 0, s>>>(pa, pb, po, n);
        break;
      case BinaryOp::kMul:
        binary_kernel<T, static_cast<int>(BinaryOp::kMul)>
            <<<ls.blocks, ls.threads, 0, s>>>(pa, pb, po, n);
        break;
    }
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
}

void scale(ConstTensorView x, double alpha, TensorView out, const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(out.device.index));
  const int64_t n = out.numel();
  const LaunchShape ls = grid_stride_launch(n);
  ::frugal::detail::visit_compute_float(x.dtype, "scale", [&]<class T>() {
    scale_kernel<T><<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(
        x.data_as<T>(), static_cast<Acc<T>>(alpha), out.data_as<T>(), n);
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
}

void axpy(double alpha, ConstTensorView x, TensorView y, const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(y.device.index));
  const int64_t n = y.numel();
  const LaunchShape ls = grid_stride_launch(n);
  ::frugal::detail::visit_compute_float(x.dtype, "axpy", [&]<class T>() {
    axpy_kernel<T><<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(static_cast<Acc<T>>(alpha),
                                                                 x.data_as<T>(), y.data_as<T>(), n);
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace frugal::cu
