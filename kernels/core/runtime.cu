// CUDA runtime entry points: devices, the stream-ordered pool allocator, copies between devices.
#include <mutex>

#include "common/check.cuh"
#include "cu_ops.hpp"

namespace frugal::cu {
namespace {

cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

/// The device's default mempool, configured once to keep freed memory cached (release threshold
/// at the maximum), so steady-state training steps do not return to the driver.
void configure_pool(int device) {
  static std::once_flag flags[64];
  std::call_once(flags[device % 64], [device] {
    cudaMemPool_t pool;
    FRUGAL_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
    uint64_t threshold = UINT64_MAX;
    FRUGAL_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
  });
}

}  // namespace

int device_count() {
  int n = 0;
  FRUGAL_CUDA_CHECK(cudaGetDeviceCount(&n));
  return n;
}

void* allocate(int64_t nbytes, int device, void* stream) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(device));
  configure_pool(device);
  void* p = nullptr;
  if (nbytes == 0) nbytes = 1;  // a distinct, freeable pointer for empty tensors
  const cudaError_t err = cudaMallocAsync(&p, static_cast<size_t>(nbytes), as_stream(stream));
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    ::frugal::detail::fail(ErrorCode::kOutOfMemory, "cu::allocate", "could not allocate ", nbytes,
                           " bytes on cuda:", device);
  }
  FRUGAL_CUDA_CHECK(err);
  return p;
}

void deallocate(void* ptr, int device, void* stream) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(device));
  FRUGAL_CUDA_CHECK(cudaFreeAsync(ptr, as_stream(stream)));
}

void memcpy_bytes(void* dst, Device dst_device, const void* src, Device src_device, int64_t nbytes,
                  const ExecContext& ctx) {
  const cudaStream_t s = as_stream(ctx.stream);
  if (dst_device.is_cuda() && src_device.is_cuda() && dst_device.index != src_device.index) {
    FRUGAL_CUDA_CHECK(cudaMemcpyPeerAsync(dst, dst_device.index, src, src_device.index,
                                          static_cast<size_t>(nbytes), s));
  } else {
    FRUGAL_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<size_t>(nbytes), cudaMemcpyDefault, s));
  }
  // A copy that ends in host memory must be complete when it returns: the caller reads it next.
  if (dst_device.is_cpu()) FRUGAL_CUDA_CHECK(cudaStreamSynchronize(s));
}

void synchronize(const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaStreamSynchronize(as_stream(ctx.stream)));
}

int64_t pool_high_water_bytes(int device) {
  cudaMemPool_t pool;
  FRUGAL_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
  uint64_t high = 0;
  FRUGAL_CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemHigh, &high));
  return static_cast<int64_t>(high);
}

}  // namespace frugal::cu
