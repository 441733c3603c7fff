#pragma once
// Check macros for every CUDA-side library call: each failure throws frugal::Error(kCudaError or
// kCommError) naming the call, file:line and the library's own error string.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>
#include <cusparse.h>

#include "frugal/core/error.hpp"

namespace frugal::cu::detail {

[[noreturn]] inline void throw_cuda(ErrorCode code, const char* lib, const char* expr,
                                    const char* file, int line, const char* what) {
  throw Error(code, ::frugal::detail::concat("[", lib, "] ", expr, " failed at ", file, ":", line,
                                             ": ", what));
}

inline const char* cusolver_status_string(cusolverStatus_t s) {
  switch (s) {
    case CUSOLVER_STATUS_SUCCESS: return "CUSOLVER_STATUS_SUCCESS";
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "CUSOLVER_STATUS_NOT_INITIALIZED";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "CUSOLVER_STATUS_ALLOC_FAILED";
    case CUSOLVER_STATUS_INVALID_VALUE: return "CUSOLVER_STATUS_INVALID_VALUE";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "CUSOLVER_STATUS_ARCH_MISMATCH";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "CUSOLVER_STATUS_EXECUTION_FAILED";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "CUSOLVER_STATUS_INTERNAL_ERROR";
    case CUSOLVER_STATUS_NOT_SUPPORTED: return "CUSOLVER_STATUS_NOT_SUPPORTED";
    default: return "cusolver error";
  }
}

}  // namespace frugal::cu::detail

#define FRUGAL_CUDA_CHECK(expr)                                                            \
  do {                                                                                     \
    const cudaError_t frugal_err_ = (expr);                                                \
    if (frugal_err_ != cudaSuccess) {                                                      \
      ::frugal::cu::detail::throw_cuda(::frugal::ErrorCode::kCudaError, "cuda", #expr,     \
                                       __FILE__, __LINE__, cudaGetErrorString(frugal_err_)); \
    }                                                                                      \
  } while (0)

#define FRUGAL_CUBLAS_CHECK(expr)                                                          \
  do {                                                                                     \
    const cublasStatus_t frugal_st_ = (expr);                                              \
    if (frugal_st_ != CUBLAS_STATUS_SUCCESS) {                                             \
      ::frugal::cu::detail::throw_cuda(::frugal::ErrorCode::kCudaError, "cublas", #expr,   \
                                       __FILE__, __LINE__, cublasGetStatusString(frugal_st_)); \
    }                                                                                      \
  } while (0)

#define FRUGAL_CUSOLVER_CHECK(expr)                                                        \
  do {                                                                                     \
    const cusolverStatus_t frugal_st_ = (expr);                                            \
    if (frugal_st_ != CUSOLVER_STATUS_SUCCESS) {                                           \
      ::frugal::cu::detail::throw_cuda(                                                    \
          ::frugal::ErrorCode::kCudaError, "cusolver", #expr, __FILE__, __LINE__,          \
          ::frugal::cu::detail::cusolver_status_string(frugal_st_));                       \
    }                                                                                      \
  } while (0)

#define FRUGAL_CUSPARSE_CHECK(expr)                                                        \
  do {                                                                                     \
    const cusparseStatus_t frugal_st_ = (expr);                                            \
    if (frugal_st_ != CUSPARSE_STATUS_SUCCESS) {                                           \
      ::frugal::cu::detail::throw_cuda(::frugal::ErrorCode::kCudaError, "cusparse", #expr, \
                                       __FILE__, __LINE__, cusparseGetErrorString(frugal_st_)); \
    }                                                                                      \
  } while (0)

/// Checks the last kernel launch.
#define FRUGAL_CUDA_CHECK_LAUNCH() FRUGAL_CUDA_CHECK(cudaGetLastError())
