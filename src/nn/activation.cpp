// ReLU / GELU: validation and device dispatch, and the layers (include/frugal/nn/activation.hpp).
#include "frugal/nn/activation.hpp"

#include "cu_ops.hpp"
#include "frugal/amp/autocast.hpp"
#include "nn/basic_ops.hpp"

namespace frugal::nn {
namespace {

using detail::ActKind;

ActKind kind_of(GeluApprox a) {
  return a == GeluApprox::kTanh ? ActKind::kGeluTanh : ActKind::kGeluErf;
}

Tensor act_forward(const char* op, ActKind kind, ConstTensorView x, const ExecContext& ctx) {
  detail::require_float(op, x, "x");
  Tensor y = Tensor::empty(x.shape, x.dtype, x.device, ctx);
  if (x.numel() == 0) return y;
  Tensor hx;
  const ConstTensorView cx = detail::contiguous_view(x, hx, ctx);
  switch (x.device.kind) {
    case DeviceKind::kCpu:
      cpu::activation_forward(static_cast<int>(kind), cx, y, ctx);
      break;
    case DeviceKind::kCuda:
      cu::activation_forward(static_cast<int>(kind), cx, y, ctx);
      break;
  }
  return y;
}

Tensor act_backward(const char* op, ActKind kind, ConstTensorView grad, ConstTensorView x,
                    const ExecContext& ctx) {
  detail::require_float(op, grad, "grad_out");
  detail::require_float(op, x, "x");
  detail::require_same(op, grad, "grad_out", x, "x");
  Tensor out = Tensor::empty(x.shape, x.dtype, x.device, ctx);
  if (x.numel() == 0) return out;
  Tensor hg, hx;
  const ConstTensorView cg = detail::contiguous_view(grad, hg, ctx);
  const ConstTensorView cx = detail::contiguous_view(x, hx, ctx);
  switch (x.device.kind) {
    case DeviceKind::kCpu:
      cpu::activation_backward(static_cast<int>(kind), cg, cx, out, ctx);
      break;
    case DeviceKind::kCuda:
      cu::activation_backward(static_cast<int>(kind), cg, cx, out, ctx);
      break;
  }
  return out;
}

/// What an activation layer keeps for backward: its f32 input in the autocast's saved-activation
/// dtype (bf16 / f16) while an AmpContext asks for it, else the input itself.
Tensor saved_input(const Tensor& input, const ExecContext& ctx) {
  const DType low = amp::saved_activation_dtype();
  if (low == DType::kF32 || input.dtype() != DType::kF32) return input;
  return amp::to_low(input, low, ctx);
}

/// grad * act'(saved) for an input saved in the low dtype and an f32 gradient: on the host
/// straight from the low-precision copy, elsewhere through an f32 copy of it.
Tensor low_backward(const char* op, ActKind kind, const Tensor& grad, const Tensor& saved,
                    const ExecContext& ctx) {
  detail::require_float(op, grad, "grad_out");
  FRUGAL_REQUIRE(grad.shape() == saved.shape() && grad.device() == saved.device(), op,
                 "grad_out has shape ", grad.shape(), " on ", grad.device().str(),
                 "; expected the input's ", saved.shape(), " on ", saved.device().str());
  FRUGAL_REQUIRE(grad.dtype() == DType::kF32 || grad.dtype() == saved.dtype(), op,
                 "grad_out has dtype ", dtype_name(grad.dtype()), "; expected f32 or ",
                 dtype_name(saved.dtype()));
  if (saved.device().kind != DeviceKind::kCpu) {
    return act_backward(op, kind, grad, saved.to(grad.dtype(), ctx), ctx);
  }
  Tensor out = Tensor::empty(saved.shape(), grad.dtype(), saved.device(), ctx);
  if (saved.numel() == 0) return out;
  const Tensor g = grad.contiguous(ctx);
  cpu::activation_backward_low(static_cast<int>(kind), g, saved, out, ctx);
  return out;
}

/// Backward of an activation layer from its saved input (low-precision or not). Under autocast
/// the saved input is released afterwards, as PyTorch frees a graph's saved tensors.
Tensor layer_backward(const char* op, ActKind kind, const Tensor& grad, Tensor& saved,
                      bool autocast, const ExecContext& ctx) {
  FRUGAL_REQUIRE(saved.defined(), op, "called before forward");
  FRUGAL_REQUIRE(grad.defined(), op, "grad_output is undefined");
  if (!autocast) return act_backward(op, kind, grad, saved, ctx);
  // Autocast: the input was saved in the low dtype; the gradient keeps the dtype it arrives in
  // (low when it comes from a Linear whose input was this layer's low-precision output).
  Tensor out = low_backward(op, kind, grad, saved, ctx);
  saved = Tensor();
  return out;
}

}  // namespace

Tensor relu(ConstTensorView x, const ExecContext& ctx) {
  return act_forward("relu", ActKind::kRelu, x, ctx);
}

Tensor relu_backward(ConstTensorView grad_out, ConstTensorView x, const ExecContext& ctx) {
  return act_backward("relu_backward", ActKind::kRelu, grad_out, x, ctx);
}

Tensor gelu(ConstTensorView x, GeluApprox approx, const ExecContext& ctx) {
  return act_forward("gelu", kind_of(approx), x, ctx);
}

Tensor gelu_backward(ConstTensorView grad_out, ConstTensorView x, GeluApprox approx,
                     const ExecContext& ctx) {
  return act_backward("gelu_backward", kind_of(approx), grad_out, x, ctx);
}

// ---- layers -----------------------------------------------------------------------------------

Tensor ReLU::forward(const Tensor& input) {
  FRUGAL_REQUIRE(input.defined(), "ReLU", "input is undefined");
  Tensor y = act_forward("ReLU", ActKind::kRelu, input, ctx_);
  input_ = saved_input(input, ctx_);
  autocast_ = input_.dtype() != input.dtype();
  return y;
}

Tensor ReLU::backward(const Tensor& grad_output) {
  return layer_backward("ReLU::backward", ActKind::kRelu, grad_output, input_, autocast_, ctx_);
}

Tensor GELU::forward(const Tensor& input) {
  FRUGAL_REQUIRE(input.defined(), "GELU", "input is undefined");
  input_ = saved_input(input, ctx_);
  autocast_ = input_.dtype() != input.dtype();
  // Under autocast the output goes to a low-precision GEMM (the GPT MLP's c_proj): hand it over
  // in the low dtype, as PyTorch's GELU does on an autocast linear's low-precision output (on the
  // host computed from the fp32 input and rounded once, without an fp32 output buffer).
  const DType low = amp::autocast_dtype(amp::OpClass::kGemm);
  if (low != DType::kF32 && autocast_ && input_.dtype() == low) {
    if (input.device().kind != DeviceKind::kCpu) {
      return amp::to_low(act_forward("GELU", kind_of(approx_), input, ctx_), low, ctx_);
    }
    Tensor y = Tensor::empty(input.shape(), low, input.device(), ctx_);
    if (input.numel() == 0) return y;
    const Tensor xc = input.contiguous(ctx_);
    cpu::activation_forward_low(static_cast<int>(kind_of(approx_)), xc, y, ctx_);
    return y;
  }
  return act_forward("GELU", kind_of(approx_), input, ctx_);
}

Tensor GELU::backward(const Tensor& grad_output) {
  return layer_backward("GELU::backward", kind_of(approx_), grad_output, input_, autocast_, ctx_);
}

}  // namespace frugal::nn
