// ReLU / GELU forward and backward on CUDA: grid-stride elementwise loops over the formulas shared
// with the CPU (nn/basic_ops.hpp), computing in float (double for f64).
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

template <class T, int kKind>
__global__ void act_forward_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    y[i] = T(nn::detail::act_forward<Acc<T>>(kKind, static_cast<Acc<T>>(x[i])));
  }
}

template <class T, int kKind>
__global__ void act_backward_kernel(const T* __restrict__ g, const T* __restrict__ x,
                                    T* __restrict__ out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = T(nn::detail::act_backward<Acc<T>>(kKind, static_cast<Acc<T>>(g[i]),
                                                static_cast<Acc<T>>(x[i])));
  }
}

/// fn.template operator()<kKind>() for the runtime activation kind (a compile-time constant in
/// the kernel, so each kernel holds one formula).
template <class Fn>
void visit_kind(int kind, Fn&& fn) {
  switch (static_cast<nn::detail::ActKind>(kind)) {
    case nn::detail::ActKind::kRelu:
      return fn.template operator()<static_cast<int>(nn::detail::ActKind::kRelu)>();
    case nn::detail::ActKind::kGeluErf:
      return fn.template operator()<static_cast<int>(nn::detail::ActKind::kGeluErf)>();
    case nn::detail::ActKind::kGeluTanh:
      return fn.template operator()<static_cast<int>(nn::detail::ActKind::kGeluTanh)>();
  }
}

}  // namespace

void activation_forward(int kind, ConstTensorView x, TensorView y, const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(x.device.index));
  ::frugal::detail::visit_compute_float(x.dtype, "activation_forward", [&]<class T>() {
    visit_kind(kind, [&]<int kKind>() {
      const int64_t n = x.numel();
      const LaunchShape ls = grid_stride_launch(n);
      act_forward_kernel<T, kKind>
          <<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(x.data_as<T>(), y.data_as<T>(), n);
      FRUGAL_CUDA_CHECK_LAUNCH();
    });
  });
}

void activation_backward(int kind, ConstTensorView grad, ConstTensorView x, TensorView out,
                         const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(x.device.index));
  ::frugal::detail::visit_compute_float(x.dtype, "activation_backward", [&]<class T>() {
    visit_kind(kind, [&]<int kKind>() {
      const int64_t n = x.numel();
      const LaunchShape ls = grid_stride_launch(n);
      act_backward_kernel<T, kKind><<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(
          grad.data_as<T>(), x.data_as<T>(), out.data_as<T>(), n);
      FRUGAL_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace frugal::cu
