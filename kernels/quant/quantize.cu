// Linear quantize / dequantize / fake-quantize on contiguous device buffers. One thread handles
// one output byte per grid-stride step (1, 2 or 4 codes), so packed 4- and 2-bit codes need no
// atomics. The per-element math is quant::detail::quant_offset(_stochastic), shared with the CPU
// loops; x / s is an IEEE division and nothing is contracted into an FMA, so codes match the CPU
// bit for bit. Parameter indices use 32-bit arithmetic when the tensor allows (integer division
// by a runtime value is several times cheaper in 32 bits).
#include <type_traits>

#include "common/check.cuh"
#include "common/launch.cuh"
#include "core/dtype_dispatch.hpp"
#include "cu_ops.hpp"
#include "frugal/core/philox.hpp"
#include "frugal/quant/format.hpp"
#include "quant/quant_internal.hpp"

namespace frugal::cu {
namespace {

using quant::detail::LinearPlan;
using quant::detail::make_linear_plan;

template <class T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

/// param_index in the integer type I (uint32_t when every index fits, else int64_t).
template <class I>
__device__ __forceinline__ I param_at(const LinearPlan& p, I i) {
  if (p.granularity == 0) return 0;
  const I inner = static_cast<I>(p.inner), len = static_cast<I>(p.len);
  const I r = i / inner;
  const I l = r % len;
  if (p.granularity == 1) return l;
  const I group = static_cast<I>(p.group);
  const I in = i - r * inner;
  const I o = r / len;
  return (o * (len / group) + l / group) * inner + in;
}

template <class A>
__device__ __forceinline__ A uniform_at(uint64_t seed, uint64_t offset, uint64_t i) {
  const Uint4 b = philox_block(seed, offset, i);
  const uint32_t bits = lane(b, static_cast<int>(i & 3));
  if constexpr (std::is_same_v<A, double>) {
    return uniform01_f64(bits);
  } else {
    return uniform01(bits);
  }
}

template <class T, class I>
__global__ void quantize_kernel(const T* __restrict__ x, const float* __restrict__ s,
                                const int32_t* __restrict__ z, LinearPlan p, int64_t n, int per,
                                uint64_t seed, uint64_t offset, uint8_t* __restrict__ out) {
  using A = Acc<T>;
  const int64_t nbytes = (n + per - 1) / per;
  const int w = 8 / per;
  const unsigned mask = (1u << w) - 1u;
  const A qmin = static_cast<A>(p.qmin), qmax = static_cast<A>(p.qmax);
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < nbytes;
       b += int64_t(gridDim.x) * blockDim.x) {
    unsigned byte = 0;
    for (int j = 0; j < per; ++j) {
      const int64_t i = b * per + j;
      if (i >= n) break;
      const I k = param_at<I>(p, static_cast<I>(i));
      const A sk = static_cast<A>(s[k]);
      const A zk = static_cast<A>(z[k]);
      const A xi = static_cast<A>(x[i]);
      const A q = p.rounding == 0 ? quant::detail::quant_offset(xi, sk, qmin - zk, qmax - zk)
                                  : quant::detail::quant_offset_stochastic(
                                        xi, sk, qmin - zk, qmax - zk,
                                        uniform_at<A>(seed, offset, static_cast<uint64_t>(i)));
      const int code = static_cast<int>(q + zk);
      byte |= (static_cast<unsigned>(code) & mask) << (w * j);
    }
    out[b] = static_cast<uint8_t>(byte);
  }
}

template <class I>
__global__ void dequantize_kernel(const uint8_t* __restrict__ codes, const float* __restrict__ s,
                                  const int32_t* __restrict__ z, LinearPlan p, int64_t n, int per,
                                  float* __restrict__ out) {
  const int64_t nbytes = (n + per - 1) / per;
  const int w = 8 / per;
  const unsigned mask = (1u << w) - 1u;
  const int half = 1 << (w - 1);
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < nbytes;
       b += int64_t(gridDim.x) * blockDim.x) {
    const unsigned byte = codes[b];
    for (int j = 0; j < per; ++j) {
      const int64_t i = b * per + j;
      if (i >= n) break;
      int c = static_cast<int>((byte >> (w * j)) & mask);
      if (p.is_signed) c = (c ^ half) - half;
      const I k = param_at<I>(p, static_cast<I>(i));
      out[i] = __fmul_rn(static_cast<float>(c) - static_cast<float>(z[k]), s[k]);
    }
  }
}

template <class T, class I>
__global__ void fake_kernel(const T* __restrict__ x, const float* __restrict__ s,
                            const int32_t* __restrict__ z, LinearPlan p, int64_t n, uint64_t seed,
                            uint64_t offset, T* __restrict__ out) {
  using A = Acc<T>;
  const A qmin = static_cast<A>(p.qmin), qmax = static_cast<A>(p.qmax);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const I k = param_at<I>(p, static_cast<I>(i));
    const A sk = static_cast<A>(s[k]);
    const A zk = static_cast<A>(z[k]);
    const A xi = static_cast<A>(x[i]);
    const A q = p.rounding == 0 ? quant::detail::quant_offset(xi, sk, qmin - zk, qmax - zk)
                                : quant::detail::quant_offset_stochastic(
                                      xi, sk, qmin - zk, qmax - zk,
                                      uniform_at<A>(seed, offset, static_cast<uint64_t>(i)));
    out[i] = static_cast<T>(q * sk);
  }
}

bool fits_32(int64_t n) { return n <= int64_t{0xFFFFFFFF}; }

}  // namespace

void quantize_linear(ConstTensorView x, ConstTensorView scale, ConstTensorView zero_point,
                     int granularity, int64_t outer, int64_t len, int64_t inner, int64_t group,
                     int64_t qmin, int64_t qmax, int rounding, int bits, TensorView codes,
                     const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(x.device.index));
  const LinearPlan p =
      make_linear_plan(granularity, outer, len, inner, group, qmin, qmax, rounding, bits);
  const int64_t n = x.numel();
  const int per = quant::codes_per_byte(bits);
  const LaunchShape ls = grid_stride_launch((n + per - 1) / per);
  const cudaStream_t st = stream_of(ctx);
  ::frugal::detail::visit_compute_float(x.dtype, "quantize", [&]<class T>() {
    const T* px = x.data_as<T>();
    const float* ps = scale.data_as<float>();
    const int32_t* pz = zero_point.data_as<int32_t>();
    uint8_t* po = static_cast<uint8_t*>(codes.data);
    if (fits_32(n)) {
      quantize_kernel<T, uint32_t>
          <<<ls.blocks, ls.threads, 0, st>>>(px, ps, pz, p, n, per, ctx.seed, ctx.offset, po);
    } else {
      quantize_kernel<T, int64_t>
          <<<ls.blocks, ls.threads, 0, st>>>(px, ps, pz, p, n, per, ctx.seed, ctx.offset, po);
    }
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
}

void dequantize_linear(ConstTensorView codes, ConstTensorView scale, ConstTensorView zero_point,
                       int granularity, int64_t outer, int64_t len, int64_t inner, int64_t group,
                       int64_t qmin, int64_t qmax, int bits, TensorView out,
                       const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(out.device.index));
  const LinearPlan p = make_linear_plan(granularity, outer, len, inner, group, qmin, qmax, 0, bits);
  const int64_t n = out.numel();
  const int per = quant::codes_per_byte(bits);
  const LaunchShape ls = grid_stride_launch((n + per - 1) / per);
  const cudaStream_t st = stream_of(ctx);
  const uint8_t* pc = static_cast<const uint8_t*>(codes.data);
  if (fits_32(n)) {
    dequantize_kernel<uint32_t><<<ls.blocks, ls.threads, 0, st>>>(
        pc, scale.data_as<float>(), zero_point.data_as<int32_t>(), p, n, per, out.data_as<float>());
  } else {
    dequantize_kernel<int64_t><<<ls.blocks, ls.threads, 0, st>>>(
        pc, scale.data_as<float>(), zero_point.data_as<int32_t>(), p, n, per, out.data_as<float>());
  }
  FRUGAL_CUDA_CHECK_LAUNCH();
}

void fake_quantize_linear(ConstTensorView x, ConstTensorView scale, ConstTensorView zero_point,
                          int granularity, int64_t outer, int64_t len, int64_t inner, int64_t group,
                          int64_t qmin, int64_t qmax, int rounding, TensorView out,
                          const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(x.device.index));
  const LinearPlan p =
      make_linear_plan(granularity, outer, len, inner, group, qmin, qmax, rounding, 8);
  const int64_t n = x.numel();
  const LaunchShape ls = grid_stride_launch(n);
  const cudaStream_t st = stream_of(ctx);
  ::frugal::detail::visit_compute_float(x.dtype, "fake_quantize", [&]<class T>() {
    const T* px = x.data_as<T>();
    const float* ps = scale.data_as<float>();
    const int32_t* pz = zero_point.data_as<int32_t>();
    T* po = out.data_as<T>();
    if (fits_32(n)) {
      fake_kernel<T, uint32_t>
          <<<ls.blocks, ls.threads, 0, st>>>(px, ps, pz, p, n, ctx.seed, ctx.offset, po);
    } else {
      fake_kernel<T, int64_t>
          <<<ls.blocks, ls.threads, 0, st>>>(px, ps, pz, p, n, ctx.seed, ctx.offset, po);
    }
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace frugal::cu
