// Reductions, argmax and top-k on contiguous device buffers.
// Every reduction runs in a fixed order for a given shape (fixed grid, fixed shared-memory trees,
// no atomics), so results are deterministic run to run. Sums accumulate in double like the CPU
// backend, in a different order, so CPU and CUDA sums agree to rounding, not bit for bit.
#include <math.h>

#include <algorithm>
#include <type_traits>

#include "common/check.cuh"
#include "common/launch.cuh"
#include "core/dtype_dispatch.hpp"
#include "core/ops_internal.hpp"
#include "cu_ops.hpp"

namespace frugal::cu {
namespace {

using ::frugal::detail::ReduceKind;

constexpr int kThreads = 256;         // threads per block of every kernel here
constexpr int64_t kPerThread = 8;     // elements per thread before a first-pass block is added
constexpr int64_t kMaxBlocks = 1024;  // first-pass blocks of a whole-tensor reduction

/// Compute type of T for comparisons: double for f64, float otherwise (exact for every T).
template <class T>
using Cmp = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <class T, ReduceKind K>
struct Reducer {
  static constexpr bool kIsSum = K == ReduceKind::kSum || K == ReduceKind::kMean;
  using Acc = std::conditional_t<kIsSum, double, Cmp<T>>;

  __device__ static Acc init() {
    if constexpr (kIsSum || K == ReduceKind::kAbsMax) {
      return Acc(0);
    } else if constexpr (K == ReduceKind::kMax) {
      return Acc(-INFINITY);
    } else {
      return Acc(INFINITY);
    }
  }
  __device__ static Acc map(T v) {
    const auto a = static_cast<Acc>(static_cast<Cmp<T>>(v));
    if constexpr (K == ReduceKind::kAbsMax) {
      return fabs(a);
    } else {
      return a;
    }
  }
  __device__ static Acc combine(Acc acc, Acc v) {
    if constexpr (kIsSum) {
      return acc + v;
    } else if constexpr (K == ReduceKind::kMin) {
      return ::frugal::detail::nan_min(acc, v);
    } else {
      return ::frugal::detail::nan_max(acc, v);
    }
  }
  /// The final value of `count` reduced elements, as the output type O.
  template <class O>
  __device__ static O finish(Acc acc, int64_t count) {
    if constexpr (K == ReduceKind::kMean) {
      return static_cast<O>(acc / static_cast<double>(count));
    } else if constexpr (kIsSum) {
      return static_cast<O>(acc);
    } else {
      return O(acc);  // an element of x: exact in x's dtype
    }
  }
};

/// Tree reduction of one value per thread over the block (fixed pairing); the result is valid in
/// thread 0. `shm` holds kThreads accumulators.
template <class R, class Acc>
__device__ Acc block_reduce(Acc v, Acc* shm) {
  shm[threadIdx.x] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) shm[threadIdx.x] = R::combine(shm[threadIdx.x], shm[threadIdx.x + s]);
    __syncthreads();
  }
  return shm[0];
}

/// Pass 1 of a whole-tensor reduction: block b reduces elements b*kThreads + t + j*stride.
template <class T, ReduceKind K>
__global__ void reduce_partial_kernel(const T* x, int64_t n, typename Reducer<T, K>::Acc* partial) {
  using R = Reducer<T, K>;
  using Acc = typename R::Acc;
  __shared__ Acc shm[kThreads];
  Acc acc = R::init();
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * kThreads) {
    acc = R::combine(acc, R::map(x[i]));
  }
  acc = block_reduce<R>(acc, shm);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

/// Pass 2: one block combines the partials and writes the result.
template <class T, ReduceKind K, class O>
__global__ void reduce_final_kernel(const typename Reducer<T, K>::Acc* partial, int64_t blocks,
                                    int64_t n, O* out) {
  using R = Reducer<T, K>;
  using Acc = typename R::Acc;
  __shared__ Acc shm[kThreads];
  Acc acc = R::init();
  for (int64_t i = threadIdx.x; i < blocks; i += kThreads) acc = R::combine(acc, partial[i]);
  acc = block_reduce<R>(acc, shm);
  if (threadIdx.x == 0) *out = R::template finish<O>(acc, n);
}

/// Axis reduction with inner == 1: one block per row of length len.
template <class T, ReduceKind K, class O>
__global__ void reduce_rows_kernel(const T* x, int64_t len, O* out) {
  using R = Reducer<T, K>;
  using Acc = typename R::Acc;
  __shared__ Acc shm[kThreads];
  const T* row = x + blockIdx.x * len;
  Acc acc = R::init();
  for (int64_t l = threadIdx.x; l < len; l += kThreads) acc = R::combine(acc, R::map(row[l]));
  acc = block_reduce<R>(acc, shm);
  if (threadIdx.x == 0) out[blockIdx.x] = R::template finish<O>(acc, len);
}

/// Axis reduction with inner > 1: one thread per output, walking down the axis in order
/// (neighbouring threads read neighbouring columns).
template <class T, ReduceKind K, class O>
__global__ void reduce_columns_kernel(const T* x, int64_t outer, int64_t len, int64_t inner,
                                      O* out) {
  using R = Reducer<T, K>;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < outer * inner;
       j += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = j / inner;
    const int64_t i = j % inner;
    const T* col = x + o * len * inner + i;
    auto acc = R::init();
    for (int64_t l = 0; l < len; ++l) acc = R::combine(acc, R::map(col[l * inner]));
    out[j] = R::template finish<O>(acc, len);
  }
}

template <class T>
void visit_kind(int kind, auto&& fn) {
  switch (static_cast<ReduceKind>(kind)) {
    case ReduceKind::kAbsMax:
      return fn.template operator()<ReduceKind::kAbsMax>();
    case ReduceKind::kMin:
      return fn.template operator()<ReduceKind::kMin>();
    case ReduceKind::kMax:
      return fn.template operator()<ReduceKind::kMax>();
    case ReduceKind::kSum:
      return fn.template operator()<ReduceKind::kSum>();
    case ReduceKind::kMean:
      return fn.template operator()<ReduceKind::kMean>();
  }
}

/// fn.template operator()<O>() with O the output element type: float / double for sums, T else.
template <class T, ReduceKind K>
void visit_output(DType out, auto&& fn) {
  if constexpr (Reducer<T, K>::kIsSum) {
    if (out == DType::kF64) {
      fn.template operator()<double>();
    } else {
      fn.template operator()<float>();
    }
  } else {
    fn.template operator()<T>();
  }
}

// ---- argmax ---------------------------------------------------------------------------------

/// One block per row (inner == 1): per-thread best, then a tree over the block.
template <class T>
__global__ void argmax_rows_kernel(const T* x, int64_t len, int64_t* out) {
  using C = Cmp<T>;
  __shared__ C best[kThreads];
  __shared__ int64_t arg[kThreads];
  const T* row = x + blockIdx.x * len;
  C b = 0;
  int64_t a = -1;  // -1: this thread saw no element
  for (int64_t l = threadIdx.x; l < len; l += kThreads) {
    const auto v = static_cast<C>(row[l]);
    if (a < 0 || ::frugal::detail::select_before(v, l, b, a, true)) {
      b = v;
      a = l;
    }
  }
  best[threadIdx.x] = b;
  arg[threadIdx.x] = a;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      const int64_t ao = arg[threadIdx.x + s];
      if (ao >= 0 && (arg[threadIdx.x] < 0 ||
                      ::frugal::detail::select_before(best[threadIdx.x + s], ao, best[threadIdx.x],
                                                      arg[threadIdx.x], true))) {
        best[threadIdx.x] = best[threadIdx.x + s];
        arg[threadIdx.x] = ao;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = arg[0];
}

/// One thread per output (inner > 1).
template <class T>
__global__ void argmax_columns_kernel(const T* x, int64_t outer, int64_t len, int64_t inner,
                                      int64_t* out) {
  using C = Cmp<T>;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < outer * inner;
       j += int64_t(gridDim.x) * blockDim.x) {
    const T* col = x + (j / inner) * len * inner + j % inner;
    C b = static_cast<C>(col[0]);
    int64_t a = 0;
    for (int64_t l = 1; l < len; ++l) {
      const auto v = static_cast<C>(col[l * inner]);
      if (::frugal::detail::select_before(v, l, b, a, true)) {
        b = v;
        a = l;
      }
    }
    out[j] = a;
  }
}

// ---- topk -----------------------------------------------------------------------------------

// Rows whose padded length fits in this much shared memory sort there; longer rows sort in a
// global-memory workspace, in batches of rows that fit kMaxWorkspaceBytes.
constexpr int64_t kSharedBytes = 48 * 1024;
constexpr int64_t kMaxWorkspaceBytes = int64_t{256} << 20;

/// Selection order with padding: an index of -1 marks a padding slot, which sorts last.
template <class C>
__device__ inline bool padded_before(C a, int64_t ia, C b, int64_t ib, bool largest) {
  if (ia < 0) return false;
  if (ib < 0) return true;
  return ::frugal::detail::select_before(a, ia, b, ib, largest);
}

/// Loads row `row` into (idx, key) slots [0, p) (padding past len), bitonic-sorts them best first
/// with the whole block, and writes the first k. `p` is a power of two >= 2.
template <class T>
__device__ void sort_row(const T* x, int64_t row, int64_t len, int64_t inner, int64_t k,
                         bool largest, int64_t p, int64_t* idx, Cmp<T>* key, T* values,
                         int64_t* indices) {
  const int64_t o = row / inner;
  const int64_t i = row % inner;
  const T* src = x + o * len * inner + i;
  for (int64_t l = threadIdx.x; l < p; l += blockDim.x) {
    idx[l] = l < len ? l : -1;
    key[l] = l < len ? static_cast<Cmp<T>>(src[l * inner]) : Cmp<T>(0);
  }
  __syncthreads();
  // Bitonic sort (Batcher 1968) into ascending "before" order. For each stride s the pairs are
  // (i, i + s) with bit s of i clear; segments of `size` alternate direction.
  for (int64_t size = 2; size <= p; size <<= 1) {
    for (int64_t s = size >> 1; s > 0; s >>= 1) {
      for (int64_t t = threadIdx.x; t < p / 2; t += blockDim.x) {
        const int64_t a = 2 * t - (t & (s - 1));
        const int64_t b = a + s;
        const bool up = (a & size) == 0;
        const bool swap = up ? padded_before(key[b], idx[b], key[a], idx[a], largest)
                             : padded_before(key[a], idx[a], key[b], idx[b], largest);
        if (swap) {
          const auto kt = key[a];
          key[a] = key[b];
          key[b] = kt;
          const int64_t it = idx[a];
          idx[a] = idx[b];
          idx[b] = it;
        }
      }
      __syncthreads();
    }
  }
  T* dv = values + o * k * inner + i;
  int64_t* di = indices + o * k * inner + i;
  for (int64_t j = threadIdx.x; j < k; j += blockDim.x) {
    dv[j * inner] = src[idx[j] * inner];
    di[j * inner] = idx[j];
  }
}

template <class T>
__global__ void topk_shared_kernel(const T* x, int64_t len, int64_t inner, int64_t k, bool largest,
                                   int64_t p, T* values, int64_t* indices) {
  extern __shared__ int64_t smem[];  // p indices, then p keys (int64 first keeps both aligned)
  sort_row<T>(x, blockIdx.x, len, inner, k, largest, p, smem, reinterpret_cast<Cmp<T>*>(smem + p),
              values, indices);
}

template <class T>
__global__ void topk_global_kernel(const T* x, int64_t first_row, int64_t len, int64_t inner,
                                   int64_t k, bool largest, int64_t p, int64_t* idx_ws,
                                   Cmp<T>* key_ws, T* values, int64_t* indices) {
  sort_row<T>(x, first_row + blockIdx.x, len, inner, k, largest, p, idx_ws + blockIdx.x * p,
              key_ws + blockIdx.x * p, values, indices);
}

}  // namespace

void reduce_all(int kind, ConstTensorView x, TensorView out, const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(x.device.index));
  const int64_t n = x.numel();
  const int64_t blocks =
      std::clamp<int64_t>((n + kThreads * kPerThread - 1) / (kThreads * kPerThread), 1, kMaxBlocks);
  const cudaStream_t s = stream_of(ctx);
  ::frugal::detail::visit_compute_float(x.dtype, "reduce", [&]<class T>() {
    visit_kind<T>(kind, [&]<ReduceKind K>() {
      using Acc = typename Reducer<T, K>::Acc;
      Tensor partial =
          Tensor::empty({blocks * static_cast<int64_t>(sizeof(Acc))}, DType::kU8, x.device, ctx);
      auto* pp = static_cast<Acc*>(partial.data_ptr());
      reduce_partial_kernel<T, K>
          <<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(x.data_as<T>(), n, pp);
      FRUGAL_CUDA_CHECK_LAUNCH();
      visit_output<T, K>(out.dtype, [&]<class O>() {
        reduce_final_kernel<T, K, O><<<1, kThreads, 0, s>>>(pp, blocks, n, out.data_as<O>());
        FRUGAL_CUDA_CHECK_LAUNCH();
      });
    });
  });
}

void reduce_axis(int kind, ConstTensorView x, int64_t outer, int64_t len, int64_t inner,
                 TensorView out, const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(x.device.index));
  const cudaStream_t s = stream_of(ctx);
  ::frugal::detail::visit_compute_float(x.dtype, "reduce", [&]<class T>() {
    visit_kind<T>(kind, [&]<ReduceKind K>() {
      visit_output<T, K>(out.dtype, [&]<class O>() {
        if (inner == 1) {
          reduce_rows_kernel<T, K, O><<<static_cast<unsigned>(outer), kThreads, 0, s>>>(
              x.data_as<T>(), len, out.data_as<O>());
        } else {
          const LaunchShape ls = grid_stride_launch(outer * inner, kThreads);
          reduce_columns_kernel<T, K, O><<<ls.blocks, ls.threads, 0, s>>>(
              x.data_as<T>(), outer, len, inner, out.data_as<O>());
        }
        FRUGAL_CUDA_CHECK_LAUNCH();
      });
    });
  });
}

void argmax(ConstTensorView x, int64_t outer, int64_t len, int64_t inner, TensorView out,
            const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(x.device.index));
  const cudaStream_t s = stream_of(ctx);
  ::frugal::detail::visit_compute_float(x.dtype, "argmax", [&]<class T>() {
    if (inner == 1) {
      argmax_rows_kernel<T><<<static_cast<unsigned>(outer), kThreads, 0, s>>>(
          x.data_as<T>(), len, out.data_as<int64_t>());
    } else {
      const LaunchShape ls = grid_stride_launch(outer * inner, kThreads);
      argmax_columns_kernel<T><<<ls.blocks, ls.threads, 0, s>>>(x.data_as<T>(), outer, len, inner,
                                                                out.data_as<int64_t>());
    }
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
}

void topk(ConstTensorView x, int64_t outer, int64_t len, int64_t inner, int64_t k, bool largest,
          TensorView values, TensorView indices, const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(x.device.index));
  const cudaStream_t s = stream_of(ctx);
  const int64_t rows = outer * inner;
  int64_t p = 2;
  while (p < len) p <<= 1;
  ::frugal::detail::visit_compute_float(x.dtype, "topk", [&]<class T>() {
    using C = Cmp<T>;
    const int64_t slot = static_cast<int64_t>(sizeof(int64_t) + sizeof(C));
    if (p * slot <= kSharedBytes) {
      topk_shared_kernel<T>
          <<<static_cast<unsigned>(rows), kThreads, static_cast<size_t>(p * slot), s>>>(
              x.data_as<T>(), len, inner, k, largest, p, values.data_as<T>(),
              indices.data_as<int64_t>());
      FRUGAL_CUDA_CHECK_LAUNCH();
      return;
    }
    const int64_t batch = std::clamp<int64_t>(kMaxWorkspaceBytes / (p * slot), 1, rows);
    Tensor idx_ws = Tensor::empty({batch * p}, DType::kI64, x.device, ctx);
    Tensor key_ws = Tensor::empty({batch * p}, dtype_of_v<C>, x.device, ctx);
    for (int64_t r0 = 0; r0 < rows; r0 += batch) {
      const int64_t nb = std::min(batch, rows - r0);
      topk_global_kernel<T><<<static_cast<unsigned>(nb), kThreads, 0, s>>>(
          x.data_as<T>(), r0, len, inner, k, largest, p, idx_ws.data<int64_t>(), key_ws.data<C>(),
          values.data_as<T>(), indices.data_as<int64_t>());
      FRUGAL_CUDA_CHECK_LAUNCH();
    }
  });
}

}  // namespace frugal::cu
