// Validation and device dispatch of 2-D convolution (include/frugal/nn/conv.hpp), and the Conv2d
// layer. Backends get contiguous tensors (see nn/spatial_internal.hpp).
#include "frugal/nn/conv.hpp"

#include <cmath>

#include "core/copy.hpp"
#include "cu_ops.hpp"
#include "frugal/amp/autocast.hpp"
#include "frugal/core/philox.hpp"
#include "frugal/core/random.hpp"
#include "nn/cpu/conv_low.hpp"
#include "nn/spatial_internal.hpp"

namespace frugal::nn {
namespace {

constexpr const char* kOp = "conv2d";

// The convolution parameters as cu:: takes them.
#define CU_GEOM(g) g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dil_h, g.dil_w, g.groups

/// `v` itself when contiguous, otherwise a contiguous copy kept alive by `holder`.
ConstTensorView contiguous_view(ConstTensorView v, Tensor& holder, const ExecContext& ctx) {
  if (v.is_contiguous()) return v;
  holder = Tensor::empty(v.shape, v.dtype, v.device, ctx);
  detail::copy(v, holder.view(), ctx);
  return holder.cview();
}

void check_tensor(const char* op, ConstTensorView t, const char* name, int rank) {
  FRUGAL_REQUIRE(t.rank() == rank, op, name, " must have rank ", rank, ", got shape ", t.shape);
  FRUGAL_REQUIRE(t.dtype == DType::kF32 || t.dtype == DType::kF64, op, name, " has dtype ",
                 dtype_name(t.dtype), "; expected f32 or f64");
  FRUGAL_REQUIRE(t.data != nullptr || t.numel() == 0, op, name, " has null data");
}

void check_same_kind(const char* op, ConstTensorView a, const char* an, ConstTensorView b,
                     const char* bn) {
  FRUGAL_REQUIRE(a.device == b.device, op, an, " is on ", a.device.str(), " but ", bn, " is on ",
                 b.device.str());
  FRUGAL_REQUIRE(a.dtype == b.dtype, op, an, " has dtype ", dtype_name(a.dtype), " but ", bn,
                 " has dtype ", dtype_name(b.dtype));
}

/// Validates the geometry of input shape `xs` and weight shape `ws` and computes every extent.
detail::Conv2dGeometry make_geometry(const Shape& xs, const Shape& ws, const Conv2dParams& p) {
  FRUGAL_REQUIRE(xs.rank() == 4, kOp, "input must have rank 4 (N, C, H, W), got shape ", xs);
  FRUGAL_REQUIRE(ws.rank() == 4, kOp,
                 "weight must have rank 4 (C_out, C_in / groups, kh, kw), got shape ", ws);
  FRUGAL_REQUIRE(p.stride.h >= 1 && p.stride.w >= 1, kOp, "stride must be >= 1, got (", p.stride.h,
                 ", ", p.stride.w, ")");
  FRUGAL_REQUIRE(p.dilation.h >= 1 && p.dilation.w >= 1, kOp, "dilation must be >= 1, got (",
                 p.dilation.h, ", ", p.dilation.w, ")");
  FRUGAL_REQUIRE(p.padding.h >= 0 && p.padding.w >= 0, kOp, "padding must be >= 0, got (",
                 p.padding.h, ", ", p.padding.w, ")");
  FRUGAL_REQUIRE(p.groups >= 1, kOp, "groups must be >= 1, got ", p.groups);
  detail::Conv2dGeometry g{};
  g.n = xs[0];
  g.c_in = xs[1];
  g.h = xs[2];
  g.w = xs[3];
  g.c_out = ws[0];
  g.kh = ws[2];
  g.kw = ws[3];
  FRUGAL_REQUIRE(g.c_in > 0 && g.h > 0 && g.w > 0, kOp,
                 "input has an empty channel or spatial extent: ", xs);
  FRUGAL_REQUIRE(g.c_out > 0 && g.kh > 0 && g.kw > 0 && ws[1] > 0, kOp,
                 "weight has an empty extent: ", ws);
  FRUGAL_REQUIRE(g.c_in % p.groups == 0, kOp, "groups ", p.groups,
                 " does not divide the input channels ", g.c_in);
  FRUGAL_REQUIRE(g.c_out % p.groups == 0, kOp, "groups ", p.groups,
                 " does not divide the output channels ", g.c_out);
  FRUGAL_REQUIRE(ws[1] == g.c_in / p.groups, kOp, "input has ", g.c_in, " channels in ", p.groups,
                 " group(s), so weight dim 1 must be ", g.c_in / p.groups, ", got weight shape ",
                 ws);
  g.stride_h = p.stride.h;
  g.stride_w = p.stride.w;
  g.pad_h = p.padding.h;
  g.pad_w = p.padding.w;
  g.dil_h = p.dilation.h;
  g.dil_w = p.dilation.w;
  g.groups = p.groups;
  const int64_t ekh = g.dil_h * (g.kh - 1) + 1;  // effective (dilated) kernel extent
  const int64_t ekw = g.dil_w * (g.kw - 1) + 1;
  FRUGAL_REQUIRE(ekh <= g.h + 2 * g.pad_h && ekw <= g.w + 2 * g.pad_w, kOp, "dilated kernel (", ekh,
                 ", ", ekw, ") is larger than the padded input (", g.h + 2 * g.pad_h, ", ",
                 g.w + 2 * g.pad_w, ")");
  g.oh = (g.h + 2 * g.pad_h - ekh) / g.stride_h + 1;
  g.ow = (g.w + 2 * g.pad_w - ekw) / g.stride_w + 1;
  return g;
}

void check_grad_out(ConstTensorView dy, const detail::Conv2dGeometry& g) {
  const Shape want{g.n, g.c_out, g.oh, g.ow};
  FRUGAL_REQUIRE(dy.shape == want, kOp, "grad_out has shape ", dy.shape, ", expected ", want);
}

// ---- Conv2d under autocast: the low-precision convolution ------------------------------------
// Operands (x, w, dy) in bf16 / f16, fp32 accumulation, f32 results (y, dx, dw +=). Run by
// oneDNN's bf16 convolution on the CPU (src/nn/cpu/conv_dnnl.cpp) and by cuDNN's graph API on
// CUDA (kernels/nn/conv_cudnn.cu). Where neither applies (f16 on the CPU: no f16 FMA here; a
// build without oneDNN; a geometry cuDNN offers no mixed-dtype engine for), the operands are
// widened exactly to f32 and the fp32 kernels run on them: the same products and accumulation
// precision, in another summation order. The layer passes contiguous tensors of valid shapes.

/// True when a low-precision kernel may take `low` operands of geometry g on `device` (CUDA:
/// whether cuDNN has an engine is known only by trying; the cu:: calls return false otherwise).
bool low_kernel_may_run(const Device& device, DType low, const detail::Conv2dGeometry& g) {
  if (g.n == 0) return false;  // the fp32 entry points handle empty batches
  if (device.kind == DeviceKind::kCuda) return true;
  return FRUGAL_HAS_DNNL && low == DType::kBF16;
}

/// y (f32) = conv(xl, wl) + bias for xl, wl in the low dtype.
Tensor conv2d_low(const Tensor& xl, const Tensor& wl, ConstTensorView bias, const Conv2dParams& p,
                  const ExecContext& ctx) {
  const auto g = make_geometry(xl.shape(), wl.shape(), p);
  if (low_kernel_may_run(xl.device(), xl.dtype(), g)) {
    Tensor y = Tensor::empty(Shape{g.n, g.c_out, g.oh, g.ow}, DType::kF32, xl.device(), ctx);
    if (xl.device().kind == DeviceKind::kCuda) {
      if (cu::conv2d_forward_low(xl.cview(), wl.cview(), bias, y.view(), CU_GEOM(g), ctx)) return y;
    } else {
#if FRUGAL_HAS_DNNL
      cpu::conv2d_forward_bf16(xl.cview(), wl.cview(), bias, y.view(), g, ctx);
      return y;
#endif
    }
  }
  return conv2d(xl.to(DType::kF32, ctx), wl.to(DType::kF32, ctx), bias, p, ctx);
}

/// dx (f32) for dyl, wl in the low dtype.
Tensor conv2d_backward_input_low(const Tensor& dyl, const Tensor& wl, const Shape& input_shape,
                                 const Conv2dParams& p, const ExecContext& ctx) {
  const auto g = make_geometry(input_shape, wl.shape(), p);
  if (low_kernel_may_run(dyl.device(), dyl.dtype(), g)) {
    Tensor dx = Tensor::empty(input_shape, DType::kF32, dyl.device(), ctx);
    if (dyl.device().kind == DeviceKind::kCuda) {
      if (cu::conv2d_backward_data_low(dyl.cview(), wl.cview(), dx.view(), CU_GEOM(g), ctx)) {
        return dx;
      }
    } else {
#if FRUGAL_HAS_DNNL
      cpu::conv2d_backward_data_bf16(dyl.cview(), wl.cview(), dx.view(), g, ctx);
      return dx;
#endif
    }
  }
  return conv2d_backward_input(dyl.to(DType::kF32, ctx), wl.to(DType::kF32, ctx), input_shape, p,
                               ctx);
}

/// dw (f32, contiguous) += the weight gradient for dyl, xl in the low dtype.
void conv2d_backward_weight_low(const Tensor& dyl, const Tensor& xl, TensorView dw,
                                const Conv2dParams& p, const ExecContext& ctx) {
  const auto g = make_geometry(xl.shape(), dw.shape, p);
  if (low_kernel_may_run(dyl.device(), dyl.dtype(), g)) {
    if (dyl.device().kind == DeviceKind::kCuda) {
      if (cu::conv2d_backward_filter_low(dyl.cview(), xl.cview(), dw, CU_GEOM(g), ctx)) return;
    } else {
#if FRUGAL_HAS_DNNL
      cpu::conv2d_backward_filter_bf16(dyl.cview(), xl.cview(), dw, g, ctx);
      return;
#endif
    }
  }
  conv2d_backward_weight(dyl.to(DType::kF32, ctx), xl.to(DType::kF32, ctx), dw, p, ctx);
}

}  // namespace

Shape conv2d_output_shape(const Shape& input, const Shape& weight, const Conv2dParams& p) {
  const auto g = make_geometry(input, weight, p);
  return Shape{g.n, g.c_out, g.oh, g.ow};
}

Tensor conv2d(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
              const Conv2dParams& p, const ExecContext& ctx) {
  check_tensor(kOp, x, "input", 4);
  check_tensor(kOp, weight, "weight", 4);
  check_same_kind(kOp, x, "input", weight, "weight");
  const auto g = make_geometry(x.shape, weight.shape, p);
  const bool has_bias = bias.data != nullptr;
  if (has_bias) {
    check_tensor(kOp, bias, "bias", 1);
    check_same_kind(kOp, x, "input", bias, "bias");
    FRUGAL_REQUIRE(bias.shape[0] == g.c_out, kOp, "bias has shape ", bias.shape, ", expected (",
                   g.c_out, ")");
  }
  Tensor y = Tensor::empty(Shape{g.n, g.c_out, g.oh, g.ow}, x.dtype, x.device, ctx);
  if (g.n == 0) return y;
  Tensor hx, hw, hb;
  const ConstTensorView xc = contiguous_view(x, hx, ctx);
  const ConstTensorView wc = contiguous_view(weight, hw, ctx);
  const ConstTensorView bc = has_bias ? contiguous_view(bias, hb, ctx) : ConstTensorView{};
  switch (x.device.kind) {
    case DeviceKind::kCpu:
      cpu::conv2d_forward(xc, wc, bc, y.view(), g, ctx);
      break;
    case DeviceKind::kCuda:
      cu::conv2d_forward(xc, wc, bc, y.view(), CU_GEOM(g), ctx);
      break;
  }
  return y;
}

Tensor conv2d_backward_input(ConstTensorView grad_out, ConstTensorView weight,
                             const Shape& input_shape, const Conv2dParams& p,
                             const ExecContext& ctx) {
  check_tensor(kOp, grad_out, "grad_out", 4);
  check_tensor(kOp, weight, "weight", 4);
  check_same_kind(kOp, grad_out, "grad_out", weight, "weight");
  const auto g = make_geometry(input_shape, weight.shape, p);
  check_grad_out(grad_out, g);
  Tensor dx = Tensor::empty(input_shape, grad_out.dtype, grad_out.device, ctx);
  if (g.n == 0) return dx;
  Tensor hdy, hw;
  const ConstTensorView dyc = contiguous_view(grad_out, hdy, ctx);
  const ConstTensorView wc = contiguous_view(weight, hw, ctx);
  switch (grad_out.device.kind) {
    case DeviceKind::kCpu:
      cpu::conv2d_backward_data(dyc, wc, dx.view(), g, ctx);
      break;
    case DeviceKind::kCuda:
      cu::conv2d_backward_data(dyc, wc, dx.view(), CU_GEOM(g), ctx);
      break;
  }
  return dx;
}

void conv2d_backward_weight(ConstTensorView grad_out, ConstTensorView x, TensorView grad_weight,
                            const Conv2dParams& p, const ExecContext& ctx) {
  check_tensor(kOp, grad_out, "grad_out", 4);
  check_tensor(kOp, x, "input", 4);
  check_tensor(kOp, grad_weight, "grad_weight", 4);
  check_same_kind(kOp, grad_out, "grad_out", x, "input");
  check_same_kind(kOp, grad_out, "grad_out", grad_weight, "grad_weight");
  FRUGAL_REQUIRE(grad_weight.is_contiguous(), kOp, "grad_weight must be contiguous");
  const auto g = make_geometry(x.shape, grad_weight.shape, p);
  check_grad_out(grad_out, g);
  if (g.n == 0) return;
  Tensor hdy, hx;
  const ConstTensorView dyc = contiguous_view(grad_out, hdy, ctx);
  const ConstTensorView xc = contiguous_view(x, hx, ctx);
  switch (x.device.kind) {
    case DeviceKind::kCpu:
      cpu::conv2d_backward_filter(dyc, xc, grad_weight, g, ctx);
      break;
    case DeviceKind::kCuda:
      cu::conv2d_backward_filter(dyc, xc, grad_weight, CU_GEOM(g), ctx);
      break;
  }
}

void conv2d_backward_bias(ConstTensorView grad_out, TensorView grad_bias, const ExecContext& ctx) {
  check_tensor(kOp, grad_out, "grad_out", 4);
  check_tensor(kOp, grad_bias, "grad_bias", 1);
  check_same_kind(kOp, grad_out, "grad_out", grad_bias, "grad_bias");
  FRUGAL_REQUIRE(grad_bias.shape[0] == grad_out.shape[1], kOp, "grad_bias has shape ",
                 grad_bias.shape, " but grad_out has ", grad_out.shape[1], " channels");
  FRUGAL_REQUIRE(grad_bias.is_contiguous(), kOp, "grad_bias must be contiguous");
  const int64_t n = grad_out.shape[0], c = grad_out.shape[1];
  const int64_t hw = grad_out.shape[2] * grad_out.shape[3];
  if (n * hw == 0) return;
  Tensor hdy;
  const ConstTensorView dyc = contiguous_view(grad_out, hdy, ctx);
  switch (grad_out.device.kind) {
    case DeviceKind::kCpu:
      cpu::conv2d_backward_bias(dyc, grad_bias, n, c, hw, ctx);
      break;
    case DeviceKind::kCuda:
      cu::conv2d_backward_bias(dyc, grad_bias, ctx);
      break;
  }
}

// ---- Conv2d layer -----------------------------------------------------------------------------

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, Size2 kernel, const Conv2dOptions& opt,
               uint64_t seed, DType dtype)
    : in_channels_(in_channels),
      out_channels_(out_channels),
      kernel_(kernel),
      params_(opt.params()) {
  constexpr const char* op = "Conv2d";
  FRUGAL_REQUIRE(in_channels > 0 && out_channels > 0, op, "channels must be positive, got in ",
                 in_channels, ", out ", out_channels);
  FRUGAL_REQUIRE(kernel.h > 0 && kernel.w > 0, op, "kernel must be positive, got (", kernel.h, ", ",
                 kernel.w, ")");
  FRUGAL_REQUIRE(opt.groups >= 1 && in_channels % opt.groups == 0 && out_channels % opt.groups == 0,
                 op, "groups ", opt.groups, " must divide in_channels ", in_channels,
                 " and out_channels ", out_channels);
  FRUGAL_REQUIRE(opt.stride.h >= 1 && opt.stride.w >= 1 && opt.dilation.h >= 1 &&
                     opt.dilation.w >= 1 && opt.padding.h >= 0 && opt.padding.w >= 0,
                 op, "stride and dilation must be >= 1 and padding >= 0");
  FRUGAL_REQUIRE(dtype == DType::kF32 || dtype == DType::kF64, op, "dtype ", dtype_name(dtype),
                 " is not supported (f32, f64)");
  const Shape wshape{out_channels, in_channels / opt.groups, kernel.h, kernel.w};
  // PyTorch's default: kaiming_uniform(a = sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the
  // weight, and the same bound for the bias.
  const double fan_in = static_cast<double>(in_channels / opt.groups * kernel.h * kernel.w);
  const float bound = static_cast<float>(1.0 / std::sqrt(fan_in));
  ExecContext init;
  init.seed = seed;
  Tensor w = Tensor::empty(wshape, dtype);
  fill_uniform(w.view(), -bound, bound, init);
  weight_ = &register_parameter("weight", std::move(w));
  if (opt.bias) {
    init.offset = philox_counters(wshape.numel());
    Tensor b = Tensor::empty(Shape{out_channels}, dtype);
    fill_uniform(b.view(), -bound, bound, init);
    bias_ = &register_parameter("bias", std::move(b));
  }
}

Tensor Conv2d::forward(const Tensor& x) {
  FRUGAL_REQUIRE(x.rank() == 4, "Conv2d", "input must have rank 4 (N, C, H, W), got shape ",
                 x.shape());
  FRUGAL_REQUIRE(x.dim(1) == in_channels_, "Conv2d", "input has ", x.dim(1), " channels, expected ",
                 in_channels_);
  const ConstTensorView bias = bias_ != nullptr ? bias_->value.cview() : ConstTensorView{};
  const Tensor& w = weight_->value;
  // Under autocast an input may arrive in the low dtype (a GELU's output): it is the rounded
  // operand already, or, when the policy keeps convolutions in f32, converted back exactly.
  const DType conv_low = amp::autocast_dtype(amp::OpClass::kConv);
  const bool low_input = x.dtype() != DType::kF32 && x.dtype() == conv_low;
  low_ =
      (x.dtype() == DType::kF32 || low_input) && w.dtype() == DType::kF32 ? conv_low : DType::kF32;
  if (low_ == DType::kF32) {
    const Tensor xf = amp::autocast_fp32(x, ctx_);
    Tensor y = conv2d(xf, w, bias, params_, ctx_);
    input_ = xf;
    w_used_ = Tensor();
    return y;
  }
  // Autocast: the operands rounded to the low dtype, the low-precision convolution (fp32
  // accumulation, f32 output; see conv2d_low).
  const Tensor xl = low_input ? x.contiguous(ctx_) : amp::to_low(x, low_, ctx_);
  w_used_ = w_copy_.get(w, low_, "Conv2d", 1.f, ctx_);
  Tensor hb;
  const ConstTensorView bc = bias.data != nullptr ? contiguous_view(bias, hb, ctx_) : bias;
  Tensor y = conv2d_low(xl, w_used_, bc, params_, ctx_);
  input_ = amp::saved_activation_dtype() == low_ ? xl : xl.to(DType::kF32, ctx_);
  return y;
}

Tensor Conv2d::backward(const Tensor& grad_in) {
  FRUGAL_REQUIRE(input_.defined(), "Conv2d", "backward called before forward");
  const Tensor grad_out = amp::autocast_fp32(grad_in, ctx_);  // may arrive in the low dtype
  if (low_ == DType::kF32) {
    if (weight_->trainable) {
      conv2d_backward_weight(grad_out, input_, weight_->grad.view(), params_, ctx_);
    }
    if (bias_ != nullptr && bias_->trainable)
      conv2d_backward_bias(grad_out, bias_->grad.view(), ctx_);
    return conv2d_backward_input(grad_out, weight_->value, input_.shape(), params_, ctx_);
  }
  FRUGAL_REQUIRE(grad_out.defined() && grad_out.dtype() == DType::kF32, "Conv2d",
                 "grad_out must be f32");
  if (bias_ != nullptr && bias_->trainable)
    conv2d_backward_bias(grad_out, bias_->grad.view(), ctx_);
  FRUGAL_REQUIRE(grad_out.shape() == conv2d_output_shape(input_.shape(), w_used_.shape(), params_),
                 "Conv2d", "grad_out has shape ", grad_out.shape(), ", expected ",
                 conv2d_output_shape(input_.shape(), w_used_.shape(), params_));
  const Tensor gl = amp::to_low(grad_out, low_, ctx_);
  if (weight_->trainable) {
    // input_ holds the rounded input, in f32 when activations are not saved in low: exact.
    const Tensor xl = input_.dtype() == low_ ? input_ : input_.to(low_, ctx_);
    conv2d_backward_weight_low(gl, xl, weight_->grad.view(), params_, ctx_);
  }
  Tensor gx = conv2d_backward_input_low(gl, w_used_, input_.shape(), params_, ctx_);
  input_ = Tensor();  // mixed precision releases the saved tensors (see Linear::backward)
  w_used_ = Tensor();
  return gx;
}

}  // namespace frugal::nn
