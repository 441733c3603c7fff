// LayerNorm on CUDA (llm.c layernorm_forward / layernorm_backward kernels): one warp per row for
// the output and the input gradient; the parameter gradients are column sums over rows, taken in
// fixed chunks of rows (partial sums in double) and then added chunk by chunk in order, so the
// result is deterministic (no atomics).
#include <cuda_runtime.h>

#include <algorithm>

#include "common/check.cuh"
#include "common/launch.cuh"
#include "cu_ops.hpp"

namespace frugal::cu {
namespace {

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 8;    // warps per block of the row kernels
constexpr int64_t kChunkRows = 64;  // rows per partial sum of the parameter gradients (at least)
constexpr int kColThreads = 256;

template <class A>
__device__ A warp_sum(A v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <class T>
__global__ void forward_kernel(const T* __restrict__ x, const T* __restrict__ w,
                               const T* __restrict__ b, T eps, T* __restrict__ out,
                               T* __restrict__ mean, T* __restrict__ rstd, int64_t n, int64_t c) {
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= n) return;
  const T* xi = x + row * c;
  T m = 0;
  for (int64_t j = lane; j < c; j += kWarp) m += xi[j];
  m = warp_sum(m) / T(c);
  T v = 0;  // two-pass variance
  for (int64_t j = lane; j < c; j += kWarp) v += (xi[j] - m) * (xi[j] - m);
  v = warp_sum(v) / T(c);
  const T s = T(1) / sqrt(v + eps);
  T* oi = out + row * c;
  for (int64_t j = lane; j < c; j += kWarp) {
    T y = (xi[j] - m) * s;
    if (w) y *= w[j];
    if (b) y += b[j];
    oi[j] = y;
  }
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = s;
  }
}

template <class T>
__global__ void backward_input_kernel(const T* __restrict__ g, const T* __restrict__ x,
                                      const T* __restrict__ w, const T* __restrict__ mean,
                                      const T* __restrict__ rstd, T* __restrict__ gi, int64_t n,
                                      int64_t c) {
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= n) return;
  const T* gr = g + row * c;
  const T* xi = x + row * c;
  const T m = mean[row], s = rstd[row];
  T sum_d = 0, sum_dx = 0;
  for (int64_t j = lane; j < c; j += kWarp) {
    const T d = w ? w[j] * gr[j] : gr[j];
    sum_d += d;
    sum_dx += d * (xi[j] - m) * s;
  }
  const T mean_d = warp_sum(sum_d) / T(c);
  const T mean_dx = warp_sum(sum_dx) / T(c);
  T* out = gi + row * c;
  for (int64_t j = lane; j < c; j += kWarp) {
    const T d = w ? w[j] * gr[j] : gr[j];
    out[j] = (d - mean_d - (xi[j] - m) * s * mean_dx) * s;
  }
}

// partial[chunk][0][j] = sum over the chunk's rows of dy * xhat, partial[chunk][1][j] of dy.
template <class T>
__global__ void backward_param_partial_kernel(const T* __restrict__ g, const T* __restrict__ x,
                                              const T* __restrict__ mean,
                                              const T* __restrict__ rstd,
                                              double* __restrict__ partial, int64_t n, int64_t c,
                                              int64_t chunk_rows) {
  const int64_t j = int64_t(blockIdx.x) * kColThreads + threadIdx.x;
  if (j >= c) return;
  const int64_t chunk = blockIdx.y;
  const int64_t i0 = chunk * chunk_rows, i1 = min(n, i0 + chunk_rows);
  double acc_w = 0, acc_b = 0;
  for (int64_t i = i0; i < i1; ++i) {
    const double d = g[i * c + j];
    acc_w += d * (double(x[i * c + j]) - double(mean[i])) * double(rstd[i]);
    acc_b += d;
  }
  partial[(chunk * 2) * c + j] = acc_w;
  partial[(chunk * 2 + 1) * c + j] = acc_b;
}

template <class T>
__global__ void backward_param_sum_kernel(const double* __restrict__ partial, int64_t chunks,
                                          T* __restrict__ gw, T* __restrict__ gb, int64_t c) {
  const int64_t j = int64_t(blockIdx.x) * kColThreads + threadIdx.x;
  if (j >= c) return;
  double acc_w = 0, acc_b = 0;
  for (int64_t k = 0; k < chunks; ++k) {
    acc_w += partial[(k * 2) * c + j];
    acc_b += partial[(k * 2 + 1) * c + j];
  }
  if (gw) gw[j] = T(double(gw[j]) + acc_w);
  if (gb) gb[j] = T(double(gb[j]) + acc_b);
}

template <class T>
void forward_t(ConstTensorView x, ConstTensorView w, ConstTensorView b, double eps, TensorView out,
               TensorView mean, TensorView rstd, const ExecContext& ctx) {
  const int64_t n = x.shape[0], c = x.shape[1];
  const unsigned blocks = static_cast<unsigned>((n + kRowsPerBlock - 1) / kRowsPerBlock);
  forward_kernel<T><<<blocks, kRowsPerBlock * kWarp, 0, stream_of(ctx)>>>(
      x.data_as<T>(), w.data_as<T>(), b.data_as<T>(), T(eps), out.data_as<T>(), mean.data_as<T>(),
      rstd.data_as<T>(), n, c);
  FRUGAL_CUDA_CHECK_LAUNCH();
}

template <class T>
void backward_t(ConstTensorView g, ConstTensorView x, ConstTensorView w, ConstTensorView mean,
                ConstTensorView rstd, TensorView gi, TensorView gw, TensorView gb,
                const ExecContext& ctx) {
  const int64_t n = x.shape[0], c = x.shape[1];
  const cudaStream_t stream = stream_of(ctx);
  const unsigned blocks = static_cast<unsigned>((n + kRowsPerBlock - 1) / kRowsPerBlock);
  backward_input_kernel<T><<<blocks, kRowsPerBlock * kWarp, 0, stream>>>(
      g.data_as<T>(), x.data_as<T>(), w.data_as<T>(), mean.data_as<T>(), rstd.data_as<T>(),
      gi.data_as<T>(), n, c);
  FRUGAL_CUDA_CHECK_LAUNCH();
  if (gw.data == nullptr && gb.data == nullptr) return;
  // The chunking depends on n only (deterministic); the grid's y extent is at most 65535.
  const int64_t chunk_rows = std::max<int64_t>(kChunkRows, (n + 65534) / 65535);
  const int64_t chunks = (n + chunk_rows - 1) / chunk_rows;
  Tensor partial = Tensor::empty({chunks, 2, c}, DType::kF64, x.device, ctx);
  const dim3 grid(static_cast<unsigned>((c + kColThreads - 1) / kColThreads),
                  static_cast<unsigned>(chunks));
  backward_param_partial_kernel<T><<<grid, kColThreads, 0, stream>>>(
      g.data_as<T>(), x.data_as<T>(), mean.data_as<T>(), rstd.data_as<T>(), partial.data<double>(),
      n, c, chunk_rows);
  FRUGAL_CUDA_CHECK_LAUNCH();
  backward_param_sum_kernel<T><<<grid.x, kColThreads, 0, stream>>>(
      partial.data<double>(), chunks, gw.data_as<T>(), gb.data_as<T>(), c);
  FRUGAL_CUDA_CHECK_LAUNCH();
}

}  // namespace

void layer_norm_forward(ConstTensorView x, ConstTensorView weight, ConstTensorView bias, double eps,
                        TensorView out, TensorView mean, TensorView rstd, const ExecContext& ctx) {
  if (x.dtype == DType::kF64) return forward_t<double>(x, weight, bias, eps, out, mean, rstd, ctx);
  forward_t<float>(x, weight, bias, eps, out, mean, rstd, ctx);
}

void layer_norm_backward(ConstTensorView grad_out, ConstTensorView x, ConstTensorView weight,
                         ConstTensorView mean, ConstTensorView rstd, TensorView grad_input,
                         TensorView grad_weight, TensorView grad_bias, const ExecContext& ctx) {
  if (x.dtype == DType::kF64) {
    return backward_t<double>(grad_out, x, weight, mean, rstd, grad_input, grad_weight, grad_bias,
                              ctx);
  }
  backward_t<float>(grad_out, x, weight, mean, rstd, grad_input, grad_weight, grad_bias, ctx);
}

}  // namespace frugal::cu
