#pragma once
/// Quantization-aware training: gradients of fake quantization (frugal/quant/quantize.hpp,
/// fake_quantize) with respect to the input and to the scale.
///
/// With u = x / scale + zero_point (unrounded, in float; double for f64) and the forward
///   x' = (clamp(rint(x / scale) + zero_point, qmin, qmax) - zero_point) * scale,
/// - straight-through estimator (Bengio et al. 2013; Jacob et al. 2018): rint counts as the
///   identity, so dx'/dx = 1 where qmin <= u <= qmax and 0 where the clamp is active (u outside,
///   or x NaN). This is the mask of PyTorch's learnable fake quantize; torch's plain
///   fake_quantize_per_tensor_affine tests the rounded value instead, which differs only for u in
///   [qmin - 0.5, qmin) and (qmax, qmax + 0.5].
/// - learned step size (Esser et al. 2020, "Learned Step Size Quantization", eq. 3):
///   dx'/ds = qmin - zero_point          where u < qmin
///            qmax - zero_point          where u > qmax
///            (rint(x / s) - x / s)      otherwise
///   summed over the elements that share a scale, times dL/dx' and the gradient scale g
///   (default g = 1 / sqrt(n * qmax), n = elements per scale: the whole tensor per tensor, one
///   channel per channel, one group per group).
/// Rounding is always half to even here (the backward of a stochastic forward uses the same
/// formulas: the STE ignores the rounding). Sums run in double in a fixed order (frugal::sum), so
/// the CPU result does not depend on the thread count.
#include "frugal/core/tensor.hpp"
#include "frugal/quant/qparams.hpp"

namespace frugal::quant {

/// dL/dx by the straight-through estimator: grad_out where qmin <= x / scale + zero_point <=
/// qmax, else 0. grad_out and x have one shape, dtype (f32, f64, f16, bf16) and device; the
/// result has x's dtype. Validation as quantize (frugal/quant/quantize.hpp).
Tensor fake_quantize_backward_ste(ConstTensorView grad_out, ConstTensorView x,
                                  const QuantSpec& spec, const QParams& qparams,
                                  const ExecContext& ctx = {});

/// Gradients of learned-step-size fake quantization.
struct LsqGrads {
  Tensor grad_x;      ///< dL/dx (STE), x's dtype and shape
  Tensor grad_scale;  ///< dL/dscale times the gradient scale g: f32, qparams.scale's shape
};

/// LSQ backward (Esser et al. 2020): the STE input gradient and the scale gradient, per tensor,
/// per channel or per group. `grad_scale_factor` is g; 0 (the default) means the paper's
/// 1 / sqrt(n * qmax) with n the number of elements per scale. Needs qmax > 0.
LsqGrads fake_quantize_backward_lsq(ConstTensorView grad_out, ConstTensorView x,
                                    const QuantSpec& spec, const QParams& qparams,
                                    double grad_scale_factor = 0.0, const ExecContext& ctx = {});

}  // namespace frugal::quant
