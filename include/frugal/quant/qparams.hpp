#pragma once
/// Linear (uniform) quantization: the spec of a format and the parameters that map reals to codes.
///   code = clamp(rint(x / scale) + zero_point, qmin, qmax)     (rint: half to even)
///   x'   = (code - zero_point) * scale
#include <cstdint>

#include "frugal/core/tensor.hpp"

namespace frugal::quant {

/// Which elements share one (scale, zero_point).
enum class Granularity : uint8_t {
  kPerTensor,   ///< one pair for the whole tensor
  kPerChannel,  ///< one pair per index along `axis`
  kPerGroup,    ///< one pair per `group_size` consecutive elements along `axis` (the reduction axis)
};

/// How x / scale is rounded to an integer.
enum class Rounding : uint8_t {
  kHalfEven,    ///< round half to even, as torch.quantize_per_tensor
  kStochastic,  ///< floor(x / scale + u), u ~ U[0, 1) from Philox (ExecContext seed and offset)
};

/// A linear quantization format.
struct QuantSpec {
  int bits = 8;                  ///< 2..8
  bool symmetric = true;         ///< zero_point = 0 (signed) or 2^(bits-1) (unsigned)
  bool is_signed = true;         ///< codes in [-2^(b-1), 2^(b-1)-1], else [0, 2^b - 1]
  bool narrow_range = false;     ///< signed codes in [-(2^(b-1)-1), 2^(b-1)-1] (e.g. [-127, 127])
  Granularity granularity = Granularity::kPerTensor;
  int axis = 0;                  ///< channel axis (kPerChannel) or reduction axis (kPerGroup)
  int64_t group_size = 0;        ///< kPerGroup: 32, 64, 128 ...; must divide the axis length
  Rounding rounding = Rounding::kHalfEven;

  int64_t qmin() const {
    if (!is_signed) return 0;
    return narrow_range ? -((int64_t{1} << (bits - 1)) - 1) : -(int64_t{1} << (bits - 1));
  }
  int64_t qmax() const {
    return is_signed ? (int64_t{1} << (bits - 1)) - 1 : (int64_t{1} << bits) - 1;
  }
};

/// Per-tensor, per-channel or per-group parameters: `scale` f32 and `zero_point` i32, each of
/// shape {} (per tensor), {C} (per channel) or the data's shape with `axis` divided by group_size.
struct QParams {
  Tensor scale;
  Tensor zero_point;
};

/// Parameters that map [min, max] (per tensor/channel/group, shaped as QParams) onto the codes of
/// `spec`; the range is first widened to include 0 so that 0 is exactly representable. The rule of
/// PyTorch's MinMaxObserver (_calculate_qparams), in float32:
/// Symmetric: scale = max(|min|, |max|) / ((qmax - qmin) / 2), zero_point = 0 (signed) or
/// 2^(bits-1) (unsigned; 128 for 8 bits, as torch's quint8). Affine: scale = (max - min) /
/// (qmax - qmin), zero_point = clamp(qmin - rint(min / scale), qmin, qmax). The scale is at least
/// FLT_EPSILON (torch's eps), so a zero range gives scale = 2^-23 (every element is 0).
/// min / max: float dtypes, one shape and device (the result lives there; CUDA inputs are read on
/// the host). NaN / Inf or min > max: InvalidArgument "[compute_qparams] ...".
QParams compute_qparams(ConstTensorView min, ConstTensorView max, const QuantSpec& spec,
                        const ExecContext& ctx = {});

}  // namespace frugal::quant
