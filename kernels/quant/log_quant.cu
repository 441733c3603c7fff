// Logarithmic quantize / dequantize on contiguous device buffers: quant::detail::log_code /
// log_value, shared with the CPU (double comparisons against float levels: identical codes).
#include "common/check.cuh"
#include "common/launch.cuh"
#include "core/convert.hpp"
#include "core/dtype_dispatch.hpp"
#include "cu_ops.hpp"
#include "quant/quant_internal.hpp"

namespace frugal::cu {
namespace {

using quant::detail::LogPlan;

template <class T>
__global__ void log_quantize_kernel(const T* __restrict__ x, LogPlan p, int64_t n,
                                    uint8_t* __restrict__ out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = quant::detail::log_code(p, ::frugal::detail::to_double(x[i]));
  }
}

__global__ void log_dequantize_kernel(const uint8_t* __restrict__ codes, LogPlan p, int64_t n,
                                      float* __restrict__ out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = quant::detail::log_value(p, codes[i]);
  }
}

}  // namespace

void log_quantize(ConstTensorView x, int bits, int e_min, int e_max, int sqrt2, TensorView codes,
                  const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(x.device.index));
  const LogPlan p{bits, e_min, e_max, sqrt2};
  const int64_t n = x.numel();
  const LaunchShape ls = grid_stride_launch(n);
  ::frugal::detail::visit_compute_float(x.dtype, "log_quantize", [&]<class T>() {
    log_quantize_kernel<T><<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(x.data_as<T>(), p, n,
                                                                         codes.data_as<uint8_t>());
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
}

void log_dequantize(ConstTensorView codes, int bits, int e_min, int e_max, int sqrt2,
                    TensorView out, const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(out.device.index));
  const LogPlan p{bits, e_min, e_max, sqrt2};
  const int64_t n = out.numel();
  const LaunchShape ls = grid_stride_launch(n);
  log_dequantize_kernel<<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(codes.data_as<uint8_t>(), p,
                                                                      n, out.data_as<float>());
  FRUGAL_CUDA_CHECK_LAUNCH();
}

}  // namespace frugal::cu
