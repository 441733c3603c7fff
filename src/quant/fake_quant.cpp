// Validation and dispatch of the QAT gradients (include/frugal/quant/fake_quant.hpp). The backends
// write the STE input gradient and, for LSQ, per-element scale terms; the scale gradient is their
// sum over the elements of each scale (frugal::sum: double accumulation in a fixed order).
#include "frugal/quant/fake_quant.hpp"

#include <cmath>

#include "cu_ops.hpp"
#include "frugal/core/ops.hpp"
#include "frugal/quant/quantize.hpp"
#include "quant/quant_internal.hpp"

namespace frugal::quant {
namespace {

using detail::CheckedLinear;
using detail::LinearPlan;

CheckedLinear check_backward(const char* op, ConstTensorView grad_out, ConstTensorView x,
                             const QuantSpec& spec, const QParams& qparams) {
  detail::check_float_data(op, x, "x");
  detail::check_float_data(op, grad_out, "grad_out");
  FRUGAL_REQUIRE(grad_out.shape == x.shape, op, "grad_out has shape ", grad_out.shape,
                 " but x has shape ", x.shape);
  FRUGAL_REQUIRE(grad_out.dtype == x.dtype, op, "grad_out has dtype ", dtype_name(grad_out.dtype),
                 " but x has dtype ", dtype_name(x.dtype));
  FRUGAL_REQUIRE(grad_out.device == x.device, op, "grad_out is on ", grad_out.device.str(),
                 " but x is on ", x.device.str());
  return detail::check_linear(op, x.shape, x.device, spec, qparams);
}

void run_backward(ConstTensorView grad_out, ConstTensorView x, const CheckedLinear& c,
                  TensorView grad_x, TensorView terms, const ExecContext& ctx) {
  Tensor hg, hx;
  const ConstTensorView cg = detail::contiguous_view(grad_out, hg, ctx);
  const ConstTensorView cx = detail::contiguous_view(x, hx, ctx);
  const LinearPlan& p = c.plan;
  switch (x.device.kind) {
    case DeviceKind::kCpu:
      cpu::fake_quantize_backward(cg, cx, c.scale, c.zero_point, p, grad_x, terms, ctx);
      break;
    case DeviceKind::kCuda:
      cu::fake_quantize_backward(cg, cx, c.scale, c.zero_point, p.granularity, p.outer, p.len,
                                 p.inner, p.group, p.qmin, p.qmax, grad_x, terms, ctx);
      break;
  }
}

}  // namespace

Tensor fake_quantize_backward_ste(ConstTensorView grad_out, ConstTensorView x,
                                  const QuantSpec& spec, const QParams& qparams,
                                  const ExecContext& ctx) {
  const CheckedLinear c = check_backward("fake_quantize_backward_ste", grad_out, x, spec, qparams);
  Tensor gx = Tensor::empty(x.shape, x.dtype, x.device, ctx);
  TensorView none;
  none.data = nullptr;
  none.device = x.device;
  run_backward(grad_out, x, c, gx.view(), none, ctx);
  return gx;
}

LsqGrads fake_quantize_backward_lsq(ConstTensorView grad_out, ConstTensorView x,
                                    const QuantSpec& spec, const QParams& qparams,
                                    double grad_scale_factor, const ExecContext& ctx) {
  const char* op = "fake_quantize_backward_lsq";
  const CheckedLinear c = check_backward(op, grad_out, x, spec, qparams);
  FRUGAL_REQUIRE(std::isfinite(grad_scale_factor) && grad_scale_factor >= 0.0, op,
                 "grad_scale_factor ", grad_scale_factor, " must be finite and >= 0");
  const LinearPlan& p = c.plan;
  FRUGAL_REQUIRE(p.qmax > 0, op, "LSQ needs qmax > 0");
  const DType tdt = x.dtype == DType::kF64 ? DType::kF64 : DType::kF32;
  LsqGrads g;
  g.grad_x = Tensor::empty(x.shape, x.dtype, x.device, ctx);
  Tensor terms = Tensor::empty(x.shape, tdt, x.device, ctx);
  run_backward(grad_out, x, c, g.grad_x.view(), terms.view(), ctx);

  // Sum the terms over the elements of each scale. terms is contiguous: view it around the axis.
  Tensor summed;
  int64_t per_scale = 0;
  switch (p.granularity) {
    case 0:
      summed = frugal::sum(terms.cview(), ctx);
      per_scale = x.numel();
      break;
    case 1: {
      const Tensor v = terms.reshape({p.outer, p.len, p.inner});
      const Tensor r = frugal::sum(v.cview(), 2, false, ctx);  // (outer, len)
      summed = frugal::sum(r.cview(), 0, false, ctx);          // (len)
      per_scale = p.outer * p.inner;
      break;
    }
    default: {
      const Tensor v = terms.reshape({p.outer, p.len / p.group, p.group, p.inner});
      summed = frugal::sum(v.cview(), 2, false, ctx);  // (outer, len / group, inner)
      per_scale = p.group;
      break;
    }
  }
  const double factor =
      grad_scale_factor > 0.0
          ? grad_scale_factor
          : 1.0 / std::sqrt(static_cast<double>(per_scale) * static_cast<double>(p.qmax));
  // Scale in double (frugal::scale rounds alpha to the compute type), then round once to f32.
  const Tensor scaled = frugal::scale(summed.to(DType::kF64, ctx).cview(), factor, ctx);
  g.grad_scale = scaled.to(DType::kF32, ctx).reshape(c.scale.shape());
  return g;
}

}  // namespace frugal::quant
