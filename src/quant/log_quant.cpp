// Validation and dispatch of logarithmic quantization (include/frugal/quant/log_quant.hpp).
#include "frugal/quant/log_quant.hpp"

#include <cmath>

#include "cu_ops.hpp"
#include "quant/quant_internal.hpp"

namespace frugal::quant {
namespace {

using detail::LogPlan;

LogPlan check_log_spec(const char* op, const LogQuantSpec& spec) {
  FRUGAL_REQUIRE(spec.bits >= 2 && spec.bits <= 8, op, "bits ", spec.bits,
                 " outside the supported 2..8");
  FRUGAL_REQUIRE(spec.base == LogBase::kTwo || spec.base == LogBase::kSqrt2, op, "unknown base ",
                 static_cast<int>(spec.base));
  FRUGAL_REQUIRE(spec.e_min <= spec.e_max, op, "empty exponent range [", spec.e_min, ", ",
                 spec.e_max, "]");
  const int lo = log_exponent_min(spec.base), hi = log_exponent_max(spec.base);
  FRUGAL_REQUIRE(spec.e_min >= lo && spec.e_max <= hi, op, "exponent range [", spec.e_min, ", ",
                 spec.e_max, "] outside [", lo, ", ", hi, "]");
  const int capacity = (1 << (spec.bits - 1)) - 1;
  FRUGAL_REQUIRE(spec.levels() <= capacity, op, spec.levels(), " levels do not fit in ", spec.bits,
                 " bits (at most ", capacity, ")");
  return LogPlan{spec.bits, spec.e_min, spec.e_max, spec.base == LogBase::kSqrt2 ? 1 : 0};
}

}  // namespace

int log_exponent_min(LogBase base) { return base == LogBase::kTwo ? -126 : -252; }
int log_exponent_max(LogBase base) { return base == LogBase::kTwo ? 127 : 255; }

LogQuantSpec log_spec_for_range(double abs_max, int bits, LogBase base) {
  const char* op = "log_spec_for_range";
  FRUGAL_REQUIRE(std::isfinite(abs_max) && abs_max > 0.0, op, "abs_max ", abs_max,
                 " must be finite and > 0");
  FRUGAL_REQUIRE(bits >= 2 && bits <= 8, op, "bits ", bits, " outside the supported 2..8");
  const double per = base == LogBase::kTwo ? 1.0 : 0.5;  // log2 of the base
  // Smallest e with base^e >= abs_max (checked exactly against the float levels below).
  int e = static_cast<int>(std::ceil(std::log2(abs_max) / per));
  LogQuantSpec s;
  s.bits = bits;
  s.base = base;
  const int lo = log_exponent_min(base), hi = log_exponent_max(base);
  auto level = [&](int ex) {
    return static_cast<double>(detail::log_level_value(LogPlan{bits, ex, ex, per < 1.0}, 1));
  };
  e = std::clamp(e, lo, hi);
  while (e > lo && level(e - 1) >= abs_max) --e;
  while (e < hi && level(e) < abs_max) ++e;
  s.e_max = e;
  s.e_min = std::max(lo, e - ((1 << (bits - 1)) - 1) + 1);
  return s;
}

float log_level(const LogQuantSpec& spec, int m) {
  const LogPlan p = check_log_spec("log_level", spec);
  FRUGAL_REQUIRE(m >= 1 && m <= spec.levels(), "log_level", "level index ", m, " outside [1, ",
                 spec.levels(), "]");
  return detail::log_level_value(p, m);
}

LogQTensor log_quantize(ConstTensorView x, const LogQuantSpec& spec, const ExecContext& ctx) {
  const char* op = "log_quantize";
  const LogPlan p = check_log_spec(op, spec);
  detail::check_float_data(op, x, "x");
  LogQTensor q;
  q.codes = Tensor::empty(x.shape, DType::kU8, x.device, ctx);
  q.spec = spec;
  q.shape = x.shape;
  Tensor hx;
  const ConstTensorView cx = detail::contiguous_view(x, hx, ctx);
  switch (x.device.kind) {
    case DeviceKind::kCpu:
      cpu::log_quantize(cx, p, q.codes.view(), ctx);
      break;
    case DeviceKind::kCuda:
      cu::log_quantize(cx, p.bits, p.e_min, p.e_max, p.sqrt2, q.codes.view(), ctx);
      break;
  }
  return q;
}

Tensor log_dequantize(const LogQTensor& q, const ExecContext& ctx) {
  const char* op = "log_dequantize";
  const LogPlan p = check_log_spec(op, q.spec);
  FRUGAL_REQUIRE(q.codes.defined() && q.codes.dtype() == DType::kU8, op,
                 "codes must be a u8 tensor");
  FRUGAL_REQUIRE(q.codes.shape() == q.shape && q.shape.numel() > 0, op, "codes have shape ",
                 q.codes.shape(), "; expected non-empty ", q.shape);
  Tensor out = Tensor::empty(q.shape, DType::kF32, q.codes.device(), ctx);
  Tensor hc;
  const ConstTensorView cc = detail::contiguous_view(q.codes.cview(), hc, ctx);
  switch (q.codes.device().kind) {
    case DeviceKind::kCpu:
      cpu::log_dequantize(cc, p, out.view(), ctx);
      break;
    case DeviceKind::kCuda:
      cu::log_dequantize(cc, p.bits, p.e_min, p.e_max, p.sqrt2, out.view(), ctx);
      break;
  }
  return out;
}

QuantError log_quant_error(ConstTensorView x, const LogQTensor& q, const ExecContext& ctx) {
  const Tensor approx = log_dequantize(q, ctx);
  return quantization_error(x, approx.cview(), ctx);
}

}  // namespace frugal::quant
