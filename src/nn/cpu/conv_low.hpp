#pragma once
// Internal: the low-precision 2-D convolution that nn::Conv2d runs under autocast on the CPU
// (src/nn/cpu/conv_dnnl.cpp, oneDNN, compiled only with FRUGAL_HAS_DNNL). Same contract as the
// fp32 backends in nn/spatial_internal.hpp (validated, contiguous, NCHW; weight (C_out, C_in /
// groups, kh, kw)), except for the dtypes: the operands x, w, dy are bf16, every result is f32
// (fp32 accumulation, no rounding of outputs).
#include "frugal/core/build_config.hpp"
#include "frugal/core/tensor.hpp"
#include "nn/spatial_internal.hpp"

namespace frugal::cpu {

#if FRUGAL_HAS_DNNL
/// y (f32, overwritten) = conv(x, w) + bias; x, w bf16, bias f32 (C_out) or null data.
void conv2d_forward_bf16(ConstTensorView x, ConstTensorView w, ConstTensorView bias, TensorView y,
                         const detail::Conv2dGeometry& g, const ExecContext& ctx);
/// dx (f32, overwritten) = input gradient of dy; dy, w bf16.
void conv2d_backward_data_bf16(ConstTensorView dy, ConstTensorView w, TensorView dx,
                               const detail::Conv2dGeometry& g, const ExecContext& ctx);
/// dw (f32) += weight gradient of dy for input x; dy, x bf16.
void conv2d_backward_filter_bf16(ConstTensorView dy, ConstTensorView x, TensorView dw,
                                 const detail::Conv2dGeometry& g, const ExecContext& ctx);
#endif

}  // namespace frugal::cpu
