#pragma once
// cuDNN check macro (only in *_cudnn.cu files, which are built when cuDNN is found).
#include <cudnn.h>

#include "common/check.cuh"

#define FRUGAL_CUDNN_CHECK(expr)                                                           \
  do {                                                                                     \
    const cudnnStatus_t frugal_st_ = (expr);                                               \
    if (frugal_st_ != CUDNN_STATUS_SUCCESS) {                                              \
      ::frugal::cu::detail::throw_cuda(::frugal::ErrorCode::kCudaError, "cudnn", #expr,    \
                                       __FILE__, __LINE__, cudnnGetErrorString(frugal_st_)); \
    }                                                                                      \
  } while (0)
