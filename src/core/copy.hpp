#pragma once
// Element copy with conversion between any dtypes, strides and devices. Internal header.
#include "frugal/core/tensor.hpp"

namespace frugal::detail {
/// dst = convert(src); same shape. Crosses devices through contiguous staging buffers.
void copy(ConstTensorView src, TensorView dst, const ExecContext& ctx);
/// Every element of dst = value converted to dst's dtype.
void fill(TensorView dst, double value, const ExecContext& ctx);
}  // namespace frugal::detail

namespace frugal::cpu {
void copy(ConstTensorView src, TensorView dst, const ExecContext& ctx);
void fill(TensorView dst, double value, const ExecContext& ctx);
}  // namespace frugal::cpu
