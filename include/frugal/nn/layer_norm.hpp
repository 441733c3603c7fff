#pragma once
/// Layer normalization over the last dimension (Ba, Kiros, Hinton 2016), as in GPT-2 and llm.c's
/// layernorm_forward / layernorm_backward:
///   y = (x - mean) * rstd * weight + bias,  mean and variance (biased, 1/C) over the last axis,
///   rstd = 1 / sqrt(var + eps).
/// Dtypes f32 and f64 on CPU and CUDA. CPU statistics accumulate in double; CUDA accumulates
/// row statistics in the element type and parameter gradients in double over fixed row chunks.
/// Both backends are deterministic; the CPU result does not depend on the thread count.
#include <cstdint>

#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"
#include "frugal/nn/module.hpp"

namespace frugal::nn {

/// What layer_norm_forward returns: the output and the per-row statistics backward needs.
struct LayerNormForward {
  Tensor out;   ///< x's shape and dtype
  Tensor mean;  ///< x's shape without the last axis, x's dtype
  Tensor rstd;  ///< x's shape without the last axis, x's dtype: 1 / sqrt(var + eps)
};

/// Normalizes x (..., C) over its last axis. weight and bias are (C) of x's dtype and device, or
/// default-constructed views ({}) for no affine transform (then y = xhat). eps > 0.
LayerNormForward layer_norm_forward(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                                    double eps = 1e-5, const ExecContext& ctx = {});

/// Returns dL/dx (x's shape) for grad_out (x's shape), given the forward's x, weight ({} if none)
/// and its mean / rstd. Accumulates (+=) dL/dweight into grad_weight and dL/dbias into grad_bias
/// when they are given ((C), contiguous); pass {} to skip either.
Tensor layer_norm_backward(ConstTensorView grad_out, ConstTensorView x, ConstTensorView weight,
                           ConstTensorView mean, ConstTensorView rstd, TensorView grad_weight = {},
                           TensorView grad_bias = {}, const ExecContext& ctx = {});

/// LayerNorm(C) over the last axis of its input. Parameters "weight" (C, ones) and "bias" (C,
/// zeros) when affine. forward keeps x, mean and rstd for the next backward (forward and backward
/// pair up: backward uses the last forward).
class LayerNorm : public Module {
 public:
  /// normalized_size = C; dtype of the parameters (f32 or f64), created on the CPU.
  explicit LayerNorm(int64_t normalized_size, double eps = 1e-5, bool affine = true,
                     DType dtype = DType::kF32);

  /// x (..., C) -> (..., C).
  Tensor forward(const Tensor& input) override;
  /// grad_out (..., C) -> grad_input; accumulates the weight and bias gradients.
  Tensor backward(const Tensor& grad_output) override;
  std::string type_name() const override { return "LayerNorm"; }

  int64_t normalized_size() const { return size_; }
  double eps() const { return eps_; }
  bool affine() const { return weight_ != nullptr; }
  /// The weight / bias parameters (null when not affine).
  Parameter* weight() { return weight_; }
  Parameter* bias() { return bias_; }

 private:
  int64_t size_;
  double eps_;
  Parameter* weight_ = nullptr;
  Parameter* bias_ = nullptr;
  Tensor x_, mean_, rstd_;  // saved by forward
};

}  // namespace frugal::nn
