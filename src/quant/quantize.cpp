// Validation and device dispatch of linear quantization (include/frugal/quant/quantize.hpp).
// Backends receive contiguous tensors and a LinearPlan (src/quant/quant_internal.hpp).
#include "frugal/quant/quantize.hpp"

#include <cmath>
#include <vector>

#include "core/copy.hpp"
#include "cu_ops.hpp"
#include "frugal/core/ops.hpp"
#include "quant/quant_internal.hpp"

namespace frugal::quant {
namespace detail {

void check_spec(const char* op, const QuantSpec& spec) {
  FRUGAL_REQUIRE(spec.bits >= 2 && spec.bits <= 8, op, "bits ", spec.bits,
                 " outside the supported 2..8");
  FRUGAL_REQUIRE(static_cast<int>(spec.granularity) <= 2, op, "unknown granularity ",
                 static_cast<int>(spec.granularity));
  FRUGAL_REQUIRE(static_cast<int>(spec.rounding) <= 1, op, "unknown rounding ",
                 static_cast<int>(spec.rounding));
}

void check_float_data(const char* op, ConstTensorView x, const char* name) {
  const DType t = x.dtype;
  FRUGAL_REQUIRE(t == DType::kF32 || t == DType::kF64 || t == DType::kF16 || t == DType::kBF16, op,
                 name, " has dtype ", dtype_name(t), "; expected f32, f64, f16 or bf16");
  FRUGAL_REQUIRE(x.numel() > 0, op, name, " is empty (shape ", x.shape, ")");
  FRUGAL_REQUIRE(x.data != nullptr, op, name, " has null data");
}

ConstTensorView contiguous_view(ConstTensorView v, Tensor& holder, const ExecContext& ctx) {
  if (v.is_contiguous()) return v;
  holder = Tensor::empty(v.shape, v.dtype, v.device, ctx);
  frugal::detail::copy(v, holder.view(), ctx);
  return holder.cview();
}

namespace {

int normalize_axis(const char* op, int axis, int rank) {
  const int a = axis < 0 ? axis + rank : axis;
  FRUGAL_REQUIRE(a >= 0 && a < rank, op, "axis ", axis, " out of range for rank ", rank);
  return a;
}

/// The plan of `spec` on data of `shape` (axis and group size validated).
LinearPlan plan_of(const char* op, const Shape& shape, const QuantSpec& spec) {
  LinearPlan p;
  p.granularity = static_cast<int>(spec.granularity);
  p.qmin = spec.qmin();
  p.qmax = spec.qmax();
  p.rounding = static_cast<int>(spec.rounding);
  p.bits = spec.bits;
  p.is_signed = spec.is_signed;
  if (spec.granularity == Granularity::kPerTensor) {
    p.len = shape.numel();
    return p;
  }
  const int a = normalize_axis(op, spec.axis, shape.rank());
  for (int i = 0; i < a; ++i) p.outer *= shape[i];
  p.len = shape[a];
  for (int i = a + 1; i < shape.rank(); ++i) p.inner *= shape[i];
  if (spec.granularity == Granularity::kPerGroup) {
    FRUGAL_REQUIRE(spec.group_size > 0, op, "group size ", spec.group_size, " must be positive");
    FRUGAL_REQUIRE(p.len % spec.group_size == 0, op, "group size ", spec.group_size,
                   " does not divide axis ", spec.axis, " of length ", p.len);
    p.group = spec.group_size;
  }
  return p;
}

}  // namespace

CheckedLinear check_linear(const char* op, const Shape& shape, Device device, const QuantSpec& spec,
                           const QParams& qparams) {
  check_spec(op, spec);
  CheckedLinear c{plan_of(op, shape, spec), {}, {}};
  const Tensor& s = qparams.scale;
  const Tensor& z = qparams.zero_point;
  FRUGAL_REQUIRE(s.defined() && z.defined(), op, "qparams.scale / zero_point are undefined");
  FRUGAL_REQUIRE(s.dtype() == DType::kF32, op, "scale has dtype ", dtype_name(s.dtype()),
                 "; expected f32");
  FRUGAL_REQUIRE(z.dtype() == DType::kI32, op, "zero_point has dtype ", dtype_name(z.dtype()),
                 "; expected i32");
  FRUGAL_REQUIRE(s.device() == device && z.device() == device, op, "data is on ", device.str(),
                 " but scale / zero_point are on ", s.device().str(), " / ", z.device().str());
  const Shape want = qparams_shape(shape, spec);
  auto shape_ok = [&](const Tensor& t) {
    // A per-tensor parameter may be given as {} or {1}.
    if (want.rank() == 0) return t.numel() == 1 && t.rank() <= 1;
    return t.shape() == want;
  };
  FRUGAL_REQUIRE(shape_ok(s), op, "scale has shape ", s.shape(), "; expected ", want);
  FRUGAL_REQUIRE(shape_ok(z), op, "zero_point has shape ", z.shape(), "; expected ", want);
  c.scale = s.contiguous().reshape(want);
  c.zero_point = z.contiguous().reshape(want);

  // Values: a scale that is not finite and positive, or a zero point outside [qmin, qmax], would
  // silently give garbage codes.
  const std::vector<float> sv = c.scale.to_vector<float>();
  const std::vector<int32_t> zv = c.zero_point.to_vector<int32_t>();
  for (std::size_t k = 0; k < sv.size(); ++k) {
    FRUGAL_REQUIRE(std::isfinite(sv[k]) && sv[k] > 0.0f, op, "scale ", sv[k], " at index ", k,
                   " is not finite and positive");
  }
  for (std::size_t k = 0; k < zv.size(); ++k) {
    FRUGAL_REQUIRE(zv[k] >= c.plan.qmin && zv[k] <= c.plan.qmax, op, "zero point ", zv[k],
                   " at index ", k, " outside [", c.plan.qmin, ", ", c.plan.qmax, "]");
  }
  return c;
}

}  // namespace detail

namespace {

using detail::CheckedLinear;
using detail::LinearPlan;

bool same_device(ConstTensorView a, Device d) { return a.device == d; }

void check_codes_out(const char* op, TensorView codes, const Shape& shape, Device device,
                     const QuantSpec& spec) {
  const DType want = code_dtype(spec.bits, spec.is_signed);
  FRUGAL_REQUIRE(codes.dtype == want, op, "codes have dtype ", dtype_name(codes.dtype),
                 "; expected ", dtype_name(want));
  const Shape ws = codes_shape(shape, spec);
  FRUGAL_REQUIRE(codes.shape == ws, op, "codes have shape ", codes.shape, "; expected ", ws);
  FRUGAL_REQUIRE(same_device(codes, device), op, "codes are on ", codes.device.str(),
                 " but the data is on ", device.str());
  FRUGAL_REQUIRE(codes.is_contiguous(), op, "codes must be contiguous");
  FRUGAL_REQUIRE(codes.data != nullptr, op, "codes have null data");
}

void run_quantize(ConstTensorView x, const CheckedLinear& c, TensorView codes,
                  const ExecContext& ctx) {
  Tensor hx;
  const ConstTensorView cx = detail::contiguous_view(x, hx, ctx);
  const LinearPlan& p = c.plan;
  switch (x.device.kind) {
    case DeviceKind::kCpu:
      cpu::quantize_linear(cx, c.scale, c.zero_point, p, codes, ctx);
      break;
    case DeviceKind::kCuda:
      cu::quantize_linear(cx, c.scale, c.zero_point, p.granularity, p.outer, p.len, p.inner,
                          p.group, p.qmin, p.qmax, p.rounding, p.bits, codes, ctx);
      break;
  }
}

void check_qtensor(const char* op, const QTensor& q) {
  FRUGAL_REQUIRE(q.codes.defined(), op, "q.codes is undefined");
  FRUGAL_REQUIRE(q.shape.numel() > 0, op, "q is empty (shape ", q.shape, ")");
  const DType want = code_dtype(q.spec.bits, q.spec.is_signed);
  FRUGAL_REQUIRE(q.codes.dtype() == want, op, "codes have dtype ", dtype_name(q.codes.dtype()),
                 "; expected ", dtype_name(want), " for ", q.spec.bits, "-bit ",
                 q.spec.is_signed ? "signed" : "unsigned", " codes");
  const Shape ws = codes_shape(q.shape, q.spec);
  FRUGAL_REQUIRE(q.codes.shape() == ws, op, "codes have shape ", q.codes.shape(), "; expected ",
                 ws);
}

}  // namespace

int64_t QTensor::nbytes() const {
  int64_t n = codes.defined() ? codes.nbytes() : 0;
  if (qparams.scale.defined()) n += qparams.scale.nbytes();
  if (qparams.zero_point.defined()) n += qparams.zero_point.nbytes();
  return n;
}

Shape qparams_shape(const Shape& shape, const QuantSpec& spec) {
  switch (spec.granularity) {
    case Granularity::kPerTensor:
      return Shape{};
    case Granularity::kPerChannel: {
      const int a = spec.axis < 0 ? spec.axis + shape.rank() : spec.axis;
      FRUGAL_REQUIRE(a >= 0 && a < shape.rank(), "qparams_shape", "axis ", spec.axis,
                     " out of range for rank ", shape.rank());
      return Shape{shape[a]};
    }
    case Granularity::kPerGroup: {
      const int a = spec.axis < 0 ? spec.axis + shape.rank() : spec.axis;
      FRUGAL_REQUIRE(a >= 0 && a < shape.rank(), "qparams_shape", "axis ", spec.axis,
                     " out of range for rank ", shape.rank());
      FRUGAL_REQUIRE(spec.group_size > 0 && shape[a] % spec.group_size == 0, "qparams_shape",
                     "group size ", spec.group_size, " does not divide axis ", spec.axis,
                     " of length ", shape[a]);
      Shape s = shape;
      s[a] = shape[a] / spec.group_size;
      return s;
    }
  }
  return Shape{};
}

Shape codes_shape(const Shape& shape, const QuantSpec& spec) {
  if (spec.bits <= 2) return Shape{(shape.numel() + 3) / 4};
  return shape;
}

QTensor quantize(ConstTensorView x, const QuantSpec& spec, const QParams& qparams,
                 const ExecContext& ctx) {
  const char* op = "quantize";
  detail::check_float_data(op, x, "x");
  const CheckedLinear c = detail::check_linear(op, x.shape, x.device, spec, qparams);
  QTensor q;
  q.codes = Tensor::empty(codes_shape(x.shape, spec), code_dtype(spec.bits, spec.is_signed),
                          x.device, ctx);
  q.spec = spec;
  q.qparams = QParams{c.scale, c.zero_point};
  q.shape = x.shape;
  run_quantize(x, c, q.codes.view(), ctx);
  return q;
}

void quantize_into(ConstTensorView x, const QuantSpec& spec, const QParams& qparams,
                   TensorView codes, const ExecContext& ctx) {
  const char* op = "quantize_into";
  detail::check_float_data(op, x, "x");
  const CheckedLinear c = detail::check_linear(op, x.shape, x.device, spec, qparams);
  check_codes_out(op, codes, x.shape, x.device, spec);
  run_quantize(x, c, codes, ctx);
}

namespace {

void run_dequantize(const char* op, const QTensor& q, TensorView out, const ExecContext& ctx) {
  check_qtensor(op, q);
  const CheckedLinear c = detail::check_linear(op, q.shape, q.codes.device(), q.spec, q.qparams);
  Tensor hc;
  const ConstTensorView codes = detail::contiguous_view(q.codes.cview(), hc, ctx);
  const LinearPlan& p = c.plan;
  switch (q.codes.device().kind) {
    case DeviceKind::kCpu:
      cpu::dequantize_linear(codes, c.scale, c.zero_point, p, out, ctx);
      break;
    case DeviceKind::kCuda:
      cu::dequantize_linear(codes, c.scale, c.zero_point, p.granularity, p.outer, p.len, p.inner,
                            p.group, p.qmin, p.qmax, p.bits, out, ctx);
      break;
  }
}

}  // namespace

Tensor dequantize(const QTensor& q, const ExecContext& ctx) {
  check_qtensor("dequantize", q);
  Tensor out = Tensor::empty(q.shape, DType::kF32, q.codes.device(), ctx);
  run_dequantize("dequantize", q, out.view(), ctx);
  return out;
}

void dequantize_into(const QTensor& q, TensorView out, const ExecContext& ctx) {
  const char* op = "dequantize_into";
  FRUGAL_REQUIRE(out.dtype == DType::kF32, op, "out has dtype ", dtype_name(out.dtype),
                 "; expected f32");
  FRUGAL_REQUIRE(out.shape == q.shape, op, "out has shape ", out.shape, "; expected ", q.shape);
  FRUGAL_REQUIRE(out.is_contiguous() && out.data != nullptr, op, "out must be contiguous");
  FRUGAL_REQUIRE(q.codes.defined() && out.device == q.codes.device(), op, "out is on ",
                 out.device.str(), " but the codes are elsewhere");
  run_dequantize(op, q, out, ctx);
}

namespace {

void run_fake(const char* op, ConstTensorView x, const QuantSpec& spec, const QParams& qparams,
              TensorView out, const ExecContext& ctx) {
  const CheckedLinear c = detail::check_linear(op, x.shape, x.device, spec, qparams);
  Tensor hx;
  const ConstTensorView cx = detail::contiguous_view(x, hx, ctx);
  const LinearPlan& p = c.plan;
  switch (x.device.kind) {
    case DeviceKind::kCpu:
      cpu::fake_quantize_linear(cx, c.scale, c.zero_point, p, out, ctx);
      break;
    case DeviceKind::kCuda:
      cu::fake_quantize_linear(cx, c.scale, c.zero_point, p.granularity, p.outer, p.len, p.inner,
                               p.group, p.qmin, p.qmax, p.rounding, out, ctx);
      break;
  }
}

}  // namespace

Tensor fake_quantize(ConstTensorView x, const QuantSpec& spec, const QParams& qparams,
                     const ExecContext& ctx) {
  detail::check_float_data("fake_quantize", x, "x");
  Tensor out = Tensor::empty(x.shape, x.dtype, x.device, ctx);
  run_fake("fake_quantize", x, spec, qparams, out.view(), ctx);
  return out;
}

void fake_quantize_into(ConstTensorView x, const QuantSpec& spec, const QParams& qparams,
                        TensorView out, const ExecContext& ctx) {
  const char* op = "fake_quantize_into";
  detail::check_float_data(op, x, "x");
  FRUGAL_REQUIRE(out.dtype == x.dtype && out.shape == x.shape && out.device == x.device, op,
                 "out must match x in dtype, shape and device");
  FRUGAL_REQUIRE(out.is_contiguous() && out.data != nullptr, op, "out must be contiguous");
  run_fake(op, x, spec, qparams, out, ctx);
}

// ---- min-max convenience ----------------------------------------------------------------------

namespace {

/// Min and max of x at spec's granularity, shaped as qparams_shape(x.shape, spec).
std::pair<Tensor, Tensor> minmax_of(const char* op, ConstTensorView x, const QuantSpec& spec,
                                    const ExecContext& ctx) {
  detail::check_float_data(op, x, "x");
  detail::check_spec(op, spec);
  Tensor hx;
  const ConstTensorView cx = detail::contiguous_view(x, hx, ctx);
  const Shape pshape = [&] {
    // qparams_shape validates axis and group size; rethrow its message under this op's name.
    try {
      return qparams_shape(x.shape, spec);
    } catch (const Error& e) {
      std::string m = e.what();
      m = m.substr(m.find(']') + 2);
      frugal::detail::fail(e.code(), op, m);
    }
  }();
  if (spec.granularity == Granularity::kPerTensor) {
    return {frugal::min(cx, ctx), frugal::max(cx, ctx)};
  }
  const int a = spec.axis < 0 ? spec.axis + x.shape.rank() : spec.axis;
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < a; ++i) outer *= x.shape[i];
  for (int i = a + 1; i < x.shape.rank(); ++i) inner *= x.shape[i];
  const int64_t len = x.shape[a];
  // Views of the contiguous data (no copies); the reductions keep x's dtype.
  Tensor base = Tensor::wrap(const_cast<void*>(cx.data), cx.shape, cx.dtype, cx.device);
  if (spec.granularity == Granularity::kPerChannel) {
    const Tensor v = base.reshape({outer, len, inner});
    auto reduce = [&](auto fn) {
      const Tensor r = fn(v.cview(), 2, false, ctx);  // (outer, len)
      return fn(r.cview(), 0, false, ctx);            // (len)
    };
    Tensor mn = reduce([](ConstTensorView t, int ax, bool k, const ExecContext& c) {
      return frugal::min(t, ax, k, c);
    });
    Tensor mx = reduce([](ConstTensorView t, int ax, bool k, const ExecContext& c) {
      return frugal::max(t, ax, k, c);
    });
    return {mn, mx};
  }
  const int64_t g = spec.group_size;
  const Tensor v = base.reshape({outer, len / g, g, inner});
  return {frugal::min(v.cview(), 2, false, ctx).reshape(pshape),
          frugal::max(v.cview(), 2, false, ctx).reshape(pshape)};
}

QParams minmax_qparams_op(const char* op, ConstTensorView x, const QuantSpec& spec,
                          const ExecContext& ctx) {
  auto [mn, mx] = minmax_of(op, x, spec, ctx);
  return detail::compute_qparams_checked(op, mn.cview(), mx.cview(), spec, ctx);
}

QTensor quantize_minmax(const char* op, ConstTensorView x, const QuantSpec& spec,
                        const ExecContext& ctx) {
  const QParams p = minmax_qparams_op(op, x, spec, ctx);
  return quantize(x, spec, p, ctx);
}

}  // namespace

QParams minmax_qparams(ConstTensorView x, const QuantSpec& spec, const ExecContext& ctx) {
  return minmax_qparams_op("minmax_qparams", x, spec, ctx);
}

QTensor quantize_per_tensor(ConstTensorView x, QuantSpec spec, const ExecContext& ctx) {
  spec.granularity = Granularity::kPerTensor;
  return quantize_minmax("quantize_per_tensor", x, spec, ctx);
}

QTensor quantize_per_channel(ConstTensorView x, int axis, QuantSpec spec, const ExecContext& ctx) {
  spec.granularity = Granularity::kPerChannel;
  spec.axis = axis;
  return quantize_minmax("quantize_per_channel", x, spec, ctx);
}

QTensor quantize_per_group(ConstTensorView x, int axis, int64_t group_size, QuantSpec spec,
                           const ExecContext& ctx) {
  spec.granularity = Granularity::kPerGroup;
  spec.axis = axis;
  spec.group_size = group_size;
  return quantize_minmax("quantize_per_group", x, spec, ctx);
}

// ---- error report -----------------------------------------------------------------------------

QuantError quantization_error(ConstTensorView x, ConstTensorView approx, const ExecContext& ctx) {
  const char* op = "quantization_error";
  detail::check_float_data(op, x, "x");
  detail::check_float_data(op, approx, "approx");
  FRUGAL_REQUIRE(x.shape == approx.shape, op, "x has shape ", x.shape, " but approx has shape ",
                 approx.shape);
  Tensor hx = Tensor::empty(x.shape, DType::kF64);
  Tensor ha = Tensor::empty(x.shape, DType::kF64);
  hx.copy_from(x, ctx);
  ha.copy_from(approx, ctx);
  const double* a = hx.data<double>();
  const double* b = ha.data<double>();
  const int64_t n = x.numel();
  double max_abs = 0, se = 0, sx = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = std::fabs(a[i] - b[i]);
    max_abs = (d > max_abs || d != d) ? d : max_abs;
    se += d * d;
    sx += a[i] * a[i];
  }
  QuantError e;
  e.max_abs = max_abs;
  e.rms = std::sqrt(se / static_cast<double>(n));
  e.rel_rms = se == 0.0 ? 0.0 : std::sqrt(se / sx);
  return e;
}

}  // namespace frugal::quant
