#pragma once
// Argument checks shared by the transformer ops' dispatch files (layer_norm, embedding,
// attention). Internal header.
#include "core/copy.hpp"
#include "frugal/core/error.hpp"
#include "frugal/core/tensor.hpp"

namespace frugal::nn::detail {

/// f32 or f64 (the dtypes the transformer ops compute in); Unsupported otherwise.
inline void check_real(const char* op, ConstTensorView v, const char* name) {
  if (v.dtype != DType::kF32 && v.dtype != DType::kF64) {
    ::frugal::detail::fail(ErrorCode::kUnsupported, op, name, " has dtype ", dtype_name(v.dtype),
                           "; expected f32 or f64");
  }
  FRUGAL_REQUIRE(v.data != nullptr || v.numel() == 0, op, name, " has null data");
}

/// `v` has `ref`'s dtype and device.
inline void check_like(const char* op, ConstTensorView v, const char* name, ConstTensorView ref,
                       const char* ref_name) {
  FRUGAL_REQUIRE(v.device == ref.device, op, name, " is on ", v.device.str(), " but ", ref_name,
                 " is on ", ref.device.str());
  FRUGAL_REQUIRE(v.dtype == ref.dtype, op, name, " has dtype ", dtype_name(v.dtype), " but ",
                 ref_name, " has dtype ", dtype_name(ref.dtype));
}

/// `v` itself when contiguous, otherwise a contiguous copy kept alive by `holder`.
inline ConstTensorView contiguous(ConstTensorView v, Tensor& holder, const ExecContext& ctx) {
  if (v.is_contiguous()) return v;
  holder = Tensor::empty(v.shape, v.dtype, v.device, ctx);
  ::frugal::detail::copy(v, holder.view(), ctx);
  return holder.cview();
}

/// A view of contiguous `v` with a new shape of the same element count.
inline ConstTensorView reshaped(ConstTensorView v, Shape shape) {
  return ConstTensorView(v.data, shape, contiguous_strides(shape), v.dtype, v.device);
}
inline TensorView reshaped(TensorView v, Shape shape) {
  TensorView r = v;
  r.shape = shape;
  r.strides = contiguous_strides(shape);
  return r;
}

}  // namespace frugal::nn::detail
