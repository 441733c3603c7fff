// Observer passes on a CUDA device: min / max (exact, so atomics on order-preserving integer keys
// are deterministic), per-channel min / max (one block per channel), and the |x| histogram (shared
// memory counters per block, then 64-bit integer atomics: deterministic).
#include <climits>

#include "common/check.cuh"
#include "common/launch.cuh"
#include "cu_ops.hpp"
#include "quant/observer_internal.hpp"

namespace frugal::cu {
namespace {

constexpr int kThreads = 256;

// A float's bits as an int that orders like the float (negative floats: flip the magnitude bits).
__device__ __forceinline__ int float_key(float f) {
  const int k = __float_as_int(f);
  return k >= 0 ? k : k ^ 0x7FFFFFFF;
}
__device__ __forceinline__ float key_float(int k) {
  return __int_as_float(k >= 0 ? k : k ^ 0x7FFFFFFF);
}

// Block-wide min / max / count; thread 0 holds the result.
__device__ void block_reduce(float& lo, float& hi, unsigned long long& bad) {
  __shared__ float slo[kThreads], shi[kThreads];
  __shared__ unsigned long long sbad[kThreads];
  slo[threadIdx.x] = lo;
  shi[threadIdx.x] = hi;
  sbad[threadIdx.x] = bad;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      slo[threadIdx.x] = fminf(slo[threadIdx.x], slo[threadIdx.x + s]);
      shi[threadIdx.x] = fmaxf(shi[threadIdx.x], shi[threadIdx.x + s]);
      sbad[threadIdx.x] += sbad[threadIdx.x + s];
    }
    __syncthreads();
  }
  lo = slo[0];
  hi = shi[0];
  bad = sbad[0];
}

__global__ void init_keys(int* keys, unsigned long long* bad) {
  keys[0] = INT_MAX;
  keys[1] = INT_MIN;
  *bad = 0;
}

__global__ void minmax_kernel(const float* x, int64_t n, int* keys, unsigned long long* bad) {
  float lo = INFINITY, hi = -INFINITY;
  unsigned long long nb = 0;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float v = x[i];
    if (!isfinite(v)) {
      ++nb;
      continue;
    }
    lo = fminf(lo, v);
    hi = fmaxf(hi, v);
  }
  block_reduce(lo, hi, nb);
  if (threadIdx.x == 0) {
    atomicMin(&keys[0], float_key(lo));
    atomicMax(&keys[1], float_key(hi));
    if (nb != 0) atomicAdd(bad, nb);
  }
}

__global__ void finish_minmax(const int* keys, const unsigned long long* bad, double* out) {
  out[0] = key_float(keys[0]);
  out[1] = key_float(keys[1]);
  out[2] = static_cast<double>(*bad);
}

__global__ void minmax_axis_kernel(const float* x, int64_t outer, int64_t len, int64_t inner,
                                   double* out, unsigned long long* bad) {
  const int64_t c = blockIdx.x;
  float lo = INFINITY, hi = -INFINITY;
  unsigned long long nb = 0;
  const int64_t total = outer * inner;
  for (int64_t t = threadIdx.x; t < total; t += blockDim.x) {
    const int64_t o = t / inner, i = t % inner;
    const float v = x[(o * len + c) * inner + i];
    if (!isfinite(v)) {
      ++nb;
      continue;
    }
    lo = fminf(lo, v);
    hi = fmaxf(hi, v);
  }
  block_reduce(lo, hi, nb);
  if (threadIdx.x == 0) {
    out[c] = lo;
    out[len + c] = hi;
    if (nb != 0) atomicAdd(bad, nb);
  }
}

__global__ void finish_count(const unsigned long long* bad, double* out) {
  *out = static_cast<double>(*bad);
}

__global__ void histogram_kernel(const float* x, int64_t n, float inv_width, int bins,
                                 unsigned long long* hist) {
  extern __shared__ unsigned int local[];  // 2 * bins counters
  for (int b = threadIdx.x; b < 2 * bins; b += blockDim.x) local[b] = 0;
  __syncthreads();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    atomicAdd(&local[::frugal::detail::observer_bin(x[i], inv_width, bins)], 1u);
  }
  __syncthreads();
  for (int b = threadIdx.x; b < 2 * bins; b += blockDim.x) {
    if (local[b] != 0) atomicAdd(&hist[b], static_cast<unsigned long long>(local[b]));
  }
}

}  // namespace

void observer_minmax(ConstTensorView x, TensorView out, const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(x.device.index));
  const cudaStream_t s = stream_of(ctx);
  Tensor keys = Tensor::empty({2}, DType::kI32, x.device, ctx);
  Tensor bad = Tensor::empty({1}, DType::kI64, x.device, ctx);
  auto* k = keys.data<int32_t>();
  auto* b = reinterpret_cast<unsigned long long*>(bad.data<int64_t>());
  init_keys<<<1, 1, 0, s>>>(k, b);
  FRUGAL_CUDA_CHECK_LAUNCH();
  const LaunchShape g = grid_stride_launch(x.numel(), kThreads);
  minmax_kernel<<<std::min(g.blocks, 1024u), kThreads, 0, s>>>(x.data_as<float>(), x.numel(), k, b);
  FRUGAL_CUDA_CHECK_LAUNCH();
  finish_minmax<<<1, 1, 0, s>>>(k, b, out.data_as<double>());
  FRUGAL_CUDA_CHECK_LAUNCH();
}

void observer_minmax_axis(ConstTensorView x, int64_t outer, int64_t len, int64_t inner,
                          TensorView out, const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(x.device.index));
  const cudaStream_t s = stream_of(ctx);
  Tensor bad = Tensor::zeros({1}, DType::kI64, x.device, ctx);
  auto* b = reinterpret_cast<unsigned long long*>(bad.data<int64_t>());
  minmax_axis_kernel<<<static_cast<unsigned>(len), kThreads, 0, s>>>(
      x.data_as<float>(), outer, len, inner, out.data_as<double>(), b);
  FRUGAL_CUDA_CHECK_LAUNCH();
  finish_count<<<1, 1, 0, s>>>(b, out.data_as<double>() + 2 * len);
  FRUGAL_CUDA_CHECK_LAUNCH();
}

void observer_histogram(ConstTensorView x, double inv_width, int64_t bins, TensorView hist,
                        const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(x.device.index));
  const LaunchShape g = grid_stride_launch(x.numel(), kThreads);
  const size_t shared = static_cast<size_t>(2 * bins) * sizeof(unsigned int);
  histogram_kernel<<<std::min(g.blocks, 1024u), kThreads, shared, stream_of(ctx)>>>(
      x.data_as<float>(), x.numel(), static_cast<float>(inv_width), static_cast<int>(bins),
      reinterpret_cast<unsigned long long*>(hist.data_as<int64_t>()));
  FRUGAL_CUDA_CHECK_LAUNCH();
}

}  // namespace frugal::cu
