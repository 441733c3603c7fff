// Validation and device dispatch of batch norm (include/frugal/nn/batch_norm.hpp), and the
// BatchNorm2d layer. Backends get contiguous tensors (see nn/spatial_internal.hpp).
#include "frugal/nn/batch_norm.hpp"

#include <cmath>

#include "core/copy.hpp"
#include "cu_ops.hpp"
#include "frugal/amp/autocast.hpp"
#include "nn/spatial_internal.hpp"

namespace frugal::nn {
namespace {

/// `v` itself when contiguous, otherwise a contiguous copy kept alive by `holder`.
ConstTensorView contiguous_view(ConstTensorView v, Tensor& holder, const ExecContext& ctx) {
  if (v.is_contiguous() || v.data == nullptr) return v;
  holder = Tensor::empty(v.shape, v.dtype, v.device, ctx);
  detail::copy(v, holder.view(), ctx);
  return holder.cview();
}

void check_x(const char* op, ConstTensorView x, const char* name) {
  FRUGAL_REQUIRE(x.rank() == 4, op, name, " must have rank 4 (N, C, H, W), got shape ", x.shape);
  FRUGAL_REQUIRE(x.dtype == DType::kF32 || x.dtype == DType::kF64, op, name, " has dtype ",
                 dtype_name(x.dtype), "; expected f32 or f64");
  FRUGAL_REQUIRE(x.shape[1] > 0, op, name, " has no channels: ", x.shape);
  FRUGAL_REQUIRE(x.data != nullptr || x.numel() == 0, op, name, " has null data");
}

/// A per-channel tensor (C) matching x's dtype and device; `optional` allows an empty view.
void check_channel(const char* op, ConstTensorView t, const char* name, ConstTensorView x,
                   bool optional, bool contiguous = false) {
  if (t.data == nullptr) {
    FRUGAL_REQUIRE(optional, op, name, " is required");
    return;
  }
  FRUGAL_REQUIRE(t.rank() == 1 && t.shape[0] == x.shape[1], op, name, " has shape ", t.shape,
                 ", expected (", x.shape[1], ")");
  FRUGAL_REQUIRE(t.dtype == x.dtype, op, name, " has dtype ", dtype_name(t.dtype),
                 " but the input has ", dtype_name(x.dtype));
  FRUGAL_REQUIRE(t.device == x.device, op, name, " is on ", t.device.str(), " but the input is on ",
                 x.device.str());
  FRUGAL_REQUIRE(!contiguous || t.is_contiguous(), op, name, " must be contiguous");
}

}  // namespace

BatchNorm2dResult batch_norm2d(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                               TensorView running_mean, TensorView running_var, bool training,
                               double momentum, double eps, const ExecContext& ctx) {
  constexpr const char* op = "batch_norm2d";
  check_x(op, x, "input");
  check_channel(op, weight, "weight", x, true);
  check_channel(op, bias, "bias", x, true);
  check_channel(op, running_mean, "running_mean", x, training, true);
  check_channel(op, running_var, "running_var", x, training, true);
  FRUGAL_REQUIRE(std::isfinite(eps) && eps >= 0, op, "eps must be finite and >= 0, got ", eps);
  FRUGAL_REQUIRE(std::isfinite(momentum) && momentum >= 0 && momentum <= 1, op,
                 "momentum must be in [0, 1], got ", momentum);
  const int64_t n = x.shape[0], c = x.shape[1], hw = x.shape[2] * x.shape[3];
  if (training) {
    FRUGAL_REQUIRE(n * hw > 1, op, "training needs more than one value per channel, got input ",
                   x.shape);
  }
  BatchNorm2dResult r;
  r.output = Tensor::empty(x.shape, x.dtype, x.device, ctx);
  r.mean = Tensor::empty(Shape{c}, x.dtype, x.device, ctx);
  r.invstd = Tensor::empty(Shape{c}, x.dtype, x.device, ctx);
  Tensor hx, hw_, hb;
  const ConstTensorView xc = contiguous_view(x, hx, ctx);
  const ConstTensorView wc = contiguous_view(weight, hw_, ctx);
  const ConstTensorView bc = contiguous_view(bias, hb, ctx);
  switch (x.device.kind) {
    case DeviceKind::kCpu:
      if (training) {
        cpu::batch_norm_train(xc, wc, bc, running_mean, running_var, r.mean, r.invstd, r.output, n,
                              c, hw, momentum, eps, ctx);
      } else {
        cpu::batch_norm_eval(xc, wc, bc, running_mean, running_var, r.mean, r.invstd, r.output, n,
                             c, hw, eps, ctx);
      }
      break;
    case DeviceKind::kCuda:
      if (training) {
        cu::batch_norm_train(xc, wc, bc, running_mean, running_var, r.mean, r.invstd, r.output,
                             momentum, eps, ctx);
      } else {
        cu::batch_norm_eval(xc, wc, bc, running_mean, running_var, r.mean, r.invstd, r.output, eps,
                            ctx);
      }
      break;
  }
  return r;
}

Tensor batch_norm2d_backward(ConstTensorView grad_out, ConstTensorView x, ConstTensorView weight,
                             ConstTensorView mean, ConstTensorView invstd, bool training,
                             TensorView grad_weight, TensorView grad_bias, const ExecContext& ctx) {
  constexpr const char* op = "batch_norm2d_backward";
  check_x(op, x, "input");
  check_x(op, grad_out, "grad_out");
  FRUGAL_REQUIRE(grad_out.shape == x.shape, op, "grad_out has shape ", grad_out.shape,
                 " but the input has shape ", x.shape);
  FRUGAL_REQUIRE(grad_out.dtype == x.dtype && grad_out.device == x.device, op,
                 "grad_out and input differ in dtype or device");
  check_channel(op, weight, "weight", x, true);
  check_channel(op, mean, "mean", x, false);
  check_channel(op, invstd, "invstd", x, false);
  check_channel(op, grad_weight, "grad_weight", x, true, true);
  check_channel(op, grad_bias, "grad_bias", x, true, true);
  const int64_t n = x.shape[0], c = x.shape[1], hw = x.shape[2] * x.shape[3];
  Tensor dx = Tensor::empty(x.shape, x.dtype, x.device, ctx);
  Tensor hdy, hx, hw_, hm, hi;
  const ConstTensorView dyc = contiguous_view(grad_out, hdy, ctx);
  const ConstTensorView xc = contiguous_view(x, hx, ctx);
  const ConstTensorView wc = contiguous_view(weight, hw_, ctx);
  const ConstTensorView mc = contiguous_view(mean, hm, ctx);
  const ConstTensorView ic = contiguous_view(invstd, hi, ctx);
  switch (x.device.kind) {
    case DeviceKind::kCpu:
      cpu::batch_norm_backward(dyc, xc, wc, mc, ic, training, dx, grad_weight, grad_bias, n, c, hw,
                               ctx);
      break;
    case DeviceKind::kCuda:
      cu::batch_norm_backward(dyc, xc, wc, mc, ic, training, dx, grad_weight, grad_bias, ctx);
      break;
  }
  return dx;
}

// ---- BatchNorm2d layer ------------------------------------------------------------------------

BatchNorm2d::BatchNorm2d(int64_t num_features, double eps, double momentum, bool affine,
                         DType dtype)
    : num_features_(num_features), eps_(eps), momentum_(momentum) {
  constexpr const char* op = "BatchNorm2d";
  FRUGAL_REQUIRE(num_features > 0, op, "num_features must be positive, got ", num_features);
  FRUGAL_REQUIRE(std::isfinite(eps) && eps >= 0, op, "eps must be finite and >= 0, got ", eps);
  FRUGAL_REQUIRE(std::isfinite(momentum) && momentum >= 0 && momentum <= 1, op,
                 "momentum must be in [0, 1], got ", momentum);
  FRUGAL_REQUIRE(dtype == DType::kF32 || dtype == DType::kF64, op, "dtype ", dtype_name(dtype),
                 " is not supported (f32, f64)");
  if (affine) {
    weight_ = &register_parameter("weight", Tensor::full(Shape{num_features}, 1.0, dtype));
    bias_ = &register_parameter("bias", Tensor::zeros(Shape{num_features}, dtype));
  }
  running_mean_ = &register_buffer("running_mean", Tensor::zeros(Shape{num_features}, dtype));
  running_var_ = &register_buffer("running_var", Tensor::full(Shape{num_features}, 1.0, dtype));
}

Tensor BatchNorm2d::forward(const Tensor& in) {
  const Tensor x = amp::autocast_fp32(in, ctx_);  // a norm computes in f32 under autocast
  FRUGAL_REQUIRE(x.rank() == 4, "BatchNorm2d", "input must have rank 4 (N, C, H, W), got shape ",
                 x.shape());
  FRUGAL_REQUIRE(x.dim(1) == num_features_, "BatchNorm2d", "input has ", x.dim(1),
                 " channels, expected ", num_features_);
  const ConstTensorView w = weight_ != nullptr ? weight_->value.cview() : ConstTensorView{};
  const ConstTensorView b = bias_ != nullptr ? bias_->value.cview() : ConstTensorView{};
  BatchNorm2dResult r = batch_norm2d(x, w, b, running_mean_->view(), running_var_->view(),
                                     training_, momentum_, eps_, ctx_);
  input_ = x;
  mean_ = std::move(r.mean);
  invstd_ = std::move(r.invstd);
  saved_training_ = training_;
  return std::move(r.output);
}

Tensor BatchNorm2d::backward(const Tensor& grad_out) {
  FRUGAL_REQUIRE(input_.defined(), "BatchNorm2d", "backward called before forward");
  const ConstTensorView w = weight_ != nullptr ? weight_->value.cview() : ConstTensorView{};
  const TensorView gw =
      weight_ != nullptr && weight_->trainable ? weight_->grad.view() : TensorView{};
  const TensorView gb = bias_ != nullptr && bias_->trainable ? bias_->grad.view() : TensorView{};
  return batch_norm2d_backward(amp::autocast_fp32(grad_out, ctx_), input_, w, mean_, invstd_,
                               saved_training_, gw, gb, ctx_);
}

}  // namespace frugal::nn
