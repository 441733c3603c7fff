#pragma once
// CPU backends of the amp module (src/amp/cpu/*.cpp).
#include <cstdint>
#include <vector>

#include "frugal/amp/cast.hpp"
#include "frugal/core/tensor.hpp"

namespace frugal::cpu {

/// amp::cast on the CPU: writes `out` (contiguous, format of amp/cast_bits.hpp), returns the amax
/// of x when opt.compute_amax (else 0).
float amp_cast(ConstTensorView x, TensorView out, int format, const amp::CastOptions& opt,
               const ExecContext& ctx);

/// Multi-tensor unscale-and-check: every g *= inv_scale in place (contiguous f32, one parallel
/// pass over the chunks of all tensors); element t of the result is 1 when grads[t] held a
/// non-finite value.
std::vector<uint8_t> amp_unscale_check_multi(const std::vector<TensorView>& grads, float inv_scale,
                                             const ExecContext& ctx);

}  // namespace frugal::cpu
