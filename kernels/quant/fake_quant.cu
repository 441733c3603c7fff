// STE / LSQ backward of fake quantization on contiguous device buffers: grad_x and, when asked,
// the per-element LSQ scale terms (summed per scale by frugal::sum in the dispatch file). Same
// per-element formulas as src/quant/cpu/fake_quant.cpp.
#include <type_traits>

#include "common/check.cuh"
#include "common/launch.cuh"
#include "core/dtype_dispatch.hpp"
#include "cu_ops.hpp"
#include "quant/quant_internal.hpp"

namespace frugal::cu {
namespace {

using quant::detail::LinearPlan;

template <class T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <class T, class R>
__global__ void backward_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                const float* __restrict__ s, const int32_t* __restrict__ z,
                                LinearPlan p, int64_t n, T* __restrict__ gx,
                                R* __restrict__ terms) {
  using A = Acc<T>;
  const A qmin = static_cast<A>(p.qmin), qmax = static_cast<A>(p.qmax);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = quant::detail::param_index(p, i);
    A term = A(0);
    gx[i] = static_cast<T>(quant::detail::fake_quant_grad(
        static_cast<A>(dy[i]), static_cast<A>(x[i]), static_cast<A>(s[k]), static_cast<A>(z[k]),
        qmin, qmax, terms != nullptr ? &term : nullptr));
    if (terms != nullptr) terms[i] = static_cast<R>(term);
  }
}

}  // namespace

void fake_quantize_backward(ConstTensorView grad_out, ConstTensorView x, ConstTensorView scale,
                            ConstTensorView zero_point, int granularity, int64_t outer, int64_t len,
                            int64_t inner, int64_t group, int64_t qmin, int64_t qmax,
                            TensorView grad_x, TensorView scale_terms, const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(x.device.index));
  const LinearPlan p =
      quant::detail::make_linear_plan(granularity, outer, len, inner, group, qmin, qmax);
  const int64_t n = x.numel();
  const LaunchShape ls = grid_stride_launch(n);
  ::frugal::detail::visit_compute_float(x.dtype, "fake_quantize_backward", [&]<class T>() {
    using R = std::conditional_t<std::is_same_v<T, double>, double, float>;
    backward_kernel<T, R><<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(
        grad_out.data_as<T>(), x.data_as<T>(), scale.data_as<float>(),
        zero_point.data_as<int32_t>(), p, n, grad_x.data_as<T>(),
        static_cast<R*>(scale_terms.data));
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace frugal::cu
