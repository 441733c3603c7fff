// CUDA backend of the prune masks (src/prune/mask.cpp). Same keys and tie rule as the CPU
// (src/prune/cpu/mask.cpp), so the masks are identical: the k-th smallest key comes from a
// cub radix sort of the order-preserving keys, ties from an exclusive scan of "key == t" flags.
#include <cuda_runtime.h>

#include <cstdint>
#include <cub/cub.cuh>

#include "common/check.cuh"
#include "common/launch.cuh"
#include "cu_ops.hpp"

namespace frugal::cu {
namespace {

__device__ inline uint32_t dkey(float v) {
  const uint32_t u = __float_as_uint(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ inline unsigned long long dkey(double v) {
  const auto u = static_cast<unsigned long long>(__double_as_longlong(v));
  return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}

template <class T>
__global__ void count_nan_kernel(const T* x, int64_t n, unsigned long long* out) {
  unsigned long long c = 0;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{blockDim.x} * gridDim.x) {
    c += isnan(x[i]) ? 1 : 0;
  }
  if (c) atomicAdd(out, c);
}

template <class T>
__global__ void abs_kernel(const T* x, T* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{blockDim.x} * gridDim.x) {
    y[i] = fabs(x[i]);
  }
}

template <class T, class K>
__global__ void keys_kernel(const T* x, int64_t n, int use_abs, K* keys) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{blockDim.x} * gridDim.x) {
    const T v = use_abs ? fabs(x[i]) : x[i];
    keys[i] = dkey(v);
  }
}

// One thread: t = sorted[k - 1], need = k - (first index of t in sorted).
template <class K>
__global__ void threshold_kernel(const K* sorted, int64_t k, K* t_out, int64_t* need_out) {
  const K t = sorted[k - 1];
  int64_t lo = 0, hi = k - 1;  // lower_bound of t in sorted[0, k)
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (sorted[mid] < t)
      lo = mid + 1;
    else
      hi = mid;
  }
  *t_out = t;
  *need_out = k - lo;
}

template <class K>
__global__ void eq_flags_kernel(const K* keys, int64_t n, const K* t, int* flags) {
  const K tv = *t;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{blockDim.x} * gridDim.x) {
    flags[i] = keys[i] == tv ? 1 : 0;
  }
}

template <class K>
__global__ void mask_kernel(const K* keys, int64_t n, const K* t, const int64_t* need,
                            const int* eq_rank, uint8_t* mask) {
  const K tv = *t;
  const int64_t nd = *need;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{blockDim.x} * gridDim.x) {
    const K key = keys[i];
    mask[i] = key < tv ? 0 : (key == tv ? (eq_rank[i] < nd ? 0 : 1) : 1);
  }
}

__global__ void fill_kernel(uint8_t* mask, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{blockDim.x} * gridDim.x) {
    mask[i] = 1;
  }
}

template <class T>
__global__ void nm_kernel(const T* s, int64_t groups, int n, int m, int use_abs, uint8_t* mask) {
  for (int64_t g = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; g < groups;
       g += int64_t{blockDim.x} * gridDim.x) {
    const T* x = s + g * m;
    for (int i = 0; i < m; ++i) {
      const T xi = use_abs ? fabs(x[i]) : x[i];
      int rank = 0;
      for (int j = 0; j < m; ++j) {
        const T xj = use_abs ? fabs(x[j]) : x[j];
        rank += (xj > xi) || (xj == xi && j < i);
      }
      mask[g * m + i] = rank < n ? 1 : 0;
    }
  }
}

template <class T>
__global__ void apply_mask_kernel(T* w, const uint8_t* mask, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{blockDim.x} * gridDim.x) {
    if (!mask[i]) w[i] = T(0);
  }
}

template <class T, class K>
void select_mask(ConstTensorView scores, int64_t k, int use_abs, TensorView mask,
                 const ExecContext& ctx) {
  const int64_t n = scores.numel();
  cudaStream_t st = stream_of(ctx);
  const auto ls = grid_stride_launch(n);
  uint8_t* out = mask.data_as<uint8_t>();
  if (k == 0) {
    fill_kernel<<<ls.blocks, ls.threads, 0, st>>>(out, n);
    FRUGAL_CUDA_CHECK_LAUNCH();
    return;
  }
  const DType kdt = sizeof(K) == 4 ? DType::kI32 : DType::kI64;
  Tensor keys = Tensor::empty(Shape{n}, kdt, scores.device, ctx);
  Tensor sorted = Tensor::empty(Shape{n}, kdt, scores.device, ctx);
  K* kp = static_cast<K*>(keys.data_ptr());
  K* sp = static_cast<K*>(sorted.data_ptr());
  keys_kernel<T, K><<<ls.blocks, ls.threads, 0, st>>>(scores.data_as<T>(), n, use_abs, kp);
  FRUGAL_CUDA_CHECK_LAUNCH();
  const int ni = static_cast<int>(n);  // the dispatch checks n < 2^31
  size_t sort_bytes = 0, scan_bytes = 0;
  int* dummy = nullptr;
  FRUGAL_CUDA_CHECK(
      cub::DeviceRadixSort::SortKeys(nullptr, sort_bytes, kp, sp, ni, 0, int(8 * sizeof(K)), st));
  FRUGAL_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, scan_bytes, dummy, dummy, ni, st));
  Tensor temp = Tensor::empty(Shape{static_cast<int64_t>(std::max(sort_bytes, scan_bytes)) + 1},
                              DType::kU8, scores.device, ctx);
  size_t tb = static_cast<size_t>(temp.numel());
  FRUGAL_CUDA_CHECK(
      cub::DeviceRadixSort::SortKeys(temp.data_ptr(), tb, kp, sp, ni, 0, int(8 * sizeof(K)), st));
  Tensor scal = Tensor::empty(Shape{2}, DType::kI64, scores.device, ctx);  // t, need
  K* tp = static_cast<K*>(scal.data_ptr());
  int64_t* needp = static_cast<int64_t*>(scal.data_ptr()) + 1;
  threshold_kernel<K><<<1, 1, 0, st>>>(sp, k, tp, needp);
  FRUGAL_CUDA_CHECK_LAUNCH();
  Tensor flags = Tensor::empty(Shape{n}, DType::kI32, scores.device, ctx);
  Tensor ranks = Tensor::empty(Shape{n}, DType::kI32, scores.device, ctx);
  eq_flags_kernel<K><<<ls.blocks, ls.threads, 0, st>>>(kp, n, tp, flags.data<int32_t>());
  FRUGAL_CUDA_CHECK_LAUNCH();
  tb = static_cast<size_t>(temp.numel());
  FRUGAL_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(temp.data_ptr(), tb, flags.data<int32_t>(),
                                                  ranks.data<int32_t>(), ni, st));
  mask_kernel<K><<<ls.blocks, ls.threads, 0, st>>>(kp, n, tp, needp, ranks.data<int32_t>(), out);
  FRUGAL_CUDA_CHECK_LAUNCH();
}

}  // namespace

int64_t prune_count_nan(ConstTensorView x, const ExecContext& ctx) {
  cudaStream_t st = stream_of(ctx);
  Tensor cnt = Tensor::zeros(Shape{1}, DType::kI64, x.device, ctx);
  const auto ls = grid_stride_launch(x.numel());
  auto* cp = static_cast<unsigned long long*>(cnt.data_ptr());
  if (x.dtype == DType::kF32) {
    count_nan_kernel<float><<<ls.blocks, ls.threads, 0, st>>>(x.data_as<float>(), x.numel(), cp);
  } else {
    count_nan_kernel<double><<<ls.blocks, ls.threads, 0, st>>>(x.data_as<double>(), x.numel(), cp);
  }
  FRUGAL_CUDA_CHECK_LAUNCH();
  unsigned long long host = 0;
  FRUGAL_CUDA_CHECK(cudaMemcpyAsync(&host, cp, sizeof(host), cudaMemcpyDeviceToHost, st));
  FRUGAL_CUDA_CHECK(cudaStreamSynchronize(st));
  return static_cast<int64_t>(host);
}

void prune_abs(ConstTensorView x, TensorView y, const ExecContext& ctx) {
  const auto ls = grid_stride_launch(x.numel());
  cudaStream_t st = stream_of(ctx);
  if (x.dtype == DType::kF32) {
    abs_kernel<float>
        <<<ls.blocks, ls.threads, 0, st>>>(x.data_as<float>(), y.data_as<float>(), x.numel());
  } else {
    abs_kernel<double>
        <<<ls.blocks, ls.threads, 0, st>>>(x.data_as<double>(), y.data_as<double>(), x.numel());
  }
  FRUGAL_CUDA_CHECK_LAUNCH();
}

void prune_select_mask(ConstTensorView scores, int64_t k, int use_abs, TensorView mask,
                       const ExecContext& ctx) {
  if (scores.dtype == DType::kF32) {
    select_mask<float, uint32_t>(scores, k, use_abs, mask, ctx);
  } else {
    select_mask<double, unsigned long long>(scores, k, use_abs, mask, ctx);
  }
}

void prune_nm_mask(ConstTensorView scores, int n, int m, int use_abs, TensorView mask,
                   const ExecContext& ctx) {
  const int64_t groups = scores.numel() / m;
  const auto ls = grid_stride_launch(groups);
  cudaStream_t st = stream_of(ctx);
  if (scores.dtype == DType::kF32) {
    nm_kernel<float><<<ls.blocks, ls.threads, 0, st>>>(scores.data_as<float>(), groups, n, m,
                                                       use_abs, mask.data_as<uint8_t>());
  } else {
    nm_kernel<double><<<ls.blocks, ls.threads, 0, st>>>(scores.data_as<double>(), groups, n, m,
                                                        use_abs, mask.data_as<uint8_t>());
  }
  FRUGAL_CUDA_CHECK_LAUNCH();
}

void prune_apply_mask(TensorView w, ConstTensorView mask, const ExecContext& ctx) {
  const auto ls = grid_stride_launch(w.numel());
  cudaStream_t st = stream_of(ctx);
  if (w.dtype == DType::kF32) {
    apply_mask_kernel<float>
        <<<ls.blocks, ls.threads, 0, st>>>(w.data_as<float>(), mask.data_as<uint8_t>(), w.numel());
  } else {
    apply_mask_kernel<double>
        <<<ls.blocks, ls.threads, 0, st>>>(w.data_as<double>(), mask.data_as<uint8_t>(), w.numel());
  }
  FRUGAL_CUDA_CHECK_LAUNCH();
}

}  // namespace frugal::cu
