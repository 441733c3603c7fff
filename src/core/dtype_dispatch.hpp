#pragma once
// Calls a templated functor with the C++ element type of a runtime dtype. Internal header, usable
// from host code and from .cu files. Packed dtypes (i4/u4) are not element types: callers handle them.
#include <cstdint>

#include "frugal/core/dtype.hpp"
#include "frugal/core/error.hpp"

namespace frugal::detail {

/// f.template operator()<T>() for the element type T of `t`; throws Unsupported for packed types.
template <class F>
decltype(auto) visit_dtype(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::kF32: return f.template operator()<float>();
    case DType::kF64: return f.template operator()<double>();
    case DType::kF16: return f.template operator()<Half>();
    case DType::kBF16: return f.template operator()<BFloat16>();
    case DType::kF8E4M3: return f.template operator()<Float8E4M3>();
    case DType::kF8E5M2: return f.template operator()<Float8E5M2>();
    case DType::kI8: return f.template operator()<int8_t>();
    case DType::kU8: return f.template operator()<uint8_t>();
    case DType::kI32: return f.template operator()<int32_t>();
    case DType::kI64: return f.template operator()<int64_t>();
    case DType::kBool: return f.template operator()<bool>();
    case DType::kI4:
    case DType::kU4: break;
  }
  fail(ErrorCode::kUnsupported, op, "packed dtype ", dtype_name(t), " has no element type here");
}

/// Same, for the floating dtypes f32, f64, f16, bf16 only (the compute types of most ops).
template <class F>
decltype(auto) visit_compute_float(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::kF32: return f.template operator()<float>();
    case DType::kF64: return f.template operator()<double>();
    case DType::kF16: return f.template operator()<Half>();
    case DType::kBF16: return f.template operator()<BFloat16>();
    default: break;
  }
  fail(ErrorCode::kUnsupported, op, "dtype ", dtype_name(t), " is not supported (f32, f64, f16, bf16)");
}

}  // namespace frugal::detail
