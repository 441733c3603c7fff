#pragma once
/// 2-D pooling over NCHW tensors (PyTorch semantics, floor mode, no dilation): max pooling with
/// argmax indices, average pooling, global average pooling; functional ops and layers.
/// f32 and f64 on CPU (oneTBB over planes) and CUDA (own kernels). Padding must be at most half
/// the kernel (as PyTorch), so every window holds at least one input element. Backward passes are
/// gathers in a fixed order: deterministic on both devices.
#include <cstdint>

#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"
#include "frugal/nn/conv.hpp"
#include "frugal/nn/module.hpp"

namespace frugal::nn {

/// A pooling window: kernel, stride (0 = the kernel, PyTorch's default) and zero padding.
struct Pool2dParams {
  Size2 kernel{1};
  Size2 stride{0};
  Size2 padding{0};
};

/// Output shape (N, C, H_out, W_out), H_out = (H + 2 pad_h - kh) / stride_h + 1.
/// Throws InvalidArgument ("[pool2d] ...") for bad shapes or parameters.
Shape pool2d_output_shape(const Shape& input, const Pool2dParams& p);

/// Result of max_pool2d: the maxima and, for backward, where each came from.
struct MaxPool2dResult {
  Tensor output;   ///< (N, C, H_out, W_out), x's dtype
  Tensor indices;  ///< (N, C, H_out, W_out) i64: flat index h * W + w of the max in its plane
};

/// Max over each window. Ties take the first position in row-major window order; a NaN counts as
/// larger than every number (propagates, as torch). Padding never wins.
MaxPool2dResult max_pool2d(ConstTensorView x, const Pool2dParams& p, const ExecContext& ctx = {});

/// dL/dx (input_shape) of max_pool2d: each grad_out element goes to its argmax (summed where
/// windows overlap on one argmax).
Tensor max_pool2d_backward(ConstTensorView grad_out, ConstTensorView indices,
                           const Shape& input_shape, const Pool2dParams& p,
                           const ExecContext& ctx = {});

/// Mean over each window. The divisor is kh * kw with count_include_pad, otherwise the number of
/// in-bounds elements of the window.
Tensor avg_pool2d(ConstTensorView x, const Pool2dParams& p, bool count_include_pad = true,
                  const ExecContext& ctx = {});

/// dL/dx (input_shape) of avg_pool2d.
Tensor avg_pool2d_backward(ConstTensorView grad_out, const Shape& input_shape,
                           const Pool2dParams& p, bool count_include_pad = true,
                           const ExecContext& ctx = {});

/// (N, C, H, W) -> (N, C): the mean of each plane.
Tensor global_avg_pool2d(ConstTensorView x, const ExecContext& ctx = {});

/// dL/dx (input_shape, (N, C, H, W)) of global_avg_pool2d: grad_out (N, C) / (H W) everywhere.
Tensor global_avg_pool2d_backward(ConstTensorView grad_out, const Shape& input_shape,
                                  const ExecContext& ctx = {});

/// Max pooling layer (nn.MaxPool2d). Keeps the argmax indices of the last forward for backward.
class MaxPool2d : public Module {
 public:
  /// stride 0 means stride = kernel.
  explicit MaxPool2d(Size2 kernel, Size2 stride = 0, Size2 padding = 0);
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& grad_out) override;
  std::string type_name() const override { return "MaxPool2d"; }
  const Pool2dParams& params() const { return params_; }

 private:
  Pool2dParams params_;
  Tensor indices_;
  Shape input_shape_;
};

/// Average pooling layer (nn.AvgPool2d). Keeps the input shape of the last forward.
class AvgPool2d : public Module {
 public:
  /// stride 0 means stride = kernel.
  explicit AvgPool2d(Size2 kernel, Size2 stride = 0, Size2 padding = 0,
                     bool count_include_pad = true);
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& grad_out) override;
  std::string type_name() const override { return "AvgPool2d"; }
  const Pool2dParams& params() const { return params_; }

 private:
  Pool2dParams params_;
  bool count_include_pad_;
  Shape input_shape_;
  bool has_input_ = false;
};

/// Global average pooling (N, C, H, W) -> (N, C), as nn.AdaptiveAvgPool2d(1) then flatten.
class GlobalAvgPool2d : public Module {
 public:
  GlobalAvgPool2d() = default;
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& grad_out) override;
  std::string type_name() const override { return "GlobalAvgPool2d"; }

 private:
  Shape input_shape_;
  bool has_input_ = false;
};

}  // namespace frugal::nn
