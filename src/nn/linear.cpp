// Linear and Flatten layers, and the dispatch of the bias ops (include/frugal/nn/linear.hpp).
#include "frugal/nn/linear.hpp"

#include <cmath>

#include "cu_ops.hpp"
#include "frugal/core/ops.hpp"
#include "frugal/core/random.hpp"
#include "nn/basic_ops.hpp"

namespace frugal::nn {
namespace {

/// x (..., in) as contiguous rows (N, in).
Tensor as_rows(const Tensor& x, int64_t cols, const ExecContext& ctx) {
  const Tensor c = x.contiguous(ctx);
  return c.reshape({c.numel() / cols, cols});
}

/// `shape` with its last extent replaced by `last`.
Shape with_last(Shape shape, int64_t last) {
  shape[shape.rank() - 1] = last;
  return shape;
}

}  // namespace

// ---- bias ops ---------------------------------------------------------------------------------

void linear_add_bias(TensorView y, ConstTensorView bias, const ExecContext& ctx) {
  const char* op = "linear_add_bias";
  detail::require_float(op, y, "y");
  detail::require_float(op, bias, "bias");
  FRUGAL_REQUIRE(y.rank() == 2, op, "y must have rank 2, got shape ", y.shape);
  FRUGAL_REQUIRE(bias.rank() == 1 && bias.shape[0] == y.shape[1], op, "bias has shape ", bias.shape,
                 ", expected (", y.shape[1], ")");
  FRUGAL_REQUIRE(bias.device == y.device, op, "bias is on ", bias.device.str(), " but y is on ",
                 y.device.str());
  FRUGAL_REQUIRE(bias.dtype == y.dtype, op, "bias has dtype ", dtype_name(bias.dtype),
                 " but y has dtype ", dtype_name(y.dtype));
  FRUGAL_REQUIRE(y.is_contiguous(), op, "y must be contiguous");
  if (y.numel() == 0) return;
  Tensor hb;
  const ConstTensorView b = detail::contiguous_view(bias, hb, ctx);
  switch (y.device.kind) {
    case DeviceKind::kCpu:
      return cpu::linear_add_bias(y, b, ctx);
    case DeviceKind::kCuda:
      return cu::linear_add_bias(y, b, ctx);
  }
}

void linear_bias_grad(ConstTensorView grad, TensorView grad_bias, const ExecContext& ctx) {
  const char* op = "linear_bias_grad";
  detail::require_float(op, grad, "grad");
  detail::require_float(op, grad_bias, "grad_bias");
  FRUGAL_REQUIRE(grad.rank() == 2, op, "grad must have rank 2, got shape ", grad.shape);
  FRUGAL_REQUIRE(grad_bias.rank() == 1 && grad_bias.shape[0] == grad.shape[1], op,
                 "grad_bias has shape ", grad_bias.shape, ", expected (", grad.shape[1], ")");
  FRUGAL_REQUIRE(grad_bias.device == grad.device, op, "grad_bias is on ", grad_bias.device.str(),
                 " but grad is on ", grad.device.str());
  FRUGAL_REQUIRE(grad_bias.dtype == grad.dtype, op, "grad_bias has dtype ",
                 dtype_name(grad_bias.dtype), " but grad has dtype ", dtype_name(grad.dtype));
  FRUGAL_REQUIRE(grad_bias.is_contiguous(), op, "grad_bias must be contiguous");
  if (grad.numel() == 0) return;
  Tensor hg;
  const ConstTensorView g = detail::contiguous_view(grad, hg, ctx);
  switch (g.device.kind) {
    case DeviceKind::kCpu:
      return cpu::linear_bias_grad(g, grad_bias, ctx);
    case DeviceKind::kCuda:
      return cu::linear_bias_grad(g, grad_bias, ctx);
  }
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const ExecContext& ctx) {
  const char* op = "linear";
  FRUGAL_REQUIRE(x.defined() && weight.defined(), op, "x and weight must be defined");
  detail::require_float(op, x, "x");
  FRUGAL_REQUIRE(weight.rank() == 2, op, "weight must have rank 2, got shape ", weight.shape());
  FRUGAL_REQUIRE(x.rank() >= 1 && x.dim(-1) == weight.dim(1), op, "x has shape ", x.shape(),
                 "; expected (..., ", weight.dim(1), ")");
  FRUGAL_REQUIRE(x.device() == weight.device(), op, "x is on ", x.device().str(),
                 " but weight is on ", weight.device().str());
  FRUGAL_REQUIRE(x.dtype() == weight.dtype(), op, "x has dtype ", dtype_name(x.dtype()),
                 " but weight has dtype ", dtype_name(weight.dtype()));
  const int64_t out = weight.dim(0);
  const Tensor rows = as_rows(x, weight.dim(1), ctx);
  Tensor y = Tensor::empty({rows.dim(0), out}, x.dtype(), x.device(), ctx);
  gemm_into(rows, weight, y, GemmOptions{.trans_b = true}, ctx);
  if (bias.defined()) linear_add_bias(y, bias, ctx);
  return y.reshape(with_last(x.shape(), out));
}

// ---- Linear -----------------------------------------------------------------------------------

Linear::Linear(int64_t in_features, int64_t out_features, bool bias, uint64_t seed, DType dtype)
    : in_features_(in_features), out_features_(out_features) {
  FRUGAL_REQUIRE(in_features > 0 && out_features > 0, "Linear", "in_features ", in_features,
                 " and out_features ", out_features, " must be positive");
  FRUGAL_REQUIRE(detail::is_nn_float(dtype), "Linear", "dtype ", dtype_name(dtype),
                 " is not supported (f32, f64, f16, bf16)");
  // PyTorch's reset_parameters: kaiming_uniform_(a = sqrt(5)) gives bound
  // gain * sqrt(3 / fan_in) with gain = sqrt(2 / (1 + 5)), i.e. 1 / sqrt(fan_in); the bias uses
  // the same bound.
  const auto bound = static_cast<float>(1.0 / std::sqrt(static_cast<double>(in_features)));
  ExecContext init;
  init.seed = seed;
  Tensor w = Tensor::empty({out_features, in_features}, dtype);
  fill_uniform(w, -bound, bound, init);
  weight_ = &register_parameter("weight", std::move(w));
  if (bias) {
    init.offset = philox_counters(out_features * in_features);
    Tensor b = Tensor::empty({out_features}, dtype);
    fill_uniform(b, -bound, bound, init);
    bias_ = &register_parameter("bias", std::move(b));
  }
}

Tensor Linear::forward(const Tensor& input) {
  const char* op = "Linear";
  const Tensor& w = weight_->value;
  FRUGAL_REQUIRE(input.defined(), op, "input is undefined");
  FRUGAL_REQUIRE(input.rank() >= 1 && input.dim(-1) == in_features_, op, "input has shape ",
                 input.shape(), "; expected (..., ", in_features_, ")");
  FRUGAL_REQUIRE(input.device() == w.device(), op, "input is on ", input.device().str(),
                 " but the layer is on ", w.device().str());
  const amp::Fp8Recipe* fp8 = amp::Fp8Autocast::current();
  const DType low = amp::autocast_dtype(amp::OpClass::kGemm);
  const bool f32 = w.dtype() == DType::kF32;
  // Under autocast a low-precision activation (a GELU's output) is accepted as it is.
  const bool low_input = f32 && low != DType::kF32 && fp8 == nullptr && input.dtype() == low;
  FRUGAL_REQUIRE(input.dtype() == w.dtype() || low_input, op, "input has dtype ",
                 dtype_name(input.dtype()), " but the layer has dtype ", dtype_name(w.dtype()));
  const Tensor rows = as_rows(input, in_features_, ctx_);  // (N, in)
  in_shape_ = input.shape();
  out_shape_ = with_last(input.shape(), out_features_);
  Tensor y = Tensor::empty({rows.dim(0), out_features_}, w.dtype(), w.device(), ctx_);  // (N, out)
  if (f32 && fp8 != nullptr) {
    // FP8: x and W in E4M3 with their own scales; y = (x8 / s_x)(W8 / s_w)^T, fp32 accumulation.
    fp8_recipe_ = *fp8;
    input_ = fp8_input_.quantize(rows, fp8->forward_dtype(), *fp8, ctx_);
    input_scale_inv_ = fp8_input_.scale_inv();
    w_used_ = fp8_weight_.quantize(w, fp8->forward_dtype(), *fp8, ctx_);
    weight_scale_inv_ = fp8_weight_.scale_inv();
    amp::GemmOptions g;
    g.trans_b = true;
    g.a_scale = input_scale_inv_;
    g.b_scale = weight_scale_inv_;
    amp::low_gemm_into(input_, w_used_, y, g, ctx_);
    mode_ = Mode::kFp8;
  } else if (f32 && low != DType::kF32) {
    const Tensor xl = low_input ? rows : amp::to_low(rows, low, ctx_);  // (N, in)
    w_used_ = w_copy_.get(w, low, "Linear", 1.f, ctx_);
    amp::GemmOptions g;
    g.trans_b = true;
    amp::low_gemm_into(xl, w_used_, y, g, ctx_);
    input_ = amp::saved_activation_dtype() == low || low_input ? xl : rows;
    input_low_ = low_input;
    low_ = low;
    mode_ = Mode::kLow;
  } else {
    input_ = rows;
    w_used_ = Tensor();
    mode_ = Mode::kPlain;
    gemm_into(input_, w, y, GemmOptions{.trans_b = true}, ctx_);
  }
  if (bias_ != nullptr) linear_add_bias(y, bias_->value, ctx_);
  return y.reshape(out_shape_);
}

Tensor Linear::backward(const Tensor& grad_output) {
  const char* op = "Linear::backward";
  FRUGAL_REQUIRE(input_.defined(), op, "called before forward");
  FRUGAL_REQUIRE(grad_output.defined() && grad_output.shape() == out_shape_, op,
                 "grad_output has shape ", grad_output.defined() ? grad_output.shape() : Shape{},
                 "; expected ", out_shape_);
  FRUGAL_REQUIRE(grad_output.device() == input_.device(), op, "grad_output is on ",
                 grad_output.device().str(), " but the layer is on ", input_.device().str());
  const DType wdt = weight_->value.dtype();
  // Under autocast the gradient may arrive in the low dtype (from a GELU between two Linears).
  const bool g_low = mode_ == Mode::kLow && grad_output.dtype() == low_;
  FRUGAL_REQUIRE(grad_output.dtype() == wdt || g_low, op, "grad_output has dtype ",
                 dtype_name(grad_output.dtype()), " but the layer has dtype ", dtype_name(wdt));
  const Tensor g = as_rows(grad_output, out_features_, ctx_);  // (N, out)
  if (bias_ != nullptr && bias_->trainable) {
    if (g_low) {
      // Column sums of the low-precision gradient in fp32: ones (1, N) times g (N, out), += .
      const Tensor ones = Tensor::full({1, g.dim(0)}, 1.0, low_, g.device(), ctx_);
      amp::GemmOptions bo;
      bo.beta = 1.f;
      amp::low_gemm_into(ones, g, bias_->grad.reshape({1, out_features_}), bo, ctx_);
    } else {
      linear_bias_grad(g, bias_->grad, ctx_);
    }
  }
  // grad_input has the dtype of the forward's input (the low dtype for a low input).
  const DType gx_dtype = mode_ == Mode::kLow && input_low_ ? low_ : wdt;
  Tensor gx = Tensor::empty({g.dim(0), in_features_}, gx_dtype, g.device(), ctx_);  // (N, in)
  if (mode_ == Mode::kPlain) {
    if (weight_->trainable) {
      // grad_W (out, in) += g^T x, accumulated in place by the GEMM (beta = 1).
      gemm_into(g, input_, weight_->grad, GemmOptions{.trans_a = true, .beta = 1.0}, ctx_);
    }
    gemm_into(g, weight_->value, gx, GemmOptions{}, ctx_);
    return gx.reshape(in_shape_);
  }
  amp::GemmOptions gw;  // grad_W += g^T x
  gw.trans_a = true;
  gw.beta = 1.f;
  amp::GemmOptions gi;  // grad_x = g W
  Tensor gq, xq;
  if (mode_ == Mode::kFp8) {
    gq = fp8_grad_.quantize(g, fp8_recipe_.backward_dtype(), fp8_recipe_, ctx_);
    xq = input_;
    gw.a_scale = gi.a_scale = fp8_grad_.scale_inv();
    gw.b_scale = input_scale_inv_;
    gi.b_scale = weight_scale_inv_;
  } else {
    gq = g_low ? g : amp::to_low(g, low_, ctx_);
    xq = input_.dtype() == low_ ? input_ : amp::to_low(input_, low_, ctx_);
  }
  if (weight_->trainable) amp::low_gemm_into(gq, xq, weight_->grad, gw, ctx_);
  amp::low_gemm_into(gq, w_used_, gx, gi, ctx_);
  // Mixed precision releases what the forward saved, as PyTorch frees a graph's saved tensors:
  // the activation memory falls layer by layer during backward.
  input_ = Tensor();
  w_used_ = Tensor();
  return gx.reshape(in_shape_);
}

// ---- Flatten ----------------------------------------------------------------------------------

Tensor Flatten::forward(const Tensor& input) {
  const char* op = "Flatten";
  FRUGAL_REQUIRE(input.defined(), op, "input is undefined");
  const int r = input.rank();
  const int s = start_dim_ < 0 ? start_dim_ + r : start_dim_;
  FRUGAL_REQUIRE(s >= 0 && s < r, op, "start_dim ", start_dim_, " out of range for input shape ",
                 input.shape());
  Shape out;
  for (int i = 0; i < s; ++i) out.push_back(input.dim(i));
  int64_t rest = 1;
  for (int i = s; i < r; ++i) rest *= input.dim(i);
  out.push_back(rest);
  in_shape_ = input.shape();
  out_shape_ = out;
  has_forward_ = true;
  return input.contiguous().reshape(out);
}

Tensor Flatten::backward(const Tensor& grad_output) {
  const char* op = "Flatten::backward";
  FRUGAL_REQUIRE(has_forward_, op, "called before forward");
  FRUGAL_REQUIRE(grad_output.defined() && grad_output.shape() == out_shape_, op,
                 "grad_output has shape ", grad_output.defined() ? grad_output.shape() : Shape{},
                 "; expected ", out_shape_);
  return grad_output.contiguous().reshape(in_shape_);
}

}  // namespace frugal::nn
