// Feature losses on CUDA (include/frugal/distill/feature.hpp): MSE (fixed grid of partial sums),
// cosine (one block per row), attention maps (one thread per pixel) and attention transfer (maps,
// then one block per sample for the normalised difference, then the elementwise gradient). Every
// sum runs in double through fixed trees: results are the same run to run.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "common/check.cuh"
#include "common/launch.cuh"
#include "cu_ops.hpp"
#include "distill/common.cuh"
#include "distill/distill_internal.hpp"

namespace frugal::cu {
namespace {

using namespace distill_detail;
namespace dd = ::frugal::distill::detail;

constexpr int64_t kMseMaxBlocks = 1024;
constexpr double kCosEps = 1e-8;
constexpr double kAtEps = 1e-12;

template <class T>
__global__ void mse_partial(const T* __restrict__ s, const T* __restrict__ t, T* __restrict__ g,
                            double* __restrict__ partial, int64_t n, T two_over_n) {
  __shared__ double sh[kThreads];
  double acc = 0.0;
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * kThreads) {
    const T d = s[i] - t[i];
    acc += static_cast<double>(d) * static_cast<double>(d);
    g[i] = d * two_over_n;
  }
  acc = block_sum<double>(acc, sh);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

template <class T>
__global__ void cosine_rows(const T* __restrict__ s_all, const T* __restrict__ t_all,
                            T* __restrict__ g_all, double* __restrict__ row_loss, int64_t rows,
                            int64_t d) {
  __shared__ double sh[kThreads];
  const double inv_rows = 1.0 / static_cast<double>(rows);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* s = s_all + r * d;
    const T* t = t_all + r * d;
    double dot = 0.0, ss = 0.0, tt = 0.0;
    for (int64_t j = threadIdx.x; j < d; j += kThreads) {
      const double sv = static_cast<double>(s[j]), tv = static_cast<double>(t[j]);
      dot += sv * tv;
      ss += sv * sv;
      tt += tv * tv;
    }
    dot = block_sum<double>(dot, sh);
    ss = block_sum<double>(ss, sh);
    tt = block_sum<double>(tt, sh);
    const double ns = sqrt(ss), nt = sqrt(tt);
    const double cs = fmax(ns, kCosEps), ct = fmax(nt, kCosEps);
    const double cosv = dot / (cs * ct);
    const double a = -inv_rows / (cs * ct);
    const double b = ns > kCosEps ? inv_rows * cosv / ss : 0.0;
    for (int64_t j = threadIdx.x; j < d; j += kThreads) {
      g_all[r * d + j] =
          static_cast<T>(a * static_cast<double>(t[j]) + b * static_cast<double>(s[j]));
    }
    if (threadIdx.x == 0) row_loss[r] = 1.0 - cosv;
  }
}

/// map[n, p] = sum_c f[n, c, p]^2 in double; one thread per (n, p).
template <class T, class M>
__global__ void attention_maps(const T* __restrict__ f, M* __restrict__ map, int64_t n, int64_t c,
                               int64_t hw) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n * hw;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t s = i / hw, p = i % hw;
    double acc = 0.0;
    for (int64_t ch = 0; ch < c; ++ch) {
      const double v = static_cast<double>(f[(s * c + ch) * hw + p]);
      acc += v * v;
    }
    map[i] = static_cast<M>(acc);
  }
}

/// Per sample (one block): u = a / |a|, loss |u_s - u_t|, and da = dL/da_s * 2 / N in place of
/// the student map.
__global__ void at_samples(double* __restrict__ as, const double* __restrict__ at,
                           double* __restrict__ loss, int64_t n, int64_t hw) {
  __shared__ double sh[kThreads];
  for (int64_t s = blockIdx.x; s < n; s += gridDim.x) {
    double* a = as + s * hw;
    const double* b = at + s * hw;
    double ss = 0.0, tt = 0.0;
    for (int64_t p = threadIdx.x; p < hw; p += kThreads) {
      ss += a[p] * a[p];
      tt += b[p] * b[p];
    }
    ss = block_sum<double>(ss, sh);
    tt = block_sum<double>(tt, sh);
    const double ns = fmax(sqrt(ss), kAtEps), nt = fmax(sqrt(tt), kAtEps);
    double dd2 = 0.0, proj = 0.0;
    for (int64_t p = threadIdx.x; p < hw; p += kThreads) {
      const double d = a[p] / ns - b[p] / nt;
      dd2 += d * d;
      proj += a[p] / ns * d;
    }
    dd2 = block_sum<double>(dd2, sh);
    proj = block_sum<double>(proj, sh);
    const double len = sqrt(dd2);
    const bool clamped = sqrt(ss) <= kAtEps;
    const double inv_len = len > 0.0 ? 1.0 / len : 0.0;
    proj *= inv_len;
    const double scale = 2.0 / static_cast<double>(n) / ns;
    for (int64_t p = threadIdx.x; p < hw; p += kThreads) {
      const double v = (a[p] / ns - b[p] / nt) * inv_len;
      a[p] = (clamped ? v : v - a[p] / ns * proj) * scale;
    }
    if (threadIdx.x == 0) loss[s] = len;
  }
}

template <class T>
__global__ void at_grad(const T* __restrict__ f, const double* __restrict__ da, T* __restrict__ g,
                        int64_t n, int64_t c, int64_t hw) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n * c * hw;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t s = i / (c * hw), p = i % hw;
    g[i] = static_cast<T>(static_cast<double>(f[i]) * da[s * hw + p]);
  }
}

double fetch(const double* dev, cudaStream_t stream) {
  double v = 0.0;
  FRUGAL_CUDA_CHECK(cudaMemcpyAsync(&v, dev, sizeof(double), cudaMemcpyDeviceToHost, stream));
  FRUGAL_CUDA_CHECK(cudaStreamSynchronize(stream));
  return v;
}

}  // namespace

double distill_mse(ConstTensorView student, ConstTensorView teacher, TensorView grad,
                   const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(student.device.index));
  const int64_t n = student.numel();
  const cudaStream_t stream = stream_of(ctx);
  // The grid depends only on n, so the partial sums (and the loss) do too.
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, kMseMaxBlocks);
  Tensor partial = Tensor::empty({blocks + 1}, DType::kF64, student.device, ctx);
  double* pp = partial.data<double>();
  dd::visit_real(student.dtype, "distill_mse", [&]<class T>() {
    mse_partial<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        student.data_as<T>(), teacher.data_as<T>(), grad.data_as<T>(), pp, n,
        static_cast<T>(2.0 / static_cast<double>(n)));
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
  sum_doubles<<<1, kThreads, 0, stream>>>(pp, blocks, 1.0 / static_cast<double>(n), pp + blocks);
  FRUGAL_CUDA_CHECK_LAUNCH();
  return fetch(pp + blocks, stream);
}

double distill_cosine(ConstTensorView student, ConstTensorView teacher, TensorView grad,
                      const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(student.device.index));
  const int64_t rows = student.rank() >= 2 ? student.shape[0] : 1;
  const int64_t d = student.numel() / rows;
  const cudaStream_t stream = stream_of(ctx);
  Tensor scratch = Tensor::empty({rows + 1}, DType::kF64, student.device, ctx);
  double* sp = scratch.data<double>();
  dd::visit_real(student.dtype, "distill_cosine", [&]<class T>() {
    cosine_rows<T><<<row_blocks(rows), kThreads, 0, stream>>>(
        student.data_as<T>(), teacher.data_as<T>(), grad.data_as<T>(), sp, rows, d);
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
  sum_doubles<<<1, kThreads, 0, stream>>>(sp, rows, 1.0 / static_cast<double>(rows), sp + rows);
  FRUGAL_CUDA_CHECK_LAUNCH();
  return fetch(sp + rows, stream);
}

void distill_attention_map(ConstTensorView features, TensorView map, const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(features.device.index));
  const int64_t n = features.shape[0], c = features.shape[1];
  const int64_t hw = features.shape[2] * features.shape[3];
  const LaunchShape ls = grid_stride_launch(n * hw);
  dd::visit_real(features.dtype, "distill_attention_map", [&]<class T>() {
    attention_maps<T, T><<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(features.data_as<T>(),
                                                                       map.data_as<T>(), n, c, hw);
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
}

double distill_attention_transfer(ConstTensorView student, ConstTensorView teacher, TensorView grad,
                                  const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(student.device.index));
  const int64_t n = student.shape[0], cs = student.shape[1], ct = teacher.shape[1];
  const int64_t hw = student.shape[2] * student.shape[3];
  const cudaStream_t stream = stream_of(ctx);
  // Scratch (doubles): student maps (becoming dL/da), teacher maps, sample losses, the total.
  Tensor scratch = Tensor::empty({2 * n * hw + n + 1}, DType::kF64, student.device, ctx);
  double* as = scratch.data<double>();
  double* at = as + n * hw;
  double* loss = at + n * hw;
  const LaunchShape lm = grid_stride_launch(n * hw);
  const LaunchShape lg = grid_stride_launch(n * cs * hw);
  dd::visit_real(student.dtype, "distill_attention_transfer", [&]<class T>() {
    attention_maps<T, double>
        <<<lm.blocks, lm.threads, 0, stream>>>(student.data_as<T>(), as, n, cs, hw);
    FRUGAL_CUDA_CHECK_LAUNCH();
    attention_maps<T, double>
        <<<lm.blocks, lm.threads, 0, stream>>>(teacher.data_as<T>(), at, n, ct, hw);
    FRUGAL_CUDA_CHECK_LAUNCH();
    at_samples<<<row_blocks(n), kThreads, 0, stream>>>(as, at, loss, n, hw);
    FRUGAL_CUDA_CHECK_LAUNCH();
    at_grad<T><<<lg.blocks, lg.threads, 0, stream>>>(student.data_as<T>(), as, grad.data_as<T>(), n,
                                                     cs, hw);
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
  sum_doubles<<<1, kThreads, 0, stream>>>(loss, n, 1.0 / static_cast<double>(n), loss + n);
  FRUGAL_CUDA_CHECK_LAUNCH();
  return fetch(loss + n, stream);
}

}  // namespace frugal::cu
