#pragma once
// NCCL check macro (only in *_nccl.cu files, which are built when NCCL is found).
#include <nccl.h>

#include "common/check.cuh"

#define FRUGAL_NCCL_CHECK(expr)                                                            \
  do {                                                                                     \
    const ncclResult_t frugal_st_ = (expr);                                                \
    if (frugal_st_ != ncclSuccess) {                                                       \
      ::frugal::cu::detail::throw_cuda(::frugal::ErrorCode::kCommError, "nccl", #expr,     \
                                       __FILE__, __LINE__, ncclGetErrorString(frugal_st_)); \
    }                                                                                      \
  } while (0)
