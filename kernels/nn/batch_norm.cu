// Batch norm on one CUDA device, f32 and f64. Statistics and gradient sums: one block of
// kThreads threads per channel, each thread summing a fixed strided subset of the channel's
// N * H * W elements in double, then a fixed shared-memory tree. No atomics, so results repeat
// bit for bit run to run (they differ from the CPU's sequential sums by rounding only).
// Evaluation mode is elementwise (a grid-stride loop).
#include <cmath>

#include "common/check.cuh"
#include "common/launch.cuh"
#include "cu_ops.hpp"

namespace frugal::cu {
namespace {

constexpr int kThreads = 256;

/// Sum of v over the block, in a fixed tree order; every thread gets the result.
__device__ inline double block_sum(double v, double* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
    __syncthreads();
  }
  const double r = shared[0];
  __syncthreads();  // shared is reused by the next call
  return r;
}

/// Element k of channel ch (k enumerates samples, then positions).
__device__ inline int64_t offset(int64_t k, int64_t ch, int64_t c, int64_t hw) {
  return ((k / hw) * c + ch) * hw + k % hw;
}

template <class T>
__global__ void train_kernel(const T* x, const T* w, const T* b, T* rmean, T* rvar, T* mean_out,
                             T* invstd_out, T* y, int64_t n, int64_t c, int64_t hw, double momentum,
                             double eps) {
  __shared__ double shared[kThreads];
  const int64_t ch = blockIdx.x;
  const int64_t m = n * hw;
  double s = 0.0;
  for (int64_t k = threadIdx.x; k < m; k += kThreads)
    s += static_cast<double>(x[offset(k, ch, c, hw)]);
  const double mean = block_sum(s, shared) / static_cast<double>(m);
  double ss = 0.0;
  for (int64_t k = threadIdx.x; k < m; k += kThreads) {
    const double d = static_cast<double>(x[offset(k, ch, c, hw)]) - mean;
    ss += d * d;
  }
  ss = block_sum(ss, shared);
  const double invstd = 1.0 / sqrt(ss / static_cast<double>(m) + eps);
  if (threadIdx.x == 0) {
    mean_out[ch] = static_cast<T>(mean);
    invstd_out[ch] = static_cast<T>(invstd);
    if (rmean != nullptr) {
      rmean[ch] =
          static_cast<T>((1.0 - momentum) * static_cast<double>(rmean[ch]) + momentum * mean);
    }
    if (rvar != nullptr) {
      const double unbiased = ss / static_cast<double>(m - 1);
      rvar[ch] =
          static_cast<T>((1.0 - momentum) * static_cast<double>(rvar[ch]) + momentum * unbiased);
    }
  }
  const double scale = invstd * (w != nullptr ? static_cast<double>(w[ch]) : 1.0);
  const double shift = (b != nullptr ? static_cast<double>(b[ch]) : 0.0) - mean * scale;
  for (int64_t k = threadIdx.x; k < m; k += kThreads) {
    const int64_t o = offset(k, ch, c, hw);
    y[o] = static_cast<T>(static_cast<double>(x[o]) * scale + shift);
  }
}

template <class T>
__global__ void eval_kernel(const T* x, const T* w, const T* b, const T* rmean, const T* rvar, T* y,
                            int64_t c, int64_t hw, double eps, int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ch = (i / hw) % c;
    const double invstd = 1.0 / sqrt(static_cast<double>(rvar[ch]) + eps);
    const double scale = invstd * (w != nullptr ? static_cast<double>(w[ch]) : 1.0);
    const double shift =
        (b != nullptr ? static_cast<double>(b[ch]) : 0.0) - static_cast<double>(rmean[ch]) * scale;
    y[i] = static_cast<T>(static_cast<double>(x[i]) * scale + shift);
  }
}

template <class T>
__global__ void eval_stats_kernel(const T* rmean, const T* rvar, T* mean_out, T* invstd_out,
                                  int64_t c, double eps) {
  for (int64_t ch = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; ch < c;
       ch += int64_t(gridDim.x) * blockDim.x) {
    mean_out[ch] = rmean[ch];
    invstd_out[ch] = static_cast<T>(1.0 / sqrt(static_cast<double>(rvar[ch]) + eps));
  }
}

template <class T>
__global__ void backward_kernel(const T* dy, const T* x, const T* w, const T* mean, const T* invstd,
                                bool batch_stats, T* dx, T* gw, T* gb, int64_t n, int64_t c,
                                int64_t hw) {
  __shared__ double shared[kThreads];
  const int64_t ch = blockIdx.x;
  const int64_t m = n * hw;
  const double mu = static_cast<double>(mean[ch]);
  const double is = static_cast<double>(invstd[ch]);
  double s_dy = 0.0, s_dyx = 0.0;
  for (int64_t k = threadIdx.x; k < m; k += kThreads) {
    const int64_t o = offset(k, ch, c, hw);
    const double d = static_cast<double>(dy[o]);
    s_dy += d;
    s_dyx += d * (static_cast<double>(x[o]) - mu) * is;
  }
  s_dy = block_sum(s_dy, shared);
  s_dyx = block_sum(s_dyx, shared);
  if (threadIdx.x == 0) {
    if (gw != nullptr) gw[ch] = static_cast<T>(static_cast<double>(gw[ch]) + s_dyx);
    if (gb != nullptr) gb[ch] = static_cast<T>(static_cast<double>(gb[ch]) + s_dy);
  }
  const double k_scale = (w != nullptr ? static_cast<double>(w[ch]) : 1.0) * is;
  const double mean_dy = batch_stats ? s_dy / static_cast<double>(m) : 0.0;
  const double mean_dyx = batch_stats ? s_dyx / static_cast<double>(m) : 0.0;
  for (int64_t k = threadIdx.x; k < m; k += kThreads) {
    const int64_t o = offset(k, ch, c, hw);
    const double xhat = (static_cast<double>(x[o]) - mu) * is;
    dx[o] = static_cast<T>(k_scale * (static_cast<double>(dy[o]) - mean_dy - xhat * mean_dyx));
  }
}

template <class F>
void visit(DType t, F&& f) {
  if (t == DType::kF64) {
    f.template operator()<double>();
  } else {
    f.template operator()<float>();
  }
}

}  // namespace

void batch_norm_train(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                      TensorView running_mean, TensorView running_var, TensorView mean,
                      TensorView invstd, TensorView y, double momentum, double eps,
                      const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(x.device.index));
  const int64_t n = x.shape[0], c = x.shape[1], hw = x.shape[2] * x.shape[3];
  visit(x.dtype, [&]<class T>() {
    train_kernel<T><<<static_cast<unsigned>(c), kThreads, 0, stream_of(ctx)>>>(
        x.data_as<T>(), weight.data_as<T>(), bias.data_as<T>(), running_mean.data_as<T>(),
        running_var.data_as<T>(), mean.data_as<T>(), invstd.data_as<T>(), y.data_as<T>(), n, c, hw,
        momentum, eps);
  });
  FRUGAL_CUDA_CHECK_LAUNCH();
}

void batch_norm_eval(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                     ConstTensorView running_mean, ConstTensorView running_var, TensorView mean,
                     TensorView invstd, TensorView y, double eps, const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(x.device.index));
  const int64_t c = x.shape[1], hw = x.shape[2] * x.shape[3];
  const int64_t total = x.numel();
  visit(x.dtype, [&]<class T>() {
    const LaunchShape st = grid_stride_launch(c);
    eval_stats_kernel<T><<<st.blocks, st.threads, 0, stream_of(ctx)>>>(
        running_mean.data_as<T>(), running_var.data_as<T>(), mean.data_as<T>(), invstd.data_as<T>(),
        c, eps);
    FRUGAL_CUDA_CHECK_LAUNCH();
    if (total == 0) return;
    const LaunchShape ls = grid_stride_launch(total);
    eval_kernel<T><<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(
        x.data_as<T>(), weight.data_as<T>(), bias.data_as<T>(), running_mean.data_as<T>(),
        running_var.data_as<T>(), y.data_as<T>(), c, hw, eps, total);
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
}

void batch_norm_backward(ConstTensorView dy, ConstTensorView x, ConstTensorView weight,
                         ConstTensorView mean, ConstTensorView invstd, bool batch_stats,
                         TensorView dx, TensorView grad_weight, TensorView grad_bias,
                         const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(x.device.index));
  const int64_t n = x.shape[0], c = x.shape[1], hw = x.shape[2] * x.shape[3];
  visit(x.dtype, [&]<class T>() {
    backward_kernel<T><<<static_cast<unsigned>(c), kThreads, 0, stream_of(ctx)>>>(
        dy.data_as<T>(), x.data_as<T>(), weight.data_as<T>(), mean.data_as<T>(),
        invstd.data_as<T>(), batch_stats, dx.data_as<T>(), grad_weight.data_as<T>(),
        grad_bias.data_as<T>(), n, c, hw);
  });
  FRUGAL_CUDA_CHECK_LAUNCH();
}

}  // namespace frugal::cu
