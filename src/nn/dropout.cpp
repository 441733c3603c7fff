// Dropout: validation and device dispatch, and the layer (include/frugal/nn/dropout.hpp).
#include "frugal/nn/dropout.hpp"

#include <cmath>

#include "cu_ops.hpp"
#include "nn/basic_ops.hpp"

namespace frugal::nn {
namespace {

void check_p(const char* op, double p) {
  FRUGAL_REQUIRE(p >= 0.0 && p < 1.0, op, "p must be in [0, 1), got ", p);
}

}  // namespace

DropoutResult dropout(ConstTensorView x, double p, uint64_t seed, uint64_t step,
                      const ExecContext& ctx) {
  const char* op = "dropout";
  check_p(op, p);
  detail::require_float(op, x, "x");
  DropoutResult r{Tensor::empty(x.shape, x.dtype, x.device, ctx),
                  Tensor::empty(x.shape, DType::kU8, x.device, ctx)};
  if (x.numel() == 0) return r;
  Tensor hx;
  const ConstTensorView cx = detail::contiguous_view(x, hx, ctx);
  // The threshold is p as a float: uniform01 values are multiples of 2^-24, so the drop
  // probability is p rounded up to such a multiple, the same on every device.
  const auto pf = static_cast<float>(p);
  const double scale = 1.0 / (1.0 - p);
  switch (x.device.kind) {
    case DeviceKind::kCpu:
      cpu::dropout_forward(cx, pf, scale, seed, step, r.output, r.mask, ctx);
      break;
    case DeviceKind::kCuda:
      cu::dropout_forward(cx, pf, scale, seed, step, r.output, r.mask, ctx);
      break;
  }
  return r;
}

Tensor dropout_backward(ConstTensorView grad_out, ConstTensorView mask, double p,
                        const ExecContext& ctx) {
  const char* op = "dropout_backward";
  check_p(op, p);
  detail::require_float(op, grad_out, "grad_out");
  FRUGAL_REQUIRE(mask.dtype == DType::kU8, op, "mask has dtype ", dtype_name(mask.dtype),
                 "; expected u8");
  FRUGAL_REQUIRE(mask.device == grad_out.device, op, "mask is on ", mask.device.str(),
                 " but grad_out is on ", grad_out.device.str());
  FRUGAL_REQUIRE(mask.shape == grad_out.shape, op, "mask has shape ", mask.shape,
                 " but grad_out has shape ", grad_out.shape);
  Tensor out = Tensor::empty(grad_out.shape, grad_out.dtype, grad_out.device, ctx);
  if (out.numel() == 0) return out;
  Tensor hg, hm;
  const ConstTensorView cg = detail::contiguous_view(grad_out, hg, ctx);
  const ConstTensorView cm = detail::contiguous_view(mask, hm, ctx);
  const double scale = 1.0 / (1.0 - p);
  switch (out.device().kind) {
    case DeviceKind::kCpu:
      cpu::dropout_backward(cg, cm, scale, out, ctx);
      break;
    case DeviceKind::kCuda:
      cu::dropout_backward(cg, cm, scale, out, ctx);
      break;
  }
  return out;
}

// ---- layer ------------------------------------------------------------------------------------

Dropout::Dropout(double p, uint64_t seed) : p_(p), seed_(seed) { check_p("Dropout", p); }

Tensor Dropout::forward(const Tensor& input) {
  FRUGAL_REQUIRE(input.defined(), "Dropout", "input is undefined");
  detail::require_float("Dropout", input, "input");
  shape_ = input.shape();
  has_forward_ = true;
  if (!training_ || p_ == 0.0) {
    identity_ = true;
    mask_ = Tensor();
    return input;
  }
  DropoutResult r = dropout(input, p_, seed_, step_, ctx_);
  ++step_;
  identity_ = false;
  mask_ = std::move(r.mask);
  return std::move(r.output);
}

Tensor Dropout::backward(const Tensor& grad_output) {
  const char* op = "Dropout::backward";
  FRUGAL_REQUIRE(has_forward_, op, "called before forward");
  FRUGAL_REQUIRE(grad_output.defined() && grad_output.shape() == shape_, op,
                 "grad_output has shape ", grad_output.defined() ? grad_output.shape() : Shape{},
                 "; expected ", shape_);
  if (identity_) return grad_output;
  return dropout_backward(grad_output, mask_, p_, ctx_);
}

}  // namespace frugal::nn
