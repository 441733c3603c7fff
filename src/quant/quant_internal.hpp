#pragma once
// Backend contract of linear and logarithmic quantization (include/frugal/quant/*.hpp). Internal
// header, usable from host code and from .cu files.
//
// The dispatch files (src/quant/{quantize,fake_quant,log_quant}.cpp) validate, allocate and hand
// the backends contiguous tensors: x / codes / out / grads contiguous, scale (f32) and zero_point
// (i32) contiguous and shaped as qparams_shape(). Element i (row-major) of x uses parameter
// param_index(plan, i). The per-element math is the inline functions below, shared by the CPU
// loops and the CUDA kernels, so both produce identical codes.
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "frugal/core/config.hpp"
#include "frugal/core/tensor.hpp"

#if defined(__FAST_MATH__)
#error "frugal's quantization relies on IEEE arithmetic (NaN tests, exact division): no -ffast-math"
#endif

namespace frugal::quant::detail {

/// Everything a backend needs to know about a linear spec applied to one tensor.
/// x is seen as (outer, len, inner) around the spec's axis.
struct LinearPlan {
  int granularity = 0;  ///< Granularity as int: 0 per tensor, 1 per channel, 2 per group
  int64_t outer = 1, len = 1, inner = 1;
  int64_t group = 1;  ///< group size (per group), else 1
  int64_t qmin = 0, qmax = 0;
  int rounding = 0;  ///< Rounding as int: 0 half even, 1 stochastic
  int bits = 8;
  bool is_signed = true;
};

/// The plan of a linear spec from the scalars a backend entry point receives (src/cu_ops.def
/// passes the plan as scalars); is_signed follows from qmin.
inline LinearPlan make_linear_plan(int granularity, int64_t outer, int64_t len, int64_t inner,
                                   int64_t group, int64_t qmin, int64_t qmax, int rounding = 0,
                                   int bits = 8) {
  LinearPlan p;
  p.granularity = granularity;
  p.outer = outer;
  p.len = len;
  p.inner = inner;
  p.group = group;
  p.qmin = qmin;
  p.qmax = qmax;
  p.rounding = rounding;
  p.bits = bits;
  p.is_signed = qmin < 0;
  return p;
}

/// Index into the (contiguous) scale / zero_point of row-major element i.
FRUGAL_INLINE int64_t param_index(const LinearPlan& p, int64_t i) {
  if (p.granularity == 0) return 0;
  const int64_t r = i / p.inner;
  const int64_t l = r % p.len;
  if (p.granularity == 1) return l;
  const int64_t in = i - r * p.inner;
  const int64_t o = r / p.len;
  return (o * (p.len / p.group) + l / p.group) * p.inner + in;
}

/// rint(t): round half to even in the default rounding mode. On the host std::rint, which GCC
/// vectorizes (roundps / vrndscaleps) in the branch-free loops below when SSE4.1 or later is
/// enabled (the build uses -march=native); std::nearbyint and fmin / fmax clamps do not vectorize.
template <class A>
FRUGAL_INLINE A round_half_even(A t) {
#if defined(__CUDA_ARCH__)
  return rint(t);
#else
  return std::rint(t);
#endif
}

/// The quantized integer minus the zero point, q = clamp(rint(x / s), lo, hi) with
/// lo = qmin - z and hi = qmax - z; NaN x gives 0 (code = zero point). Integer-valued A.
template <class A>
FRUGAL_INLINE A quant_offset(A x, A s, A lo, A hi) {
  A t = x / s;
  t = t != t ? A(0) : t;
  t = t < lo ? lo : t;
  t = t > hi ? hi : t;
  return round_half_even(t);
}

/// The straight-through backward of fake quantization for element x with scale s and zero point
/// z, in the accumulation type A of every backend: the input gradient (g inside the clipping
/// range [qmin, qmax] of x / s + z, else 0; NaN is outside) and, through `lsq_term`, the element's
/// term of the LSQ scale gradient g * d, d = round(x / s) - x / s inside, qmin - z below, qmax - z
/// above, 0 for NaN.
template <class A>
FRUGAL_INLINE A fake_quant_grad(A g, A x, A s, A z, A qmin, A qmax, A* lsq_term) {
  const A t = x / s;
  const A u = t + z;
  const bool inside = u >= qmin && u <= qmax;  // false for NaN
  if (lsq_term != nullptr) {
    A d;
    if (inside) {
      d = round_half_even(t) - t;
    } else if (u < qmin) {
      d = qmin - z;
    } else if (u > qmax) {
      d = qmax - z;
    } else {
      d = A(0);  // NaN
    }
    *lsq_term = g * d;
  }
  return inside ? g : A(0);
}

/// Stochastic counterpart: clamp(floor(x / s + u), lo, hi), u in [0, 1); NaN x gives 0.
template <class A>
FRUGAL_INLINE A quant_offset_stochastic(A x, A s, A lo, A hi, A u) {
  A t = x / s;
  t = t != t ? A(0) : t;
  t = t < lo ? lo : t;
  t = t > hi ? hi : t;
#if !defined(__CUDA_ARCH__)
  using std::floor;
#endif
  A r = floor(t + u);
  return r > hi ? hi : r;  // t + u may round up to hi + 1
}

/// Log quantization constants shared by the backends.
struct LogPlan {
  int bits = 4;
  int e_min = 0, e_max = 0;
  int sqrt2 = 0;  ///< 1 for base sqrt(2)
};

/// Level of index m >= 1: base^(e_min + m - 1) as a float (exact power of two, or float(sqrt 2)
/// times one).
FRUGAL_INLINE float log_level_value(const LogPlan& p, int m) {
  const int e = p.e_min + m - 1;
#if !defined(__CUDA_ARCH__)
  using std::ldexp;
#define FRUGAL_LDEXPF ldexp
#else
#define FRUGAL_LDEXPF ldexpf
#endif
  if (!p.sqrt2) return FRUGAL_LDEXPF(1.0f, e);
  // floor division by 2 that is correct for negative e.
  const int h = (e >= 0) ? e / 2 : -((-e + 1) / 2);
  return (e - 2 * h) == 0 ? FRUGAL_LDEXPF(1.0f, h) : FRUGAL_LDEXPF(1.41421353816986083984375f, h);
#undef FRUGAL_LDEXPF
}

/// The u8 code of x: sign bit (bits - 1) plus level index (0 = zero). Nearest level by value,
/// ties to the larger magnitude; NaN -> 0; Inf -> largest level.
FRUGAL_INLINE uint8_t log_code(const LogPlan& p, double x) {
  if (x != x || x == 0.0) return 0;
  const uint8_t sign = x < 0 ? static_cast<uint8_t>(1u << (p.bits - 1)) : uint8_t{0};
  const double a = x < 0 ? -x : x;
  const int k_max = p.e_max - p.e_min + 1;
  const double l_min = log_level_value(p, 1);
  if (a < 0.5 * l_min) return 0;
  if (a >= static_cast<double>(log_level_value(p, k_max))) {
    return static_cast<uint8_t>(sign | k_max);
  }
  // Candidate from the binary exponent (a = f * 2^ex, f in [0.5, 1)), then exact correction so
  // that level(k) <= a < level(k + 1) with k in [0, k_max - 1] (level(0) = 0).
#if !defined(__CUDA_ARCH__)
  using std::frexp;
#endif
  int ex = 0;
  (void)frexp(a, &ex);
  int k = (p.sqrt2 ? 2 * (ex - 1) : ex - 1) - p.e_min + 1;
  k = k < 0 ? 0 : (k > k_max - 1 ? k_max - 1 : k);
  while (k > 0 && static_cast<double>(log_level_value(p, k)) > a) --k;
  while (k < k_max - 1 && static_cast<double>(log_level_value(p, k + 1)) <= a) ++k;
  const double lo = k == 0 ? 0.0 : static_cast<double>(log_level_value(p, k));
  const double hi = static_cast<double>(log_level_value(p, k + 1));
  const int m = (a - lo < hi - a) ? k : k + 1;  // the midpoint is exact in double
  return static_cast<uint8_t>(sign | m);
}

/// The float value of a log code.
FRUGAL_INLINE float log_value(const LogPlan& p, uint8_t code) {
  const int m = code & ((1 << (p.bits - 1)) - 1);
  if (m == 0) return 0.0f;
  const float v = log_level_value(p, m);
  return (code >> (p.bits - 1)) & 1 ? -v : v;
}

}  // namespace frugal::quant::detail

namespace frugal::quant {
struct QuantSpec;
struct QParams;
}  // namespace frugal::quant

namespace frugal::quant::detail {

/// Throws InvalidArgument "[op] ..." unless bits is 2..8 and the enums are valid.
void check_spec(const char* op, const QuantSpec& spec);

/// Validated linear arguments: the plan, and the qparams as contiguous tensors of the expected
/// shape on `device`.
struct CheckedLinear {
  LinearPlan plan;
  Tensor scale;
  Tensor zero_point;
};

/// Validates spec, data shape and qparams (shape, dtype, device, values) for data of `shape` on
/// `device`.
CheckedLinear check_linear(const char* op, const Shape& shape, Device device, const QuantSpec& spec,
                           const QParams& qparams);

/// Validates the data tensor of a linear op: float dtype (f32, f64, f16, bf16), non-empty.
void check_float_data(const char* op, ConstTensorView x, const char* name);

/// compute_qparams with messages that start with "[op]".
QParams compute_qparams_checked(const char* op, ConstTensorView min, ConstTensorView max,
                                const QuantSpec& spec, const ExecContext& ctx);

/// `v` if contiguous, else a contiguous copy kept alive in `holder`.
ConstTensorView contiguous_view(ConstTensorView v, Tensor& holder, const ExecContext& ctx);

}  // namespace frugal::quant::detail

namespace frugal::cpu {

/// codes = quantize(x); codes has the packed dtype of plan.bits (i8/u8, i4/u4, u8 with 4 per byte).
void quantize_linear(ConstTensorView x, ConstTensorView scale, ConstTensorView zero_point,
                     const quant::detail::LinearPlan& plan, TensorView codes,
                     const ExecContext& ctx);
/// out (f32) = (code - zero_point) * scale.
void dequantize_linear(ConstTensorView codes, ConstTensorView scale, ConstTensorView zero_point,
                       const quant::detail::LinearPlan& plan, TensorView out,
                       const ExecContext& ctx);
/// out (x's dtype) = dequantize(quantize(x)).
void fake_quantize_linear(ConstTensorView x, ConstTensorView scale, ConstTensorView zero_point,
                          const quant::detail::LinearPlan& plan, TensorView out,
                          const ExecContext& ctx);
/// grad_x (x's dtype) = STE gradient; when scale_terms has data, also the per-element LSQ scale
/// terms dy * dx'/ds (f32, or f64 for f64 x), x's shape.
void fake_quantize_backward(ConstTensorView grad_out, ConstTensorView x, ConstTensorView scale,
                            ConstTensorView zero_point, const quant::detail::LinearPlan& plan,
                            TensorView grad_x, TensorView scale_terms, const ExecContext& ctx);
/// codes (u8) = log_code(x).
void log_quantize(ConstTensorView x, const quant::detail::LogPlan& plan, TensorView codes,
                  const ExecContext& ctx);
/// out (f32) = log_value(codes).
void log_dequantize(ConstTensorView codes, const quant::detail::LogPlan& plan, TensorView out,
                    const ExecContext& ctx);

}  // namespace frugal::cpu
