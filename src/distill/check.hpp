#pragma once
// Argument checks shared by the distillation dispatch files. Internal, host only.
#include <cmath>

#include "core/copy.hpp"
#include "frugal/core/error.hpp"
#include "frugal/core/tensor.hpp"

namespace frugal::distill::detail {

/// Defined (unless empty), f32 or f64.
inline void require_real(const char* op, ConstTensorView v, const char* name) {
  FRUGAL_REQUIRE(v.data != nullptr || v.numel() == 0, op, name, " is undefined");
  FRUGAL_REQUIRE(v.dtype == DType::kF32 || v.dtype == DType::kF64, op, name, " has dtype ",
                 dtype_name(v.dtype), "; expected f32 or f64");
}

/// b has a's dtype and device.
inline void require_like(const char* op, ConstTensorView a, const char* an, ConstTensorView b,
                         const char* bn) {
  FRUGAL_REQUIRE(b.dtype == a.dtype, op, bn, " has dtype ", dtype_name(b.dtype), " but ", an,
                 " has dtype ", dtype_name(a.dtype));
  FRUGAL_REQUIRE(b.device == a.device, op, bn, " is on ", b.device.str(), " but ", an, " is on ",
                 a.device.str());
}

/// `v` itself when contiguous, otherwise a contiguous copy kept alive by `holder`.
inline ConstTensorView contiguous(ConstTensorView v, Tensor& holder, const ExecContext& ctx) {
  if (v.is_contiguous()) return v;
  holder = Tensor::empty(v.shape, v.dtype, v.device, ctx);
  ::frugal::detail::copy(v, holder.view(), ctx);
  return holder.cview();
}

/// Throws "[op] ... NaN or Inf" when a loss came out non-finite (a NaN or Inf input).
inline void require_finite_loss(const char* op, double loss) {
  FRUGAL_REQUIRE(std::isfinite(loss), op, "the loss is ", loss,
                 ": the student or teacher holds NaN or Inf");
}

}  // namespace frugal::distill::detail
