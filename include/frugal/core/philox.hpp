#pragma once
/// Philox4x32-10, the counter-based random number generator of Salmon, Moraes, Dror and Shaw,
/// "Parallel random numbers: as easy as 1, 2, 3" (SC11), the same generator as Random123's
/// philox4x32 with 10 rounds, cuRAND's Philox4_32_10 and numpy's Philox. Plain C++20, usable in
/// host and device code, so the CPU and the GPU draw identical bits for the same seed and counter.
///
/// Stream definition (shared by every frugal op that draws random numbers):
///   For seed `s` and offset `o`, element i (row-major linear index) of an op's output uses
///     counter = i / 4 + o, a 128-bit integer: bits 0-31 in x, 32-63 in y, 64-95 in z, 96-127 in w
///               (the sum carries from y into z; i / 4 + o fits in 65 bits, so w stays 0),
///     key     = s: bits 0-31 in key.x, bits 32-63 in key.y,
///   and takes lane i % 4 (x, y, z, w) of philox4x32_10(counter, key). A call that draws n values
///   therefore consumes philox_counters(n) = ceil(n / 4) counters; advance the offset by that much
///   to draw fresh numbers on the next call.
///
/// From bits to numbers (identical on host and device):
///   uniform01(x)         = (x >> 8) * 2^-24 in [0, 1): 24 random bits, exact in float.
///   uniform01_open0(x)   = ((x >> 8) + 1) * 2^-24 in (0, 1]: never 0, so log() is finite.
///   uniform01_f64(x)     = x * 2^-32 in [0, 1) and uniform01_open0_f64(x) = (x + 1) * 2^-32 in
///                          (0, 1]: 32 random bits, exact in double.
///   Normals come from the Box-Muller transform on the pairs (x, y) and (z, w) of one block:
///     r = sqrt(-2 log(uniform01_open0(x))), t = 2 pi uniform01(y),
///     lanes x, y -> r cos t, r sin t;  lanes z, w likewise from (z, w).
///   So every 4x32 output gives 4 uniforms or 4 standard normals. The uniforms are bit-identical on
///   host and device (integer work, exact products, an explicit fma). The normals call log, cos and
///   sin, whose results may differ by a few ulp between the host libm and CUDA's math library.
#include <math.h>  // logf, cosf, sinf, sqrtf, fmaf and their double forms, host and device

#include <cstdint>

#include "frugal/core/config.hpp"

namespace frugal {

/// Four 32-bit words: one Philox counter or one Philox output block.
struct Uint4 {
  uint32_t x = 0, y = 0, z = 0, w = 0;
  friend constexpr bool operator==(const Uint4& a, const Uint4& b) = default;
};

/// Two 32-bit words: one Philox key.
struct Uint2 {
  uint32_t x = 0, y = 0;
};

/// The Philox4x32 bijection with 10 rounds (Salmon et al. 2011, §4.2; Random123 philox.h).
struct Philox4x32 {
  static constexpr uint32_t kM0 = 0xD2511F53u;  ///< multiplier for words x, y
  static constexpr uint32_t kM1 = 0xCD9E8D57u;  ///< multiplier for words z, w
  static constexpr uint32_t kW0 = 0x9E3779B9u;  ///< key schedule: golden ratio
  static constexpr uint32_t kW1 = 0xBB67AE85u;  ///< key schedule: sqrt(3) - 1
  static constexpr int kRounds = 10;

  /// The key of a 64-bit seed: low 32 bits in x, high 32 bits in y.
  static FRUGAL_INLINE constexpr Uint2 key_of(uint64_t seed) {
    return {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
  }

  /// One round: two 32x32 -> 64-bit products, S-box by multiplication, P-box by word permutation.
  static FRUGAL_INLINE constexpr Uint4 round(Uint4 c, Uint2 k) {
    const uint64_t p0 = static_cast<uint64_t>(kM0) * c.x;
    const uint64_t p1 = static_cast<uint64_t>(kM1) * c.z;
    const auto hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const auto hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    return {hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0};
  }

  /// philox4x32_10(counter, key): 10 rounds, the key bumped by (W0, W1) between rounds.
  static FRUGAL_INLINE constexpr Uint4 generate(Uint4 counter, Uint2 key) {
    Uint4 c = counter;
    Uint2 k = key;
    c = round(c, k);
    for (int r = 1; r < kRounds; ++r) {
      k.x += kW0;
      k.y += kW1;
      c = round(c, k);
    }
    return c;
  }

  /// Same, with the key given as a 64-bit seed (see key_of).
  static FRUGAL_INLINE constexpr Uint4 generate(Uint4 counter, uint64_t seed) {
    return generate(counter, key_of(seed));
  }
};

/// Counters consumed by a draw of `n` values: ceil(n / 4) (see the stream definition above).
FRUGAL_INLINE constexpr uint64_t philox_counters(int64_t n) {
  return static_cast<uint64_t>((n + 3) / 4);
}

/// The 128-bit counter `block + offset` (low 64 bits in x, y; the carry in z).
FRUGAL_INLINE constexpr Uint4 philox_counter(uint64_t block, uint64_t offset) {
  const uint64_t lo = block + offset;
  const uint32_t carry = lo < block ? 1u : 0u;
  return {static_cast<uint32_t>(lo), static_cast<uint32_t>(lo >> 32), carry, 0u};
}

/// The Philox block holding element `i` of the stream (seed, offset): lane i % 4 of the result.
FRUGAL_INLINE constexpr Uint4 philox_block(uint64_t seed, uint64_t offset, uint64_t i) {
  return Philox4x32::generate(philox_counter(i / 4, offset), seed);
}

/// Lane `l` (0..3) of `b`: x, y, z, w.
FRUGAL_INLINE constexpr uint32_t lane(const Uint4& b, int l) {
  return l == 0 ? b.x : (l == 1 ? b.y : (l == 2 ? b.z : b.w));
}

/// Uniform float in [0, 1): (x >> 8) * 2^-24.
FRUGAL_INLINE constexpr float uniform01(uint32_t x) {
  return static_cast<float>(x >> 8) * 5.9604644775390625e-08f;  // 2^-24
}

/// Uniform float in (0, 1]: ((x >> 8) + 1) * 2^-24.
FRUGAL_INLINE constexpr float uniform01_open0(uint32_t x) {
  return static_cast<float>((x >> 8) + 1u) * 5.9604644775390625e-08f;
}

/// Uniform double in [0, 1): x * 2^-32.
FRUGAL_INLINE constexpr double uniform01_f64(uint32_t x) {
  return static_cast<double>(x) * 2.3283064365386962890625e-10;  // 2^-32
}

/// Uniform double in (0, 1]: (x + 1) * 2^-32.
FRUGAL_INLINE constexpr double uniform01_open0_f64(uint32_t x) {
  return (static_cast<double>(x) + 1.0) * 2.3283064365386962890625e-10;
}

/// lo + span * u with one rounding (an explicit fma, so no compiler contraction can change it and
/// host and device agree bit for bit). For u in [0, 1) the exact value lies in [lo, lo + span);
/// the rounded one may equal lo + span when span is not a power of two.
FRUGAL_INLINE float affine(float u, float lo, float span) { return fmaf(span, u, lo); }
FRUGAL_INLINE double affine(double u, double lo, double span) { return fma(span, u, lo); }

/// Four uniforms in [lo, lo + span) from one block (lanes x, y, z, w), float.
FRUGAL_INLINE void uniform4(const Uint4& b, float lo, float span, float out[4]) {
  out[0] = affine(uniform01(b.x), lo, span);
  out[1] = affine(uniform01(b.y), lo, span);
  out[2] = affine(uniform01(b.z), lo, span);
  out[3] = affine(uniform01(b.w), lo, span);
}

/// Four uniforms in [lo, lo + span) from one block (lanes x, y, z, w), double.
FRUGAL_INLINE void uniform4(const Uint4& b, double lo, double span, double out[4]) {
  out[0] = affine(uniform01_f64(b.x), lo, span);
  out[1] = affine(uniform01_f64(b.y), lo, span);
  out[2] = affine(uniform01_f64(b.z), lo, span);
  out[3] = affine(uniform01_f64(b.w), lo, span);
}

/// Two standard normals from two uniform words by Box-Muller: r cos t, r sin t with
/// r = sqrt(-2 log u), u in (0, 1] from `a`, and t = 2 pi v, v in [0, 1) from `b`. Float math.
FRUGAL_INLINE void box_muller(uint32_t a, uint32_t b, float& n0, float& n1) {
  const float r = sqrtf(-2.0f * logf(uniform01_open0(a)));
  const float t = 6.28318530717958647692f * uniform01(b);
  n0 = r * cosf(t);
  n1 = r * sinf(t);
}

/// Same in double precision (32 random bits per uniform).
FRUGAL_INLINE void box_muller(uint32_t a, uint32_t b, double& n0, double& n1) {
  const double r = sqrt(-2.0 * log(uniform01_open0_f64(a)));
  const double t = 6.28318530717958647692 * uniform01_f64(b);
  n0 = r * cos(t);
  n1 = r * sin(t);
}

/// Four normals mean + std * z from one block: (x, y) and (z, w) are Box-Muller pairs. T is float
/// or double.
template <class T>
FRUGAL_INLINE void normal4(const Uint4& b, T mean, T std, T out[4]) {
  T z[4];
  box_muller(b.x, b.y, z[0], z[1]);
  box_muller(b.z, b.w, z[2], z[3]);
  for (int l = 0; l < 4; ++l) out[l] = affine(z[l], mean, std);
}

}  // namespace frugal
