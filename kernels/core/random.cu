// Philox random fills on one CUDA device: a grid-stride loop over blocks of 4 elements, each thread
// computing one Philox output with the same header functions as the CPU (frugal/core/philox.hpp),
// so uniforms are bit-identical to the CPU's and normals agree within a few ulps (CUDA's logf,
// cosf, sinf against the host libm). No fast-math intrinsics: the file is built without
// --use_fast_math, and uniforms round once through an explicit fma.
#include <type_traits>

#include "common/check.cuh"
#include "common/launch.cuh"
#include "core/convert.hpp"
#include "core/dtype_dispatch.hpp"
#include "cu_ops.hpp"
#include "frugal/core/philox.hpp"

namespace frugal::cu {
namespace {

__device__ inline int64_t strided_offset(int64_t i, const Shape& shape, const Strides& strides) {
  int64_t off = 0;
  for (int d = shape.rank() - 1; d >= 0; --d) {
    const int64_t n = shape[d];
    off += (i % n) * strides[d];
    i /= n;
  }
  return off;
}

/// Stores the up to 4 values of block b (elements 4b .. 4b+3 of the row-major order).
template <class T, class C>
__device__ inline void store_block(T* d, const C* v, int64_t b, int64_t n, const Shape& shape,
                                   const Strides& strides, bool contiguous) {
  const int64_t first = 4 * b;
  const int64_t count = n - first < 4 ? n - first : 4;
  for (int64_t l = 0; l < count; ++l) {
    const int64_t i = first + l;
    d[contiguous ? i : strided_offset(i, shape, strides)] = ::frugal::detail::convert<T>(v[l]);
  }
}

template <class T, class C>
__global__ void uniform_kernel(T* d, Shape shape, Strides strides, int64_t n, bool contiguous,
                               uint64_t seed, uint64_t offset, C lo, C span) {
  const int64_t blocks = (n + 3) / 4;
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < blocks;
       b += int64_t(gridDim.x) * blockDim.x) {
    C v[4];
    uniform4(Philox4x32::generate(philox_counter(static_cast<uint64_t>(b), offset), seed), lo, span,
             v);
    store_block<T, C>(d, v, b, n, shape, strides, contiguous);
  }
}

template <class T, class C>
__global__ void normal_kernel(T* d, Shape shape, Strides strides, int64_t n, bool contiguous,
                              uint64_t seed, uint64_t offset, C mean, C std) {
  const int64_t blocks = (n + 3) / 4;
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < blocks;
       b += int64_t(gridDim.x) * blockDim.x) {
    C v[4];
    normal4<C>(Philox4x32::generate(philox_counter(static_cast<uint64_t>(b), offset), seed), mean,
               std, v);
    store_block<T, C>(d, v, b, n, shape, strides, contiguous);
  }
}

}  // namespace

void fill_uniform(TensorView dst, float lo, float hi, const ExecContext& ctx) {
  const int64_t n = dst.numel();
  FRUGAL_CUDA_CHECK(cudaSetDevice(dst.device.index));
  ::frugal::detail::visit_compute_float(dst.dtype, "fill_uniform", [&]<class T>() {
    using C = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const C span = static_cast<C>(hi) - static_cast<C>(lo);
    const LaunchShape ls = grid_stride_launch((n + 3) / 4);
    uniform_kernel<T, C><<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(
        dst.data_as<T>(), dst.shape, dst.strides, n, dst.is_contiguous(), ctx.seed, ctx.offset,
        static_cast<C>(lo), span);
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
}

void fill_normal(TensorView dst, float mean, float std, const ExecContext& ctx) {
  const int64_t n = dst.numel();
  FRUGAL_CUDA_CHECK(cudaSetDevice(dst.device.index));
  ::frugal::detail::visit_compute_float(dst.dtype, "fill_normal", [&]<class T>() {
    using C = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const LaunchShape ls = grid_stride_launch((n + 3) / 4);
    normal_kernel<T, C><<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(
        dst.data_as<T>(), dst.shape, dst.strides, n, dst.is_contiguous(), ctx.seed, ctx.offset,
        static_cast<C>(mean), static_cast<C>(std));
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace frugal::cu
