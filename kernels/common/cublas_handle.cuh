#pragma once
// A cached cuBLAS handle per (device, stream), created lazily. Each handle is bound to its stream
// once, so handles never switch streams and never share a workspace between streams (which the
// cuBLAS docs warn can race). Calls are serialized by a lock held for the (asynchronous) enqueue,
// so host threads may share a stream safely.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "common/check.cuh"

namespace frugal::cu {

/// Owns one cublasHandle_t (RAII); the destructor never throws.
class CublasHandle {
 public:
  CublasHandle() { FRUGAL_CUBLAS_CHECK(cublasCreate(&handle_)); }
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  ~CublasHandle() {
    if (handle_ != nullptr) cublasDestroy(handle_);  // status ignored: destructors never throw
  }
  cublasHandle_t get() const { return handle_; }

 private:
  cublasHandle_t handle_ = nullptr;
};

/// A handle bound to one stream, with the lock that serializes its use.
class CublasLease {
 public:
  CublasLease(cublasHandle_t h, std::unique_lock<std::mutex> lock)
      : handle_(h), lock_(std::move(lock)) {}
  cublasHandle_t get() const { return handle_; }

 private:
  cublasHandle_t handle_;
  std::unique_lock<std::mutex> lock_;
};

/// The handle for (device, stream), created on first use with the default math mode (no TF32:
/// fp32 GEMMs stay fp32, so they match the CPU). The caller has already set `device` current.
inline CublasLease cublas_handle(int device, cudaStream_t stream) {
  static std::mutex mutex;
  // Never destroyed on purpose: at process exit static destructors may run after the CUDA runtime
  // has shut down, and destroying a handle then is undefined (PyTorch leaks its pool likewise).
  static auto* cache = new std::map<std::pair<int, cudaStream_t>, std::unique_ptr<CublasHandle>>();
  std::unique_lock<std::mutex> lock(mutex);
  auto& slot = (*cache)[{device, stream}];
  if (!slot) {
    auto h = std::make_unique<CublasHandle>();
    FRUGAL_CUBLAS_CHECK(cublasSetStream(h->get(), stream));
    FRUGAL_CUBLAS_CHECK(cublasSetMathMode(h->get(), CUBLAS_DEFAULT_MATH));
    slot = std::move(h);
  }
  return CublasLease(slot->get(), std::move(lock));
}

}  // namespace frugal::cu
