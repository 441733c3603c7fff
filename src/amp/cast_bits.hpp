#pragma once
// Bit-level fp32 -> small-float conversions used by amp::cast on the host and the device. Nearest
// even delegates to float_types.hpp (the reference); stochastic rounding and saturation of f16 /
// bf16 are added here with the same integer arithmetic, so host and device agree bit for bit.
#include <cstdint>

#include "frugal/core/config.hpp"
#include "frugal/core/float_types.hpp"

namespace frugal::amp::detail {

// Format codes shared by the CPU and CUDA backends.
enum Format : int { kFmtF16 = 0, kFmtBF16 = 1, kFmtE4M3 = 2, kFmtE5M2 = 3 };

// fp32 -> code with stochastic rounding: a random integer r below 2^shift is added to the `shift`
// dropped bits `rem` and the sum truncated, i.e. round up iff r + rem >= 2^shift, probability
// rem / 2^shift. r is the low `shift` bits of the 32-bit word `rnd`; for shift > 32, r = rnd is
// added to ceil(rem / 2^(shift - 32)) at 32 bits. Layout as in float_types.hpp's
// float_to_small_float_bits.
template <int kExp, int kMan, bool kHasInf>
FRUGAL_INLINE constexpr uint32_t float_to_small_float_bits_sr(float f, Overflow policy,
                                                              uint32_t nan_code, uint32_t rnd) {
  constexpr int kBias = (1 << (kExp - 1)) - 1;
  constexpr uint32_t kSignBit = 1u << (kExp + kMan);
  constexpr uint32_t kManMask = (1u << kMan) - 1;
  constexpr uint32_t kInfCode = ((1u << kExp) - 1) << kMan;
  constexpr uint32_t kMaxCode = kHasInf ? kInfCode - 1 : (kInfCode | kManMask) - 1;

  const uint32_t u = frugal::detail::bit_cast<uint32_t>(f);
  const uint32_t sign = (u >> 31) != 0 ? kSignBit : 0u;
  const uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return sign | nan_code;
  const uint32_t overflow_code =
      policy == Overflow::kSaturate ? kMaxCode : (kHasInf ? kInfCode : nan_code);
  if (a == 0x7F800000u) return sign | overflow_code;

  const int e = a >> 23 == 0 ? 1 : static_cast<int>(a >> 23);
  const uint32_t sig = a >> 23 == 0 ? (a & 0x7FFFFFu) : ((a & 0x7FFFFFu) | 0x800000u);
  const int e_target = e - 127 + kBias;
  // Beyond 56 dropped bits the value is below 2^-32 of the smallest subnormal: the ceil below is
  // 1 for any rem > 0 either way, so clamping keeps the 64-bit shifts defined.
  int shift = 23 - kMan + (e_target < 1 ? 1 - e_target : 0);
  if (shift > 56) shift = 56;
  const uint32_t base = e_target < 1 ? 0u : static_cast<uint32_t>(e_target - 1) << kMan;
  const uint64_t sig64 = sig;
  uint32_t code = base + static_cast<uint32_t>(sig64 >> shift);
  const uint64_t rem = sig64 & ((uint64_t{1} << shift) - 1u);
  bool up;
  if (shift <= 32) {
    const uint64_t r = static_cast<uint64_t>(rnd) & ((uint64_t{1} << shift) - 1u);
    up = ((r + rem) >> shift) != 0;
  } else {
    const int k = shift - 32;
    const uint64_t thr = (rem + (uint64_t{1} << k) - 1u) >> k;
    up = ((static_cast<uint64_t>(rnd) + thr) >> 32) != 0;
  }
  code += up ? 1u : 0u;
  if (code > kMaxCode) code = overflow_code;
  return sign | code;
}

// fp32 -> code, nearest even (the float_types.hpp reference) with the overflow policy applied to
// f16 and bf16 as well (the reference is non-saturating for those).
template <int kFmt>
FRUGAL_INLINE constexpr uint32_t encode_rne(float f, Overflow policy) {
  if constexpr (kFmt == kFmtE4M3) {
    return float_to_e4m3_bits(f, policy);
  } else if constexpr (kFmt == kFmtE5M2) {
    return float_to_e5m2_bits(f, policy);
  } else {
    constexpr int kE = kFmt == kFmtF16 ? 5 : 8;
    constexpr int kM = kFmt == kFmtF16 ? 10 : 7;
    constexpr uint32_t kNan = kFmt == kFmtF16 ? 0x7E00u : 0x7FC0u;
    return frugal::detail::float_to_small_float_bits<kE, kM, true>(f, policy, kNan);
  }
}

// fp32 -> code with stochastic rounding (rnd: the element's 32-bit Philox lane).
template <int kFmt>
FRUGAL_INLINE constexpr uint32_t encode_sr(float f, Overflow policy, uint32_t rnd) {
  if constexpr (kFmt == kFmtE4M3) {
    return float_to_small_float_bits_sr<4, 3, false>(f, policy, 0x7Fu, rnd);
  } else if constexpr (kFmt == kFmtE5M2) {
    return float_to_small_float_bits_sr<5, 2, true>(f, policy, 0x7Fu, rnd);
  } else if constexpr (kFmt == kFmtF16) {
    return float_to_small_float_bits_sr<5, 10, true>(f, policy, 0x7E00u, rnd);
  } else {
    return float_to_small_float_bits_sr<8, 7, true>(f, policy, 0x7FC0u, rnd);
  }
}

// Branchless nearest-even fp32 -> bf16 (same bits as encode_rne<kFmtBF16>): add 0x7FFF plus the
// lowest kept bit and truncate; the carry into the exponent is the correctly rounded value, up to
// Inf. NaN is replaced by the canonical quiet NaN. Written with selects so compilers vectorize it.
FRUGAL_INLINE constexpr uint16_t bf16_rne_branchless(uint32_t u, bool saturate) {
  const uint32_t a = u & 0x7FFFFFFFu;
  const uint32_t s = (u >> 16) & 0x8000u;
  uint32_t m = (a + 0x7FFFu + ((a >> 16) & 1u)) >> 16;
  m = saturate && m > 0x7F7Fu ? 0x7F7Fu : m;
  m = a > 0x7F800000u ? 0x7FC0u : m;
  return static_cast<uint16_t>(s | m);
}

// Branchless nearest-even fp32 -> f16 (same bits as encode_rne<kFmtF16>), after F. Giesen's
// float_to_half_fast3_rtne: |x| < 2^-14 (f16 subnormal or zero) is rounded by the IEEE addition
// |x| + 0.5, whose ulp is 2^-24 = the f16 subnormal step, so the hardware rounds to nearest even;
// normals are rebiased and rounded with the add-0xFFF-plus-odd-bit trick. Needs IEEE float
// addition in round-to-nearest without flush-to-zero (the library's default flags).
FRUGAL_INLINE uint16_t f16_rne_branchless(uint32_t u, bool saturate) {
  const uint32_t a = u & 0x7FFFFFFFu;
  const uint32_t s = (u >> 16) & 0x8000u;
  const float sub_f = frugal::detail::bit_cast<float>(a) + 0.5f;
  const uint32_t sub = frugal::detail::bit_cast<uint32_t>(sub_f) - 0x3F000000u;
  const uint32_t nrm = (a - (112u << 23) + 0xFFFu + ((a >> 13) & 1u)) >> 13;
  uint32_t m = a < (113u << 23) ? sub : nrm;
  m = a >= (143u << 23) ? 0x7C00u : m;  // |x| >= 65536 (and Inf): past the largest finite
  m = saturate && m > 0x7BFFu ? 0x7BFFu : m;
  m = a > 0x7F800000u ? 0x7E00u : m;
  return static_cast<uint16_t>(s | m);
}

// Branchless stochastic fp32 -> bf16 (same bits as encode_sr<kFmtBF16>): bf16 keeps fp32's
// exponent range, so 16 bits are dropped for every finite input, normal or subnormal; adding the
// low 16 random bits and truncating carries into the exponent exactly as the generic code does
// (up to Inf, which saturation clamps). NaN is replaced by the canonical quiet NaN.
FRUGAL_INLINE constexpr uint16_t bf16_sr_branchless(uint32_t u, uint32_t rnd, bool saturate) {
  const uint32_t a = u & 0x7FFFFFFFu;
  const uint32_t s = (u >> 16) & 0x8000u;
  uint32_t m = (a + (rnd & 0xFFFFu)) >> 16;
  m = saturate && m > 0x7F7Fu ? 0x7F7Fu : m;
  m = a > 0x7F800000u ? 0x7FC0u : m;
  return static_cast<uint16_t>(s | m);
}

}  // namespace frugal::amp::detail
