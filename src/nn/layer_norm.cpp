// Validation and device dispatch of LayerNorm (frugal/nn/layer_norm.hpp), and the module.
#include "frugal/nn/layer_norm.hpp"

#include <cmath>

#include "cu_ops.hpp"
#include "frugal/amp/autocast.hpp"
#include "nn/cpu/transformer.hpp"
#include "nn/transformer_check.hpp"

namespace frugal::nn {
namespace {

constexpr const char* kFwd = "layer_norm_forward";
constexpr const char* kBwd = "layer_norm_backward";

bool given(ConstTensorView v) { return v.data != nullptr; }

/// x (..., C) with rank >= 1; a given weight / bias is (C) like x.
int64_t check_x_and_params(const char* op, ConstTensorView x, ConstTensorView weight,
                           ConstTensorView bias) {
  detail::check_real(op, x, "x");
  FRUGAL_REQUIRE(x.rank() >= 1, op, "x must have rank >= 1, got shape ", x.shape);
  const int64_t c = x.dim(-1);
  FRUGAL_REQUIRE(c > 0, op, "the normalized axis of x has length 0 (shape ", x.shape, ")");
  const ConstTensorView params[2] = {weight, bias};
  const char* names[2] = {"weight", "bias"};
  for (int i = 0; i < 2; ++i) {
    if (!given(params[i])) continue;
    detail::check_like(op, params[i], names[i], x, "x");
    FRUGAL_REQUIRE(params[i].rank() == 1 && params[i].dim(0) == c, op, names[i], " has shape ",
                   params[i].shape, "; expected (", c, ")");
  }
  return c;
}

Shape stats_shape(const Shape& x) {
  Shape s = x;
  s.erase(s.rank() - 1);
  return s;
}

}  // namespace

LayerNormForward layer_norm_forward(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                                    double eps, const ExecContext& ctx) {
  const int64_t c = check_x_and_params(kFwd, x, weight, bias);
  FRUGAL_REQUIRE(std::isfinite(eps) && eps > 0, kFwd, "eps must be finite and > 0, got ", eps);
  LayerNormForward r;
  r.out = Tensor::empty(x.shape, x.dtype, x.device, ctx);
  r.mean = Tensor::empty(stats_shape(x.shape), x.dtype, x.device, ctx);
  r.rstd = Tensor::empty(stats_shape(x.shape), x.dtype, x.device, ctx);
  const int64_t n = x.numel() / c;
  if (n == 0) return r;
  Tensor hx, hw, hb;
  const ConstTensorView xc = detail::reshaped(detail::contiguous(x, hx, ctx), {n, c});
  const ConstTensorView wc = given(weight) ? detail::contiguous(weight, hw, ctx) : weight;
  const ConstTensorView bc = given(bias) ? detail::contiguous(bias, hb, ctx) : bias;
  const TensorView out = detail::reshaped(r.out.view(), {n, c});
  const TensorView mean = detail::reshaped(r.mean.view(), {n});
  const TensorView rstd = detail::reshaped(r.rstd.view(), {n});
  switch (x.device.kind) {
    case DeviceKind::kCpu:
      cpu::layer_norm_forward(xc, wc, bc, eps, out, mean, rstd, ctx);
      break;
    case DeviceKind::kCuda:
      cu::layer_norm_forward(xc, wc, bc, eps, out, mean, rstd, ctx);
      break;
  }
  return r;
}

Tensor layer_norm_backward(ConstTensorView grad_out, ConstTensorView x, ConstTensorView weight,
                           ConstTensorView mean, ConstTensorView rstd, TensorView grad_weight,
                           TensorView grad_bias, const ExecContext& ctx) {
  const int64_t c = check_x_and_params(kBwd, x, weight, {});
  detail::check_like(kBwd, grad_out, "grad_out", x, "x");
  FRUGAL_REQUIRE(grad_out.shape == x.shape, kBwd, "grad_out has shape ", grad_out.shape,
                 " but x has shape ", x.shape);
  const ConstTensorView stats[2] = {mean, rstd};
  const char* stat_names[2] = {"mean", "rstd"};
  for (int i = 0; i < 2; ++i) {
    detail::check_like(kBwd, stats[i], stat_names[i], x, "x");
    FRUGAL_REQUIRE(stats[i].shape == stats_shape(x.shape), kBwd, stat_names[i], " has shape ",
                   stats[i].shape, "; expected ", stats_shape(x.shape));
  }
  const TensorView grads[2] = {grad_weight, grad_bias};
  const char* grad_names[2] = {"grad_weight", "grad_bias"};
  for (int i = 0; i < 2; ++i) {
    if (!given(grads[i])) continue;
    detail::check_like(kBwd, grads[i], grad_names[i], x, "x");
    FRUGAL_REQUIRE(grads[i].rank() == 1 && grads[i].dim(0) == c, kBwd, grad_names[i], " has shape ",
                   grads[i].shape, "; expected (", c, ")");
    FRUGAL_REQUIRE(grads[i].is_contiguous(), kBwd, grad_names[i], " must be contiguous");
  }
  FRUGAL_REQUIRE(!given(grad_weight) || given(weight), kBwd,
                 "grad_weight given but the forward had no weight");

  Tensor grad_input = Tensor::empty(x.shape, x.dtype, x.device, ctx);
  const int64_t n = x.numel() / c;
  if (n == 0) return grad_input;
  Tensor hg, hx, hw, hm, hr;
  const ConstTensorView gc = detail::reshaped(detail::contiguous(grad_out, hg, ctx), {n, c});
  const ConstTensorView xc = detail::reshaped(detail::contiguous(x, hx, ctx), {n, c});
  const ConstTensorView wc = given(weight) ? detail::contiguous(weight, hw, ctx) : weight;
  const ConstTensorView mc = detail::reshaped(detail::contiguous(mean, hm, ctx), {n});
  const ConstTensorView rc = detail::reshaped(detail::contiguous(rstd, hr, ctx), {n});
  const TensorView gi = detail::reshaped(grad_input.view(), {n, c});
  switch (x.device.kind) {
    case DeviceKind::kCpu:
      cpu::layer_norm_backward(gc, xc, wc, mc, rc, gi, grad_weight, grad_bias, ctx);
      break;
    case DeviceKind::kCuda:
      cu::layer_norm_backward(gc, xc, wc, mc, rc, gi, grad_weight, grad_bias, ctx);
      break;
  }
  return grad_input;
}

LayerNorm::LayerNorm(int64_t normalized_size, double eps, bool affine, DType dtype)
    : size_(normalized_size), eps_(eps) {
  FRUGAL_REQUIRE(normalized_size > 0, "LayerNorm", "normalized_size must be > 0, got ",
                 normalized_size);
  FRUGAL_REQUIRE(std::isfinite(eps) && eps > 0, "LayerNorm", "eps must be finite and > 0, got ",
                 eps);
  FRUGAL_REQUIRE(dtype == DType::kF32 || dtype == DType::kF64, "LayerNorm", "dtype ",
                 dtype_name(dtype), " is not supported (f32, f64)");
  if (affine) {
    weight_ = &register_parameter("weight", Tensor::full({size_}, 1.0, dtype));
    bias_ = &register_parameter("bias", Tensor::zeros({size_}, dtype));
  }
}

Tensor LayerNorm::forward(const Tensor& in) {
  FRUGAL_REQUIRE(in.defined(), "LayerNorm::forward", "input is undefined");
  const Tensor input = amp::autocast_fp32(in, ctx_);  // a norm computes in f32 under autocast
  FRUGAL_REQUIRE(input.rank() >= 1 && input.dim(-1) == size_, "LayerNorm::forward", "input shape ",
                 input.shape(), " does not end in the normalized size ", size_);
  LayerNormForward r =
      layer_norm_forward(input, weight_ ? weight_->value.cview() : ConstTensorView{},
                         bias_ ? bias_->value.cview() : ConstTensorView{}, eps_, ctx_);
  x_ = input;
  mean_ = std::move(r.mean);
  rstd_ = std::move(r.rstd);
  return std::move(r.out);
}

Tensor LayerNorm::backward(const Tensor& grad_output) {
  FRUGAL_REQUIRE(x_.defined(), "LayerNorm::backward", "backward called before forward");
  FRUGAL_REQUIRE(grad_output.defined(), "LayerNorm::backward", "grad_output is undefined");
  const bool train_w = weight_ && weight_->trainable;
  const bool train_b = bias_ && bias_->trainable;
  return layer_norm_backward(amp::autocast_fp32(grad_output, ctx_), x_,
                             weight_ ? weight_->value.cview() : ConstTensorView{}, mean_, rstd_,
                             train_w ? weight_->grad.view() : TensorView{},
                             train_b ? bias_->grad.view() : TensorView{}, ctx_);
}

}  // namespace frugal::nn
