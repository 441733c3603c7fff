#pragma once
// Backends of the random fills (include/frugal/core/random.hpp). Internal header.
// Arguments are validated by the public entry; dst has a dtype of f32, f64, f16 or bf16.
#include "frugal/core/tensor.hpp"

namespace frugal::cpu {
/// dst[i] = lo + (hi - lo) * u_i for the Philox stream (ctx.seed, ctx.offset).
void fill_uniform(TensorView dst, float lo, float hi, const ExecContext& ctx);
/// dst[i] = mean + std * z_i, z_i standard normal by Box-Muller on the same stream.
void fill_normal(TensorView dst, float mean, float std, const ExecContext& ctx);
}  // namespace frugal::cpu
