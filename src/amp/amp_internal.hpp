#pragma once
// CPU backends of the amp module (src/amp/cpu/*.cpp).
#include "frugal/amp/cast.hpp"
#include "frugal/core/tensor.hpp"

namespace frugal::cpu {

/// amp::cast on the CPU: writes `out` (contiguous, format of amp/cast_bits.hpp), returns the amax
/// of x when opt.compute_amax (else 0).
float amp_cast(ConstTensorView x, TensorView out, int format, const amp::CastOptions& opt,
               const ExecContext& ctx);

/// g *= inv_scale in place (contiguous f32); returns true when g held a non-finite value.
bool amp_unscale_check(TensorView g, float inv_scale, const ExecContext& ctx);

}  // namespace frugal::cpu
