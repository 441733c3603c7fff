#pragma once
// Backend contract of the calibration observers (include/frugal/quant/observer.hpp). Internal
// header, usable from host code and from .cu files. The observers hand the backends a contiguous
// f32 batch; cpu:: results are host values, cu:: results are written to device tensors.
#include <math.h>

#include <cstdint>

#include "frugal/core/config.hpp"
#include "frugal/core/tensor.hpp"

namespace frugal::detail {

/// Histogram counter of x: bin floor(|x| * inv_width) (clamped to bins - 1) for x >= 0, that plus
/// `bins` for x < 0. inv_width is a power of two, so the product is exact and every backend agrees.
FRUGAL_INLINE int observer_bin(float x, float inv_width, int bins) {
  float a = fabsf(x) * inv_width;
  const float top = static_cast<float>(bins - 1);
  a = a < top ? a : top;
  const int j = static_cast<int>(a);
  return x < 0.f ? bins + j : j;
}

/// Min, max and the number of NaN / Inf elements of a batch (min/max over the finite ones).
struct MinMaxStats {
  float min;
  float max;
  int64_t nonfinite;
};

}  // namespace frugal::detail

namespace frugal::cpu {

/// Min / max / non-finite count of a contiguous f32 tensor (non-empty).
detail::MinMaxStats observer_minmax(ConstTensorView x, const ExecContext& ctx);
/// Per index c of the middle axis of x viewed as (outer, len, inner): min[c], max[c] (len each);
/// returns the number of NaN / Inf elements.
int64_t observer_minmax_axis(ConstTensorView x, int64_t outer, int64_t len, int64_t inner,
                             float* min, float* max, const ExecContext& ctx);
/// hist (2 * bins, i64) += the counts of x by detail::observer_bin.
void observer_histogram(ConstTensorView x, float inv_width, int bins, int64_t* hist,
                        const ExecContext& ctx);

}  // namespace frugal::cpu
