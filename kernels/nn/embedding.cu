// Embedding lookup on CUDA. The gather kernel also counts out-of-range ids (their rows are
// written as zeros) and the count comes back to the host, so a bad id is an error, not a wild
// read. The weight gradient is deterministic without atomics: the ids are radix-sorted stably
// (CUB; equal ids keep index order), then one block per distinct id sums its rows in order, in
// double, and adds the sum to the gradient row.
#include <cuda_runtime.h>

#include <bit>
#include <cstdint>
#include <cub/device/device_radix_sort.cuh>

#include "common/check.cuh"
#include "common/launch.cuh"
#include "cu_ops.hpp"

namespace frugal::cu {
namespace {

template <class T>
__global__ void gather_kernel(const int64_t* __restrict__ ids, const T* __restrict__ w,
                              T* __restrict__ out, int64_t n, int64_t v, int64_t d,
                              unsigned long long* __restrict__ bad) {
  const int64_t total = n * d;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / d, j = e % d;
    const int64_t id = ids[i];
    if (id >= 0 && id < v) {
      out[e] = w[id * d + j];
    } else {
      out[e] = T(0);
      if (j == 0) atomicAdd(bad, 1ull);  // an integer count: order does not matter
    }
  }
}

// keys[i] = ids[i] as 32 bits (v, one past the last row, for an out-of-range id), values[i] = i.
__global__ void make_keys_kernel(const int64_t* __restrict__ ids, int64_t n, int64_t v,
                                 int32_t* __restrict__ keys, int32_t* __restrict__ values) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t id = ids[i];
    keys[i] = (id >= 0 && id < v) ? int32_t(id) : int32_t(v);
    values[i] = int32_t(i);
  }
}

// Block b handles sorted position b when it starts a run of equal keys: for each column, sums
// the run's rows of grad_out in (stable, index) order and adds the sum to grad_weight's row.
template <class T>
__global__ void segment_sum_kernel(const int32_t* __restrict__ keys,
                                   const int32_t* __restrict__ pos, const T* __restrict__ g,
                                   T* __restrict__ gw, int64_t n, int64_t v, int64_t d) {
  const int64_t s = blockIdx.x;
  const int32_t key = keys[s];
  if ((s > 0 && keys[s - 1] == key) || key >= v) return;
  int64_t e = s + 1;
  while (e < n && keys[e] == key) ++e;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    double acc = 0;
    for (int64_t p = s; p < e; ++p) acc += double(g[int64_t(pos[p]) * d + j]);
    T* row = gw + int64_t(key) * d;
    row[j] = T(double(row[j]) + acc);
  }
}

template <class T>
int64_t forward_t(ConstTensorView ids, ConstTensorView w, TensorView out, const ExecContext& ctx) {
  const int64_t n = ids.shape[0], v = w.shape[0], d = w.shape[1];
  const cudaStream_t stream = stream_of(ctx);
  Tensor bad = Tensor::zeros({1}, DType::kI64, w.device, ctx);
  const LaunchShape ls = grid_stride_launch(n * d);
  gather_kernel<T><<<ls.blocks, ls.threads, 0, stream>>>(
      ids.data_as<int64_t>(), w.data_as<T>(), out.data_as<T>(), n, v, d,
      reinterpret_cast<unsigned long long*>(bad.data<int64_t>()));
  FRUGAL_CUDA_CHECK_LAUNCH();
  int64_t host_bad = 0;
  FRUGAL_CUDA_CHECK(cudaMemcpyAsync(&host_bad, bad.data<int64_t>(), sizeof(int64_t),
                                    cudaMemcpyDeviceToHost, stream));
  FRUGAL_CUDA_CHECK(cudaStreamSynchronize(stream));
  return host_bad;
}

template <class T>
void backward_t(ConstTensorView g, ConstTensorView ids, TensorView gw, const ExecContext& ctx) {
  const int64_t n = ids.shape[0], v = gw.shape[0], d = gw.shape[1];
  const cudaStream_t stream = stream_of(ctx);
  FRUGAL_REQUIRE(n < (int64_t{1} << 31) && v < (int64_t{1} << 31) - 1, "embedding_backward",
                 "CUDA supports fewer than 2^31 ids and embeddings (", n, " ids, ", v, " rows)");
  // keys_in, values_in, keys_out, values_out.
  Tensor buf = Tensor::empty({4, n}, DType::kI32, gw.device, ctx);
  int32_t* keys_in = buf.data<int32_t>();
  int32_t* vals_in = keys_in + n;
  int32_t* keys_out = keys_in + 2 * n;
  int32_t* vals_out = keys_in + 3 * n;
  const LaunchShape ls = grid_stride_launch(n);
  make_keys_kernel<<<ls.blocks, ls.threads, 0, stream>>>(ids.data_as<int64_t>(), n, v, keys_in,
                                                         vals_in);
  FRUGAL_CUDA_CHECK_LAUNCH();
  // Keys are in [0, v]: sort only the bits that can be set.
  const int end_bit = std::bit_width(static_cast<uint64_t>(v));
  std::size_t temp_bytes = 0;
  FRUGAL_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys_in, keys_out, vals_in,
                                                    vals_out, static_cast<int>(n), 0, end_bit,
                                                    stream));
  Tensor temp = Tensor::empty({static_cast<int64_t>(temp_bytes) + 1}, DType::kU8, gw.device, ctx);
  FRUGAL_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.data<uint8_t>(), temp_bytes, keys_in,
                                                    keys_out, vals_in, vals_out,
                                                    static_cast<int>(n), 0, end_bit, stream));
  const unsigned threads = d >= 256 ? 256 : 64;
  segment_sum_kernel<T><<<static_cast<unsigned>(n), threads, 0, stream>>>(
      keys_out, vals_out, g.data_as<T>(), gw.data_as<T>(), n, v, d);
  FRUGAL_CUDA_CHECK_LAUNCH();
}

}  // namespace

int64_t embedding_forward(ConstTensorView ids, ConstTensorView weight, TensorView out,
                          const ExecContext& ctx) {
  if (weight.dtype == DType::kF64) return forward_t<double>(ids, weight, out, ctx);
  return forward_t<float>(ids, weight, out, ctx);
}

void embedding_backward(ConstTensorView grad_out, ConstTensorView ids, TensorView grad_weight,
                        const ExecContext& ctx) {
  if (grad_weight.dtype == DType::kF64) return backward_t<double>(grad_out, ids, grad_weight, ctx);
  backward_t<float>(grad_out, ids, grad_weight, ctx);
}

}  // namespace frugal::cu
