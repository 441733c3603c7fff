// Softmax cross-entropy and MSE on CUDA. Every reduction is a fixed-shape tree (no atomics), so
// the loss is the same run to run.
//
// Cross-entropy, three launches and one host wait:
//   1. one block scans the targets: count of rows not equal to ignore_index, first bad row;
//   2. one block per row: online max / sum of exp (each thread over a strided slice, then a tree
//      over the block), then the gradient (p - (1 - eps) onehot - eps / C) / count and the row
//      loss (double);
//   3. one block adds the row losses in double and divides by the count;
// then the loss, the count and the bad row come back to the host together.
#include <cuda_runtime.h>

#include <cmath>
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

constexpr int kReduceThreads = 256;  // the single-block reductions
constexpr int kMseThreads = 256;
constexpr int64_t kMseMaxBlocks = 1024;  // partial sums of MSE (then one block adds them)

// Scratch layout of the cross-entropy (doubles): [0, n) row losses, then loss, count, bad row.
struct CeSlots {
  static constexpr int kLoss = 0, kCount = 1, kBadRow = 2, kStats = 3;
};

/// Tree sum of one double per thread over a block of kThreads (a power of two), fixed order.
/// Returns the total in thread 0 (others: partial values).
template <int kThreads>
__device__ double block_sum(double v, double* s) {
  s[threadIdx.x] = v;
  __syncthreads();
  for (int o = kThreads / 2; o > 0; o /= 2) {
    if (threadIdx.x < o) s[threadIdx.x] += s[threadIdx.x + o];
    __syncthreads();
  }
  return s[0];
}

__global__ void ce_scan_targets(const int64_t* __restrict__ t, int64_t n, int64_t c, int64_t ignore,
                                double* __restrict__ stats) {
  __shared__ double s_count[kReduceThreads];
  __shared__ int64_t s_bad[kReduceThreads];
  int64_t count = 0;
  int64_t bad = n;  // n = none
  for (int64_t r = threadIdx.x; r < n; r += kReduceThreads) {
    const int64_t v = t[r];
    if (v == ignore) continue;
    if (v < 0 || v >= c) {
      bad = bad < r ? bad : r;
    } else {
      ++count;
    }
  }
  const double total = block_sum<kReduceThreads>(static_cast<double>(count), s_count);
  s_bad[threadIdx.x] = bad;
  __syncthreads();
  for (int o = kReduceThreads / 2; o > 0; o /= 2) {
    if (threadIdx.x < o) {
      const int64_t other = s_bad[threadIdx.x + o];
      if (other < s_bad[threadIdx.x]) s_bad[threadIdx.x] = other;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    stats[CeSlots::kCount] = total;
    stats[CeSlots::kBadRow] = s_bad[0] < n ? static_cast<double>(s_bad[0]) : -1.0;
  }
}

/// Online softmax state: running max m and sum s of exp(x - m).
template <class A>
struct MaxSum {
  A m;
  A s;
};

template <class A>
__device__ MaxSum<A> combine(MaxSum<A> a, MaxSum<A> b) {
  if (b.s == A(0)) return a;  // b saw nothing (or only -inf); a NaN sum is never 0
  if (a.s == A(0)) return b;
  const A m = a.m > b.m ? a.m : b.m;
  return {m, a.s * exp(a.m - m) + b.s * exp(b.m - m)};
}

template <class T, int kThreads>
__global__ void ce_rows(const T* __restrict__ x, const int64_t* __restrict__ t, T* __restrict__ g,
                        double* __restrict__ scratch, int64_t n, int64_t c, int64_t ignore,
                        double eps) {
  using A = Acc<T>;
  __shared__ A s_m[kThreads];
  __shared__ A s_s[kThreads];
  __shared__ double s_sum[kThreads];
  const double* stats = scratch + n;
  const double count = stats[CeSlots::kCount];
  for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    const T* xr = x + r * c;
    T* gr = g + r * c;
    const int64_t tr = t[r];
    if (tr == ignore || tr < 0 || tr >= c) {  // ignored (bad rows raise an error on the host)
      for (int64_t j = threadIdx.x; j < c; j += kThreads) gr[j] = T(A(0));
      if (threadIdx.x == 0) scratch[r] = 0.0;
      continue;
    }
    // Pass 1: per-thread online max / sum of exp, and the sum of the logits (smoothing).
    MaxSum<A> ms{-INFINITY, A(0)};
    double sum_x = 0.0;
    for (int64_t j = threadIdx.x; j < c; j += kThreads) {
      const A v = static_cast<A>(xr[j]);
      sum_x += static_cast<double>(v);
      if (v > ms.m) {
        ms.s = ms.s * exp(ms.m - v) + A(1);
        ms.m = v;
      } else if (!(v == -INFINITY)) {  // exp(-inf) = 0; a NaN still reaches the sum
        ms.s += exp(v - ms.m);
      }
    }
    s_m[threadIdx.x] = ms.m;
    s_s[threadIdx.x] = ms.s;
    __syncthreads();
    for (int o = kThreads / 2; o > 0; o /= 2) {
      if (threadIdx.x < o) {
        const MaxSum<A> r2 = combine<A>({s_m[threadIdx.x], s_s[threadIdx.x]},
                                        {s_m[threadIdx.x + o], s_s[threadIdx.x + o]});
        s_m[threadIdx.x] = r2.m;
        s_s[threadIdx.x] = r2.s;
      }
      __syncthreads();
    }
    const A m = s_m[0];
    const A s = s_s[0];
    const double total_x = eps != 0.0 ? block_sum<kThreads>(sum_x, s_sum) : 0.0;
    // Pass 2: the gradient.
    const double inv_count = count > 0 ? 1.0 / count : 0.0;
    const A inv_s = A(1) / s;
    const auto off = static_cast<A>(eps / static_cast<double>(c));
    const auto ic = static_cast<A>(inv_count);
    const auto hit = static_cast<A>((1.0 - eps) * inv_count);
    for (int64_t j = threadIdx.x; j < c; j += kThreads) {
      A v = (exp(static_cast<A>(xr[j]) - m) * inv_s - off) * ic;
      if (j == tr) v -= hit;
      gr[j] = T(v);
    }
    if (threadIdx.x == 0) {
      // lse - x_j = (m - x_j) + log s: the large parts cancel exactly before the log is added.
      const double log_s = log(static_cast<double>(s));
      const double md = static_cast<double>(m);
      const double nll = (md - static_cast<double>(static_cast<A>(xr[tr]))) + log_s;
      const double smooth = (md - total_x / static_cast<double>(c)) + log_s;
      scratch[r] = (1.0 - eps) * nll + eps * smooth;
    }
    __syncthreads();  // the shared arrays are reused by the next row
  }
}

__global__ void ce_finish(double* __restrict__ scratch, int64_t n) {
  __shared__ double s[kReduceThreads];
  double acc = 0.0;
  for (int64_t r = threadIdx.x; r < n; r += kReduceThreads) acc += scratch[r];
  const double total = block_sum<kReduceThreads>(acc, s);
  if (threadIdx.x == 0) {
    const double count = scratch[n + CeSlots::kCount];
    scratch[n + CeSlots::kLoss] = count > 0 ? total / count : 0.0;
  }
}

template <class T, int kThreads>
void launch_ce_rows(const T* x, const int64_t* t, T* g, double* scratch, int64_t n, int64_t c,
                    int64_t ignore, double eps, cudaStream_t stream) {
  const auto grid = static_cast<unsigned>(n < 65535 * 16 ? n : 65535 * 16);
  ce_rows<T, kThreads><<<grid, kThreads, 0, stream>>>(x, t, g, scratch, n, c, ignore, eps);
  FRUGAL_CUDA_CHECK_LAUNCH();
}

template <class T>
__global__ void mse_partial(const T* __restrict__ p, const T* __restrict__ t, T* __restrict__ g,
                            double* __restrict__ partial, int64_t n, Acc<T> two_over_n) {
  using A = Acc<T>;
  __shared__ double s[kMseThreads];
  double acc = 0.0;
  for (int64_t i = blockIdx.x * int64_t(kMseThreads) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * kMseThreads) {
    const A d = static_cast<A>(p[i]) - static_cast<A>(t[i]);
    acc += static_cast<double>(d) * static_cast<double>(d);
    g[i] = T(d * two_over_n);
  }
  const double total = block_sum<kMseThreads>(acc, s);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

__global__ void mse_finish(double* __restrict__ partial, int64_t blocks, int64_t n) {
  __shared__ double s[kReduceThreads];
  double acc = 0.0;
  for (int64_t b = threadIdx.x; b < blocks; b += kReduceThreads) acc += partial[b];
  const double total = block_sum<kReduceThreads>(acc, s);
  if (threadIdx.x == 0) partial[blocks] = total / static_cast<double>(n);
}

}  // namespace

double softmax_cross_entropy(ConstTensorView logits, ConstTensorView targets,
                             double label_smoothing, int64_t ignore_index, TensorView grad,
                             int64_t* num_valid, int64_t* bad_row, const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(logits.device.index));
  const int64_t n = logits.shape[0];
  const int64_t c = logits.shape[1];
  const cudaStream_t stream = stream_of(ctx);
  Tensor scratch = Tensor::empty({n + CeSlots::kStats}, DType::kF64, logits.device, ctx);
  double* sp = scratch.data<double>();
  const int64_t* tp = targets.data_as<int64_t>();
  ce_scan_targets<<<1, kReduceThreads, 0, stream>>>(tp, n, c, ignore_index, sp + n);
  FRUGAL_CUDA_CHECK_LAUNCH();
  ::frugal::detail::visit_compute_float(logits.dtype, "softmax_cross_entropy", [&]<class T>() {
    const T* xp = logits.data_as<T>();
    T* gp = grad.data_as<T>();
    // Threads per row: enough to cover small rows in one step, 256 for wide ones.
    if (c <= 32) {
      launch_ce_rows<T, 32>(xp, tp, gp, sp, n, c, ignore_index, label_smoothing, stream);
    } else if (c <= 128) {
      launch_ce_rows<T, 128>(xp, tp, gp, sp, n, c, ignore_index, label_smoothing, stream);
    } else {
      launch_ce_rows<T, 256>(xp, tp, gp, sp, n, c, ignore_index, label_smoothing, stream);
    }
  });
  ce_finish<<<1, kReduceThreads, 0, stream>>>(sp, n);
  FRUGAL_CUDA_CHECK_LAUNCH();
  double stats[CeSlots::kStats];
  FRUGAL_CUDA_CHECK(cudaMemcpyAsync(stats, sp + n, sizeof(stats), cudaMemcpyDeviceToHost, stream));
  FRUGAL_CUDA_CHECK(cudaStreamSynchronize(stream));
  *num_valid = static_cast<int64_t>(stats[CeSlots::kCount]);
  *bad_row = static_cast<int64_t>(stats[CeSlots::kBadRow]);
  return stats[CeSlots::kLoss];
}

double mse_loss(ConstTensorView pred, ConstTensorView target, TensorView grad,
                const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(pred.device.index));
  const int64_t n = pred.numel();
  const cudaStream_t stream = stream_of(ctx);
  // The grid depends only on n, so the partial sums (and the loss) do too.
  const int64_t blocks = std::min<int64_t>((n + kMseThreads - 1) / kMseThreads, kMseMaxBlocks);
  Tensor partial = Tensor::empty({blocks + 1}, DType::kF64, pred.device, ctx);
  double* pp = partial.data<double>();
  ::frugal::detail::visit_compute_float(pred.dtype, "mse_loss", [&]<class T>() {
    mse_partial<T><<<static_cast<unsigned>(blocks), kMseThreads, 0, stream>>>(
        pred.data_as<T>(), target.data_as<T>(), grad.data_as<T>(), pp, n,
        static_cast<Acc<T>>(2.0 / static_cast<double>(n)));
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
  mse_finish<<<1, kReduceThreads, 0, stream>>>(pp, blocks, n);
  FRUGAL_CUDA_CHECK_LAUNCH();
  double loss = 0.0;
  FRUGAL_CUDA_CHECK(
      cudaMemcpyAsync(&loss, pp + blocks, sizeof(double), cudaMemcpyDeviceToHost, stream));
  FRUGAL_CUDA_CHECK(cudaStreamSynchronize(stream));
  return loss;
}

}  // namespace frugal::cu
