#pragma once
// frugal DType -> cudaDataType_t, for the cuBLAS / cuBLASLt calls that take a data type.
#include <library_types.h>

#include "frugal/core/dtype.hpp"

namespace frugal::cu {

/// The CUDA library data type of t: f16, bf16, f64, fp8 (e4m3, e5m2), i8, i32; f32 otherwise
/// (callers pass only dtypes their public entry has validated).
inline cudaDataType_t cuda_data_type(DType t) {
  switch (t) {
    case DType::kF16:
      return CUDA_R_16F;
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kF64:
      return CUDA_R_64F;
    case DType::kF8E4M3:
      return CUDA_R_8F_E4M3;
    case DType::kF8E5M2:
      return CUDA_R_8F_E5M2;
    case DType::kI8:
      return CUDA_R_8I;
    case DType::kI32:
      return CUDA_R_32I;
    default:
      return CUDA_R_32F;
  }
}

}  // namespace frugal::cu
