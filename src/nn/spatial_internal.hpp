#pragma once
// Backend contract of the NCHW spatial layers: convolution (frugal/nn/conv.hpp), pooling
// (frugal/nn/pool.hpp) and batch norm (frugal/nn/batch_norm.hpp). Internal header, usable from
// host code and from .cu files.
//
// The dispatch files (src/nn/{conv,pool,batch_norm}.cpp) validate, make every input contiguous
// and allocate contiguous outputs; the backends (cpu:: below, cu:: through cu_ops.def) assume
// valid, contiguous f32 / f64 tensors of one dtype on one device.
#include <cstdint>

#include "frugal/core/tensor.hpp"

namespace frugal::detail {

/// Every extent of a 2-D convolution: input (n, c_in, h, w), weight (c_out, c_in / groups, kh,
/// kw), output (n, c_out, oh, ow).
struct Conv2dGeometry {
  int64_t n, c_in, h, w;
  int64_t c_out, kh, kw;
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  int64_t groups;
  int64_t oh, ow;

  int64_t c_in_per_group() const { return c_in / groups; }
  int64_t c_out_per_group() const { return c_out / groups; }
  /// Rows of one group's im2col matrix: c_in / groups * kh * kw.
  int64_t col_rows() const { return c_in / groups * kh * kw; }
};

/// Every extent of a 2-D pooling window: input (n, c, h, w), output (n, c, oh, ow).
struct Pool2dGeometry {
  int64_t n, c, h, w;
  int64_t kh, kw, stride_h, stride_w, pad_h, pad_w;
  int64_t oh, ow;
};

}  // namespace frugal::detail

namespace frugal::cpu {

// Convolution (src/nn/cpu/conv.cpp).
/// y = conv(x, w) (+ bias when bias.data != nullptr); y is overwritten.
void conv2d_forward(ConstTensorView x, ConstTensorView w, ConstTensorView bias, TensorView y,
                    const detail::Conv2dGeometry& g, const ExecContext& ctx);
/// dx = conv2d input gradient of dy; dx is overwritten.
void conv2d_backward_data(ConstTensorView dy, ConstTensorView w, TensorView dx,
                          const detail::Conv2dGeometry& g, const ExecContext& ctx);
/// dw += weight gradient of dy for input x.
void conv2d_backward_filter(ConstTensorView dy, ConstTensorView x, TensorView dw,
                            const detail::Conv2dGeometry& g, const ExecContext& ctx);
/// db (c) += dy (n, c, hw) summed over n and hw.
void conv2d_backward_bias(ConstTensorView dy, TensorView db, int64_t n, int64_t c, int64_t hw,
                          const ExecContext& ctx);

// Pooling (src/nn/cpu/pool.cpp). Indices are i64 flat positions h * w + w in the input plane.
void max_pool2d_forward(ConstTensorView x, TensorView y, TensorView indices,
                        const detail::Pool2dGeometry& g, const ExecContext& ctx);
/// dx (overwritten) = dy routed to the argmax of each window.
void max_pool2d_backward(ConstTensorView dy, ConstTensorView indices, TensorView dx,
                         const detail::Pool2dGeometry& g, const ExecContext& ctx);
void avg_pool2d_forward(ConstTensorView x, TensorView y, const detail::Pool2dGeometry& g,
                        bool count_include_pad, const ExecContext& ctx);
/// dx (overwritten) = dy spread evenly over each window.
void avg_pool2d_backward(ConstTensorView dy, TensorView dx, const detail::Pool2dGeometry& g,
                         bool count_include_pad, const ExecContext& ctx);

// Batch norm (src/nn/cpu/batch_norm.cpp); x seen as (n, c, hw). weight / bias may have null
// data (gamma = 1, beta = 0). Statistics accumulate in double in a fixed order.
/// Batch statistics: mean (c) and invstd (c) = 1 / sqrt(biased var + eps), written; running
/// statistics (when their data is not null) updated with `momentum` and the unbiased variance;
/// y = (x - mean) * invstd * gamma + beta.
void batch_norm_train(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                      TensorView running_mean, TensorView running_var, TensorView mean,
                      TensorView invstd, TensorView y, int64_t n, int64_t c, int64_t hw,
                      double momentum, double eps, const ExecContext& ctx);
/// Eval mode: mean = running_mean, invstd = 1 / sqrt(running_var + eps) (both written, (c)),
/// y = (x - mean) * invstd * gamma + beta.
void batch_norm_eval(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                     ConstTensorView running_mean, ConstTensorView running_var, TensorView mean,
                     TensorView invstd, TensorView y, int64_t n, int64_t c, int64_t hw, double eps,
                     const ExecContext& ctx);
/// Gradients for y = (x - mean) * invstd * gamma + beta. With `batch_stats` mean / invstd are
/// the batch statistics of x and dx includes their dependence on x (the closed form); otherwise
/// they are constants (eval mode). dx is overwritten; grad_weight / grad_bias (null data to
/// skip) are accumulated (+=).
void batch_norm_backward(ConstTensorView dy, ConstTensorView x, ConstTensorView weight,
                         ConstTensorView mean, ConstTensorView invstd, bool batch_stats,
                         TensorView dx, TensorView grad_weight, TensorView grad_bias, int64_t n,
                         int64_t c, int64_t hw, const ExecContext& ctx);

}  // namespace frugal::cpu
