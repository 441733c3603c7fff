// Validation and device dispatch of 2-D pooling (include/frugal/nn/pool.hpp), and the pooling
// layers. Backends get contiguous tensors (see nn/spatial_internal.hpp).
#include "frugal/nn/pool.hpp"

#include "core/copy.hpp"
#include "cu_ops.hpp"
#include "frugal/amp/autocast.hpp"
#include "nn/spatial_internal.hpp"

namespace frugal::nn {
namespace {

/// `v` itself when contiguous, otherwise a contiguous copy kept alive by `holder`.
ConstTensorView contiguous_view(ConstTensorView v, Tensor& holder, const ExecContext& ctx) {
  if (v.is_contiguous()) return v;
  holder = Tensor::empty(v.shape, v.dtype, v.device, ctx);
  detail::copy(v, holder.view(), ctx);
  return holder.cview();
}

void check_float4(const char* op, ConstTensorView t, const char* name) {
  FRUGAL_REQUIRE(t.rank() == 4, op, name, " must have rank 4 (N, C, H, W), got shape ", t.shape);
  FRUGAL_REQUIRE(t.dtype == DType::kF32 || t.dtype == DType::kF64, op, name, " has dtype ",
                 dtype_name(t.dtype), "; expected f32 or f64");
  FRUGAL_REQUIRE(t.data != nullptr || t.numel() == 0, op, name, " has null data");
}

detail::Pool2dGeometry make_geometry(const char* op, const Shape& xs, const Pool2dParams& p) {
  FRUGAL_REQUIRE(xs.rank() == 4, op, "input must have rank 4 (N, C, H, W), got shape ", xs);
  FRUGAL_REQUIRE(xs[1] > 0 && xs[2] > 0 && xs[3] > 0, op,
                 "input has an empty channel or spatial extent: ", xs);
  FRUGAL_REQUIRE(p.kernel.h >= 1 && p.kernel.w >= 1, op, "kernel must be >= 1, got (", p.kernel.h,
                 ", ", p.kernel.w, ")");
  const Size2 stride{p.stride.h == 0 ? p.kernel.h : p.stride.h,
                     p.stride.w == 0 ? p.kernel.w : p.stride.w};
  FRUGAL_REQUIRE(stride.h >= 1 && stride.w >= 1, op,
                 "stride must be >= 1 (or 0 for the kernel), got (", p.stride.h, ", ", p.stride.w,
                 ")");
  FRUGAL_REQUIRE(p.padding.h >= 0 && p.padding.w >= 0 && 2 * p.padding.h <= p.kernel.h &&
                     2 * p.padding.w <= p.kernel.w,
                 op, "padding (", p.padding.h, ", ", p.padding.w,
                 ") must be >= 0 and at most half the kernel (", p.kernel.h, ", ", p.kernel.w, ")");
  FRUGAL_REQUIRE(p.kernel.h <= xs[2] + 2 * p.padding.h && p.kernel.w <= xs[3] + 2 * p.padding.w, op,
                 "kernel (", p.kernel.h, ", ", p.kernel.w, ") is larger than the padded input (",
                 xs[2] + 2 * p.padding.h, ", ", xs[3] + 2 * p.padding.w, ")");
  detail::Pool2dGeometry g{};
  g.n = xs[0];
  g.c = xs[1];
  g.h = xs[2];
  g.w = xs[3];
  g.kh = p.kernel.h;
  g.kw = p.kernel.w;
  g.stride_h = stride.h;
  g.stride_w = stride.w;
  g.pad_h = p.padding.h;
  g.pad_w = p.padding.w;
  g.oh = (g.h + 2 * g.pad_h - g.kh) / g.stride_h + 1;
  g.ow = (g.w + 2 * g.pad_w - g.kw) / g.stride_w + 1;
  return g;
}

void check_grad_out(const char* op, ConstTensorView dy, const detail::Pool2dGeometry& g) {
  const Shape want{g.n, g.c, g.oh, g.ow};
  FRUGAL_REQUIRE(dy.shape == want, op, "grad_out has shape ", dy.shape, ", expected ", want);
}

#define CU_WINDOW(g) g.kh, g.kw, g.stride_h, g.stride_w, g.pad_h, g.pad_w

}  // namespace

Shape pool2d_output_shape(const Shape& input, const Pool2dParams& p) {
  const auto g = make_geometry("pool2d", input, p);
  return Shape{g.n, g.c, g.oh, g.ow};
}

MaxPool2dResult max_pool2d(ConstTensorView x, const Pool2dParams& p, const ExecContext& ctx) {
  constexpr const char* op = "max_pool2d";
  check_float4(op, x, "input");
  const auto g = make_geometry(op, x.shape, p);
  MaxPool2dResult r;
  r.output = Tensor::empty(Shape{g.n, g.c, g.oh, g.ow}, x.dtype, x.device, ctx);
  r.indices = Tensor::empty(Shape{g.n, g.c, g.oh, g.ow}, DType::kI64, x.device, ctx);
  if (g.n == 0) return r;
  Tensor hx;
  const ConstTensorView xc = contiguous_view(x, hx, ctx);
  switch (x.device.kind) {
    case DeviceKind::kCpu:
      cpu::max_pool2d_forward(xc, r.output, r.indices, g, ctx);
      break;
    case DeviceKind::kCuda:
      cu::max_pool2d_forward(xc, r.output, r.indices, CU_WINDOW(g), ctx);
      break;
  }
  return r;
}

Tensor max_pool2d_backward(ConstTensorView grad_out, ConstTensorView indices,
                           const Shape& input_shape, const Pool2dParams& p,
                           const ExecContext& ctx) {
  constexpr const char* op = "max_pool2d_backward";
  check_float4(op, grad_out, "grad_out");
  const auto g = make_geometry(op, input_shape, p);
  check_grad_out(op, grad_out, g);
  FRUGAL_REQUIRE(indices.dtype == DType::kI64, op, "indices have dtype ", dtype_name(indices.dtype),
                 "; expected i64");
  FRUGAL_REQUIRE(indices.shape == grad_out.shape, op, "indices have shape ", indices.shape,
                 " but grad_out has shape ", grad_out.shape);
  FRUGAL_REQUIRE(indices.device == grad_out.device, op, "indices are on ", indices.device.str(),
                 " but grad_out is on ", grad_out.device.str());
  Tensor dx = Tensor::empty(input_shape, grad_out.dtype, grad_out.device, ctx);
  if (g.n == 0) return dx;
  Tensor hdy, hi;
  const ConstTensorView dyc = contiguous_view(grad_out, hdy, ctx);
  const ConstTensorView ic = contiguous_view(indices, hi, ctx);
  switch (grad_out.device.kind) {
    case DeviceKind::kCpu:
      cpu::max_pool2d_backward(dyc, ic, dx, g, ctx);
      break;
    case DeviceKind::kCuda:
      cu::max_pool2d_backward(dyc, ic, dx, CU_WINDOW(g), ctx);
      break;
  }
  return dx;
}

Tensor avg_pool2d(ConstTensorView x, const Pool2dParams& p, bool count_include_pad,
                  const ExecContext& ctx) {
  constexpr const char* op = "avg_pool2d";
  check_float4(op, x, "input");
  const auto g = make_geometry(op, x.shape, p);
  Tensor y = Tensor::empty(Shape{g.n, g.c, g.oh, g.ow}, x.dtype, x.device, ctx);
  if (g.n == 0) return y;
  Tensor hx;
  const ConstTensorView xc = contiguous_view(x, hx, ctx);
  switch (x.device.kind) {
    case DeviceKind::kCpu:
      cpu::avg_pool2d_forward(xc, y, g, count_include_pad, ctx);
      break;
    case DeviceKind::kCuda:
      cu::avg_pool2d_forward(xc, y, CU_WINDOW(g), count_include_pad, ctx);
      break;
  }
  return y;
}

Tensor avg_pool2d_backward(ConstTensorView grad_out, const Shape& input_shape,
                           const Pool2dParams& p, bool count_include_pad, const ExecContext& ctx) {
  constexpr const char* op = "avg_pool2d_backward";
  check_float4(op, grad_out, "grad_out");
  const auto g = make_geometry(op, input_shape, p);
  check_grad_out(op, grad_out, g);
  Tensor dx = Tensor::empty(input_shape, grad_out.dtype, grad_out.device, ctx);
  if (g.n == 0) return dx;
  Tensor hdy;
  const ConstTensorView dyc = contiguous_view(grad_out, hdy, ctx);
  switch (grad_out.device.kind) {
    case DeviceKind::kCpu:
      cpu::avg_pool2d_backward(dyc, dx, g, count_include_pad, ctx);
      break;
    case DeviceKind::kCuda:
      cu::avg_pool2d_backward(dyc, dx, CU_WINDOW(g), count_include_pad, ctx);
      break;
  }
  return dx;
}

Tensor global_avg_pool2d(ConstTensorView x, const ExecContext& ctx) {
  constexpr const char* op = "global_avg_pool2d";
  check_float4(op, x, "input");
  FRUGAL_REQUIRE(x.shape[1] > 0 && x.shape[2] > 0 && x.shape[3] > 0, op,
                 "input has an empty channel or spatial extent: ", x.shape);
  const Pool2dParams p{Size2(x.shape[2], x.shape[3]), Size2(x.shape[2], x.shape[3]), 0};
  return avg_pool2d(x, p, true, ctx).reshape(Shape{x.shape[0], x.shape[1]});
}

Tensor global_avg_pool2d_backward(ConstTensorView grad_out, const Shape& input_shape,
                                  const ExecContext& ctx) {
  constexpr const char* op = "global_avg_pool2d_backward";
  FRUGAL_REQUIRE(input_shape.rank() == 4, op, "input shape must have rank 4, got ", input_shape);
  FRUGAL_REQUIRE(grad_out.rank() == 2 && grad_out.shape[0] == input_shape[0] &&
                     grad_out.shape[1] == input_shape[1],
                 op, "grad_out has shape ", grad_out.shape, ", expected (", input_shape[0], ", ",
                 input_shape[1], ")");
  FRUGAL_REQUIRE(input_shape[1] > 0 && input_shape[2] > 0 && input_shape[3] > 0, op,
                 "input has an empty channel or spatial extent: ", input_shape);
  const Pool2dParams p{Size2(input_shape[2], input_shape[3]), Size2(input_shape[2], input_shape[3]),
                       0};
  ConstTensorView dy4 = grad_out;
  dy4.shape = Shape{input_shape[0], input_shape[1], 1, 1};
  dy4.strides = Strides{grad_out.strides[0], grad_out.strides[1], 1, 1};
  check_float4(op, dy4, "grad_out");
  return avg_pool2d_backward(dy4, input_shape, p, true, ctx);
}

// ---- layers ----------------------------------------------------------------------------------

MaxPool2d::MaxPool2d(Size2 kernel, Size2 stride, Size2 padding) : params_{kernel, stride, padding} {
  FRUGAL_REQUIRE(kernel.h >= 1 && kernel.w >= 1 && stride.h >= 0 && stride.w >= 0 &&
                     padding.h >= 0 && padding.w >= 0,
                 "MaxPool2d", "kernel must be >= 1, stride >= 0 and padding >= 0");
}

// Under autocast the pools take a low-precision input (a GELU's output) as f32.
Tensor MaxPool2d::forward(const Tensor& in) {
  const Tensor x = amp::autocast_fp32(in, ctx_);
  MaxPool2dResult r = max_pool2d(x, params_, ctx_);
  indices_ = std::move(r.indices);
  input_shape_ = x.shape();
  return std::move(r.output);
}

Tensor MaxPool2d::backward(const Tensor& grad_out) {
  FRUGAL_REQUIRE(indices_.defined(), "MaxPool2d", "backward called before forward");
  return max_pool2d_backward(amp::autocast_fp32(grad_out, ctx_), indices_, input_shape_, params_,
                             ctx_);
}

AvgPool2d::AvgPool2d(Size2 kernel, Size2 stride, Size2 padding, bool count_include_pad)
    : params_{kernel, stride, padding}, count_include_pad_(count_include_pad) {
  FRUGAL_REQUIRE(kernel.h >= 1 && kernel.w >= 1 && stride.h >= 0 && stride.w >= 0 &&
                     padding.h >= 0 && padding.w >= 0,
                 "AvgPool2d", "kernel must be >= 1, stride >= 0 and padding >= 0");
}

Tensor AvgPool2d::forward(const Tensor& in) {
  const Tensor x = amp::autocast_fp32(in, ctx_);
  Tensor y = avg_pool2d(x, params_, count_include_pad_, ctx_);
  input_shape_ = x.shape();
  has_input_ = true;
  return y;
}

Tensor AvgPool2d::backward(const Tensor& grad_out) {
  FRUGAL_REQUIRE(has_input_, "AvgPool2d", "backward called before forward");
  return avg_pool2d_backward(amp::autocast_fp32(grad_out, ctx_), input_shape_, params_,
                             count_include_pad_, ctx_);
}

Tensor GlobalAvgPool2d::forward(const Tensor& in) {
  const Tensor x = amp::autocast_fp32(in, ctx_);
  Tensor y = global_avg_pool2d(x, ctx_);
  input_shape_ = x.shape();
  has_input_ = true;
  return y;
}

Tensor GlobalAvgPool2d::backward(const Tensor& grad_out) {
  FRUGAL_REQUIRE(has_input_, "GlobalAvgPool2d", "backward called before forward");
  return global_avg_pool2d_backward(amp::autocast_fp32(grad_out, ctx_), input_shape_, ctx_);
}

}  // namespace frugal::nn
