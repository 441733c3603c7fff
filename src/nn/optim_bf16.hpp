#pragma once
// The per-element AdamW update with bf16 moments, shared by the host loop (src/nn/cpu/optim.cpp)
// and the CUDA kernel (kernels/nn/optim.cu) so that both run the same fp32 arithmetic, the same
// rounding and the same Philox stream. Internal header; host and device (FRUGAL_INLINE).
//
// Random stream (stochastic rounding; the optimizer's own, per-element Philox4x32-10 order, not
// amp::cast's grouped Philox4x32-7 stream, docs/amp.md): element i
// of a moment takes bits [16 (i % 8), 16 (i % 8) + 16) of the 128-bit output of
// Philox4x32-10(counter = i / 8 + offset, key = seed) read as x | y << 32 | z << 64 | w << 96.
// exp_avg uses `offset`, exp_avg_sq `offset + ceil(n / 8)`: a step consumes
// adamw_bf16_counters(n) counters per parameter.
#include <cmath>
#include <cstdint>

#include "frugal/core/config.hpp"
#include "frugal/core/float_types.hpp"
#include "frugal/core/philox.hpp"

namespace frugal::detail {

/// Philox counters one bf16-moment update of n elements consumes (both moments).
FRUGAL_INLINE constexpr uint64_t adamw_bf16_counters(uint64_t n) { return 2 * ((n + 7) / 8); }

/// The 16 random bits of element i of the stream (seed, offset).
FRUGAL_INLINE constexpr uint32_t adamw_bf16_random(uint64_t seed, uint64_t offset, uint64_t i) {
  const Uint4 b = Philox4x32::generate(philox_counter(i / 8, offset), seed);
  const auto j = static_cast<int>(i % 8);
  return (lane(b, j / 2) >> (16 * (j & 1))) & 0xFFFFu;
}

/// f32 -> bf16 bits: nearest even (float_to_bf16_bits), or stochastic with the 16 random bits
/// `r`: adding them to the 16 dropped bits and truncating rounds up with probability
/// (dropped bits) / 2^16. NaN and Inf as nearest even; a carry that would turn the largest
/// finite bf16 into Inf keeps the truncation.
FRUGAL_INLINE constexpr uint16_t adamw_moment_to_bf16(float x, bool stochastic, uint32_t r) {
  const auto u = bit_cast<uint32_t>(x);
  if (!stochastic || (u & 0x7FFFFFFFu) >= 0x7F800000u) return float_to_bf16_bits(x);
  const uint32_t sum = u + (r & 0xFFFFu);
  if ((sum & 0x7F800000u) == 0x7F800000u) return static_cast<uint16_t>(u >> 16);
  return static_cast<uint16_t>(sum >> 16);
}

/// The step's scalars, rounded once to fp32 (see optim_adamw_update in nn/optim_internal.hpp).
struct AdamWBf16Step {
  float dec, wt, one_minus_w, b2, one_minus_b2, neg_step, bc2, eps;
  bool low;  // |1 - beta1| < 0.5: m + w (g - m), else g - (g - m)(1 - w) (torch's lerp)
};

/// One element: moments read from bf16 into fp32, updated as the f32 kernel does, stored back
/// (rm, rv: the 16 random bits of m and v when stochastic); the parameter step uses the fp32
/// moments. Returns the new parameter.
FRUGAL_INLINE float adamw_bf16_element(const AdamWBf16Step& s, float p, float g, uint16_t& m,
                                       uint16_t& v, bool stochastic, uint32_t rm, uint32_t rv) {
  const float m0 = bf16_bits_to_float(m);
  const float diff = g - m0;
  const float mi = s.low ? m0 + s.wt * diff : g - diff * s.one_minus_w;
  const float vi = bf16_bits_to_float(v) * s.b2 + s.one_minus_b2 * (g * g);
  m = adamw_moment_to_bf16(mi, stochastic, rm);
  v = adamw_moment_to_bf16(vi, stochastic, rv);
  const float denom = sqrtf(vi) / s.bc2 + s.eps;
  return p * s.dec + s.neg_step * (mi / denom);
}

}  // namespace frugal::detail
