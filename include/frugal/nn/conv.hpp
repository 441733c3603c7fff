#pragma once
/// 2-D convolution over NCHW tensors (PyTorch layout and semantics: cross-correlation, zero
/// padding, dilation, groups), as functional ops and as the Conv2d layer.
///
/// CPU: im2col + GEMM per sample and group (Eigen), oneTBB over the batch; f32 and f64.
/// CUDA: cuDNN (legacy convolution API, FMA math: no TF32; deterministic algorithms wherever
/// cuDNN offers one for the geometry); f32 and f64.
/// CPU results do not depend on the thread count.
#include <cstdint>

#include "frugal/amp/autocast.hpp"
#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"
#include "frugal/nn/module.hpp"

namespace frugal::nn {

/// A (height, width) pair of extents; an integer converts to a square pair.
struct Size2 {
  int64_t h = 0;
  int64_t w = 0;
  constexpr Size2() = default;
  constexpr Size2(int64_t v) : h(v), w(v) {}  // NOLINT: implicit by design (kernel 3 = 3x3)
  constexpr Size2(int64_t h_, int64_t w_) : h(h_), w(w_) {}
  friend constexpr bool operator==(const Size2&, const Size2&) = default;
};

/// Geometry of a convolution: stride, zero padding on each side, dilation, and the number of
/// groups (groups = in_channels = out_channels is a depthwise convolution).
struct Conv2dParams {
  Size2 stride{1};
  Size2 padding{0};
  Size2 dilation{1};
  int64_t groups = 1;
};

/// Conv2d layer options: Conv2dParams plus whether the layer has a bias.
struct Conv2dOptions {
  Size2 stride{1};
  Size2 padding{0};
  Size2 dilation{1};
  int64_t groups = 1;
  bool bias = true;
  Conv2dParams params() const { return {stride, padding, dilation, groups}; }
};

/// Output shape (N, C_out, H_out, W_out) of conv2d for input (N, C_in, H, W) and weight
/// (C_out, C_in / groups, kh, kw): H_out = (H + 2 pad_h - dil_h (kh - 1) - 1) / stride_h + 1.
/// Throws InvalidArgument ("[conv2d] ...") for inconsistent shapes or parameters.
Shape conv2d_output_shape(const Shape& input, const Shape& weight, const Conv2dParams& p);

/// y (N, C_out, H_out, W_out) = conv(x (N, C_in, H, W), weight (C_out, C_in / groups, kh, kw))
/// + bias (C_out). `bias` may be an empty view ({}: data == nullptr) for no bias. One dtype
/// (f32 or f64) and one device for every tensor; inputs may be strided.
Tensor conv2d(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
              const Conv2dParams& p, const ExecContext& ctx = {});

/// dL/dx (`input_shape`) of conv2d from grad_out (N, C_out, H_out, W_out) and the weight.
Tensor conv2d_backward_input(ConstTensorView grad_out, ConstTensorView weight,
                             const Shape& input_shape, const Conv2dParams& p,
                             const ExecContext& ctx = {});

/// Accumulates dL/dweight into grad_weight (C_out, C_in / groups, kh, kw, contiguous):
/// grad_weight += sum over the batch of grad_out (x) x.
void conv2d_backward_weight(ConstTensorView grad_out, ConstTensorView x, TensorView grad_weight,
                            const Conv2dParams& p, const ExecContext& ctx = {});

/// Accumulates dL/dbias into grad_bias (C_out, contiguous): grad_bias += grad_out summed over
/// N, H_out and W_out.
void conv2d_backward_bias(ConstTensorView grad_out, TensorView grad_bias,
                          const ExecContext& ctx = {});

/// 2-D convolution layer, PyTorch's nn.Conv2d: weight (out, in / groups, kh, kw) and optional
/// bias (out), both initialised U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = in / groups * kh
/// * kw (kaiming_uniform(a = sqrt(5))), drawn with Philox from `seed` (weight from offset 0, bias
/// after it). forward keeps its input for backward: each backward pairs with the last forward.
/// Inside an amp::AmpContext whose policy runs kConv low (f32 layers), the input, weight (a cached
/// copy refreshed after each optimizer step) and output gradient enter the convolutions rounded
/// to the low dtype, with fp32 accumulation and fp32 outputs and gradients; the saved input is
/// kept in the low dtype. There is no bf16 convolution kernel: the fp32 kernels run on the rounded
/// values, so this saves activation memory, not time.
class Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, Size2 kernel, const Conv2dOptions& opt = {},
         uint64_t seed = 0, DType dtype = DType::kF32);

  /// x (N, in, H, W) -> (N, out, H_out, W_out).
  Tensor forward(const Tensor& x) override;
  /// grad_out (N, out, H_out, W_out) -> dL/dx; accumulates weight (and bias) gradients.
  Tensor backward(const Tensor& grad_out) override;
  std::string type_name() const override { return "Conv2d"; }

  Parameter& weight() { return *weight_; }
  /// nullptr without a bias.
  Parameter* bias() { return bias_; }
  const Conv2dParams& params() const { return params_; }
  int64_t in_channels() const { return in_channels_; }
  int64_t out_channels() const { return out_channels_; }
  Size2 kernel_size() const { return kernel_; }

 private:
  int64_t in_channels_;
  int64_t out_channels_;
  Size2 kernel_;
  Conv2dParams params_;
  Parameter* weight_ = nullptr;
  Parameter* bias_ = nullptr;
  Tensor input_;             // last forward's input (N, in, H, W), in low_ under autocast
  DType low_ = DType::kF32;  // operand dtype of the last forward (kF32: no autocast)
  amp::WeightCopy w_copy_;   // autocast: cached low-precision weight
  Tensor w_used_;            // autocast: the weight operand of the last forward
};

}  // namespace frugal::nn
