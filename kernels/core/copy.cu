// Strided copy with dtype conversion and fill, on one CUDA device.
#include "common/check.cuh"
#include "common/launch.cuh"
#include "core/convert.hpp"
#include "core/dtype_dispatch.hpp"
#include "cu_ops.hpp"

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

template <class S, class D>
__global__ void copy_kernel(const S* src, Shape ss, Strides sst, D* dst, Strides dst_strides,
                            int64_t n, bool contiguous) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    if (contiguous) {
      dst[i] = ::frugal::detail::convert<D>(src[i]);
    } else {
      dst[strided_offset(i, ss, dst_strides)] =
          ::frugal::detail::convert<D>(src[strided_offset(i, ss, sst)]);
    }
  }
}

template <class D>
__global__ void fill_kernel(D* dst, Shape shape, Strides strides, int64_t n, D value,
                            bool contiguous) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    dst[contiguous ? i : strided_offset(i, shape, strides)] = value;
  }
}

}  // namespace

void copy(ConstTensorView src, TensorView dst, const ExecContext& ctx) {
  FRUGAL_REQUIRE(!is_packed(src.dtype) && !is_packed(dst.dtype), "copy",
                 "packed dtypes are converted on the CPU; move the tensor to the CPU first");
  const int64_t n = src.numel();
  const bool contiguous = src.is_contiguous() && dst.is_contiguous();
  FRUGAL_CUDA_CHECK(cudaSetDevice(dst.device.index));
  ::frugal::detail::visit_dtype(src.dtype, "copy", [&]<class S>() {
    ::frugal::detail::visit_dtype(dst.dtype, "copy", [&]<class D>() {
      const LaunchShape ls = grid_stride_launch(n);
      copy_kernel<S, D><<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(
          src.data_as<S>(), src.shape, src.strides, dst.data_as<D>(), dst.strides, n, contiguous);
      FRUGAL_CUDA_CHECK_LAUNCH();
    });
  });
}

void fill(TensorView dst, double value, const ExecContext& ctx) {
  FRUGAL_REQUIRE(!is_packed(dst.dtype), "fill", "packed dtypes are filled on the CPU");
  const int64_t n = dst.numel();
  FRUGAL_CUDA_CHECK(cudaSetDevice(dst.device.index));
  ::frugal::detail::visit_dtype(dst.dtype, "fill", [&]<class D>() {
    const LaunchShape ls = grid_stride_launch(n);
    fill_kernel<D><<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(
        dst.data_as<D>(), dst.shape, dst.strides, n, ::frugal::detail::from_double<D>(value),
        dst.is_contiguous());
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace frugal::cu
