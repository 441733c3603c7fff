// ReLU / GELU: validation and device dispatch, and the layers (include/frugal/nn/activation.hpp).
#include "frugal/nn/activation.hpp"

#include "cu_ops.hpp"
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
  input_ = input;
  return y;
}

Tensor ReLU::backward(const Tensor& grad_output) {
  FRUGAL_REQUIRE(input_.defined(), "ReLU::backward", "called before forward");
  FRUGAL_REQUIRE(grad_output.defined(), "ReLU::backward", "grad_output is undefined");
  return act_backward("ReLU::backward", ActKind::kRelu, grad_output, input_, ctx_);
}

Tensor GELU::forward(const Tensor& input) {
  FRUGAL_REQUIRE(input.defined(), "GELU", "input is undefined");
  Tensor y = act_forward("GELU", kind_of(approx_), input, ctx_);
  input_ = input;
  return y;
}

Tensor GELU::backward(const Tensor& grad_output) {
  FRUGAL_REQUIRE(input_.defined(), "GELU::backward", "called before forward");
  FRUGAL_REQUIRE(grad_output.defined(), "GELU::backward", "grad_output is undefined");
  return act_backward("GELU::backward", kind_of(approx_), grad_output, input_, ctx_);
}

}  // namespace frugal::nn
