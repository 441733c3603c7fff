#pragma once
/// Scalar reference implementations of linear and logarithmic quantization and of the QAT
/// gradients (frugal/quant/*.hpp): plain loops over host copies, written from the formulas, not
/// from the fast paths. Tests compare every backend against them.
///
/// The division x / scale is done in float for f32 / f16 / bf16 data and in double for f64, as the
/// documented formula says: a tie x / s = k + 0.5 only exists in the precision it is computed in,
/// so codes can only be bit-identical when the reference divides in the same precision.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "frugal/core/philox.hpp"
#include "frugal/core/tensor.hpp"
#include "frugal/quant/log_quant.hpp"
#include "frugal/quant/qparams.hpp"
#include "frugal/quant/quantize.hpp"

namespace frugal::ref {

namespace quant_detail {

/// Index of the (scale, zero_point) of row-major element i of data shaped `shape`.
inline int64_t param_of(const Shape& shape, const quant::QuantSpec& spec, int64_t i) {
  if (spec.granularity == quant::Granularity::kPerTensor) return 0;
  const int a = spec.axis < 0 ? spec.axis + shape.rank() : spec.axis;
  // Multi-index of i.
  int64_t idx[kMaxRank];
  int64_t rest = i;
  for (int d = shape.rank() - 1; d >= 0; --d) {
    idx[d] = rest % shape[d];
    rest /= shape[d];
  }
  if (spec.granularity == quant::Granularity::kPerChannel) return idx[a];
  // Per group: the parameter tensor has shape[a] / group_size along a.
  idx[a] /= spec.group_size;
  int64_t k = 0;
  for (int d = 0; d < shape.rank(); ++d) {
    const int64_t extent = d == a ? shape[d] / spec.group_size : shape[d];
    k = k * extent + idx[d];
  }
  return k;
}

/// x / s in the precision of the data dtype.
inline double divide(double x, float s, DType t) {
  if (t == DType::kF64) return x / static_cast<double>(s);
  return static_cast<double>(static_cast<float>(x) / s);
}

}  // namespace quant_detail

/// Codes clamp(rint(x / s) + z, qmin, qmax) (half to even; stochastic: floor(x / s + u) with u
/// element i of the Philox stream (seed, offset)), one int per element, row-major. NaN -> z.
inline std::vector<int32_t> quantize_codes(const Tensor& x, const quant::QuantSpec& spec,
                                           const quant::QParams& qp, uint64_t seed = 0,
                                           uint64_t offset = 0) {
  const std::vector<double> xv = x.to_vector<double>();
  const std::vector<float> sv = qp.scale.to_vector<float>();
  const std::vector<int32_t> zv = qp.zero_point.to_vector<int32_t>();
  const double qmin = static_cast<double>(spec.qmin()), qmax = static_cast<double>(spec.qmax());
  std::vector<int32_t> out(xv.size());
  for (std::size_t i = 0; i < xv.size(); ++i) {
    const int64_t k = quant_detail::param_of(x.shape(), spec, static_cast<int64_t>(i));
    const double t = quant_detail::divide(xv[i], sv[k], x.dtype());
    double r;
    if (std::isnan(t)) {
      r = 0;
    } else if (spec.rounding == quant::Rounding::kHalfEven) {
      r = std::rint(t);  // half to even (default rounding mode)
    } else {
      const Uint4 b = philox_block(seed, offset, i);
      if (x.dtype() == DType::kF64) {
        r = std::floor(t + uniform01_f64(lane(b, static_cast<int>(i % 4))));
      } else {
        // float, as the backends add in the compute precision; clamp t first (as they do) so
        // that huge t stay huge.
        const float tf = static_cast<float>(std::clamp(t, qmin - zv[k], qmax - zv[k]));
        r = std::floor(static_cast<double>(tf + uniform01(lane(b, static_cast<int>(i % 4)))));
      }
    }
    out[i] = static_cast<int32_t>(std::clamp(r + zv[k], qmin, qmax));
  }
  return out;
}

/// The codes of q as ints, row-major, unpacking i4/u4 nibbles and 2-bit fields.
inline std::vector<int32_t> unpack_codes(const quant::QTensor& q) {
  const int64_t n = q.shape.numel();
  std::vector<int32_t> out(n);
  const Tensor c = q.codes.to(Device::cpu()).contiguous();
  const auto* bytes = static_cast<const uint8_t*>(c.data_ptr());
  const int bits = q.spec.bits;
  const int per = bits <= 2 ? 4 : (bits <= 4 ? 2 : 1);
  const int w = 8 / per;
  for (int64_t i = 0; i < n; ++i) {
    const unsigned field = (bytes[i / per] >> (w * (i % per))) & ((1u << w) - 1u);
    int v = static_cast<int>(field);
    if (q.spec.is_signed && v >= (1 << (w - 1))) v -= (1 << w);
    out[i] = v;
  }
  return out;
}

/// (code - z) * s per element, as double (the float product is exact in double, so rounding it
/// to float gives what the backends compute).
inline std::vector<double> dequantize(const std::vector<int32_t>& codes, const Shape& shape,
                                      const quant::QuantSpec& spec, const quant::QParams& qp) {
  const std::vector<float> sv = qp.scale.to_vector<float>();
  const std::vector<int32_t> zv = qp.zero_point.to_vector<int32_t>();
  std::vector<double> out(codes.size());
  for (std::size_t i = 0; i < codes.size(); ++i) {
    const int64_t k = quant_detail::param_of(shape, spec, static_cast<int64_t>(i));
    out[i] = static_cast<double>(codes[i] - zv[k]) * static_cast<double>(sv[k]);
  }
  return out;
}

/// STE gradient: dy where qmin <= x / s + z <= qmax (x / s in the data precision), else 0.
inline std::vector<double> ste_grad(const Tensor& dy, const Tensor& x, const quant::QuantSpec& spec,
                                    const quant::QParams& qp) {
  const std::vector<double> xv = x.to_vector<double>(), gv = dy.to_vector<double>();
  const std::vector<float> sv = qp.scale.to_vector<float>();
  const std::vector<int32_t> zv = qp.zero_point.to_vector<int32_t>();
  std::vector<double> out(xv.size());
  for (std::size_t i = 0; i < xv.size(); ++i) {
    const int64_t k = quant_detail::param_of(x.shape(), spec, static_cast<int64_t>(i));
    const double u = quant_detail::divide(xv[i], sv[k], x.dtype()) + zv[k];
    out[i] = (u >= spec.qmin() && u <= spec.qmax()) ? gv[i] : 0.0;
  }
  return out;
}

/// LSQ scale gradient per scale (Esser et al. 2020, eq. 3), times g (0: 1 / sqrt(n * qmax)).
inline std::vector<double> lsq_scale_grad(const Tensor& dy, const Tensor& x,
                                          const quant::QuantSpec& spec, const quant::QParams& qp,
                                          double g = 0.0) {
  const std::vector<double> xv = x.to_vector<double>(), gv = dy.to_vector<double>();
  const std::vector<float> sv = qp.scale.to_vector<float>();
  const std::vector<int32_t> zv = qp.zero_point.to_vector<int32_t>();
  std::vector<double> sum(sv.size(), 0.0);
  std::vector<int64_t> count(sv.size(), 0);
  const double qmin = static_cast<double>(spec.qmin()), qmax = static_cast<double>(spec.qmax());
  for (std::size_t i = 0; i < xv.size(); ++i) {
    const int64_t k = quant_detail::param_of(x.shape(), spec, static_cast<int64_t>(i));
    const double t = quant_detail::divide(xv[i], sv[k], x.dtype());
    const double u = t + zv[k];
    double d = 0;
    if (u < qmin) {
      d = qmin - zv[k];
    } else if (u > qmax) {
      d = qmax - zv[k];
    } else if (!std::isnan(u)) {
      d = std::rint(t) - t;
    }
    sum[k] += gv[i] * d;
    ++count[k];
  }
  for (std::size_t k = 0; k < sum.size(); ++k) {
    const double f = g > 0 ? g : 1.0 / std::sqrt(static_cast<double>(count[k]) * qmax);
    sum[k] *= f;
  }
  return sum;
}

/// The nonzero magnitudes of a log spec, ascending: base^e for e in [e_min, e_max], as floats.
inline std::vector<double> log_levels(const quant::LogQuantSpec& spec) {
  std::vector<double> lv;
  for (int e = spec.e_min; e <= spec.e_max; ++e) {
    const double ex = spec.base == quant::LogBase::kTwo ? e : e / 2.0;
    lv.push_back(static_cast<double>(static_cast<float>(std::pow(2.0, ex))));
  }
  return lv;
}

/// Log code of one value by a linear scan for the nearest level (ties to the larger magnitude).
inline uint8_t log_code(double x, const quant::LogQuantSpec& spec) {
  if (std::isnan(x) || x == 0.0) return 0;
  const std::vector<double> lv = log_levels(spec);
  const double a = std::fabs(x);
  int best = 0;  // 0 = zero
  double best_err = a;
  for (std::size_t k = 0; k < lv.size(); ++k) {
    const double err = std::fabs(a - lv[k]);
    if (err <= best_err) {  // <=: ties go to the larger level
      best = static_cast<int>(k) + 1;
      best_err = err;
    }
  }
  if (std::isinf(a)) best = static_cast<int>(lv.size());
  if (best == 0) return 0;  // one zero code, whatever the sign
  const int sign = x < 0 ? 1 : 0;
  return static_cast<uint8_t>((sign << (spec.bits - 1)) | best);
}

}  // namespace frugal::ref
