#pragma once
/// Low-precision floating-point storage types (fp16, bf16, fp8 E4M3 and E5M2) and their conversions
/// to and from float. Plain C++20, usable in host and device code.
///
/// Every conversion is done on the bit patterns with integer arithmetic (no hardware conversion
/// instructions, no floating-point operations), so host and device produce identical bits whatever
/// the compiler flags (-ffast-math, --use_fast_math, flush-to-zero). Rounding is IEEE 754
/// round-to-nearest, ties-to-even, applied as if the target's exponent range were unbounded, then
/// the result is checked against the largest finite value (IEEE 754-2019 §4.3, §7.4).
///
/// Formats (sign, exponent, mantissa bits; bias):
///   Half        IEEE 754 binary16: 1, 5, 10; bias 15.
///   BFloat16    the upper half of IEEE 754 binary32: 1, 8, 7; bias 127.
///   Float8E4M3  OCP 8-bit Floating Point Specification (OFP8) v1.0, E4M3: 1, 4, 3; bias 7.
///               No infinities; NaN = S.1111.111; max 448.
///   Float8E5M2  OFP8 v1.0, E5M2: 1, 5, 2; bias 15. IEEE-like: Inf = S.11111.00,
///               NaN = S.11111.{01,10,11}; max 57344.
/// All four have subnormals and a signed zero.
#include <cstdint>
#include <type_traits>

#include "frugal/core/config.hpp"

namespace frugal {

/// What a float -> fp8 conversion does with values beyond the largest finite value (OFP8 v1.0 §5).
enum class Overflow : uint8_t {
  kSaturate,     ///< finite overflow and ±Inf clamp to ±max finite; NaN stays NaN
  kNonSaturate,  ///< overflow and ±Inf give ±Inf (E5M2) or NaN (E4M3, which has no Inf)
};

/// Largest finite Float8E4M3 value, S.1111.110 = 1.75 * 2^8.
inline constexpr float kMaxE4M3 = 448.f;
/// Largest finite Float8E5M2 value, S.11110.11 = 1.75 * 2^15.
inline constexpr float kMaxE5M2 = 57344.f;
/// Largest finite Half value, 0x7BFF = (2 - 2^-10) * 2^15.
inline constexpr float kMaxHalf = 65504.f;

namespace detail {

/// std::bit_cast for host and device: __builtin_bit_cast is constexpr and callable from device code
/// without --expt-relaxed-constexpr (std::bit_cast is a host-only constexpr function under nvcc).
template <class To, class From>
FRUGAL_INLINE constexpr To bit_cast(const From& from) noexcept {
  static_assert(sizeof(To) == sizeof(From), "bit_cast needs equal sizes");
  return __builtin_bit_cast(To, from);
}

/// Encodes `f` into a binary format with kExp exponent bits and kMan mantissa bits (bias
/// 2^(kExp-1) - 1). kHasInf selects IEEE-style specials (top exponent = Inf/NaN) versus the OFP8
/// E4M3 style (top exponent holds normal values, only all-ones is NaN). `nan_code` is the magnitude
/// code returned for NaN input. Returns the code in the low 1 + kExp + kMan bits.
template <int kExp, int kMan, bool kHasInf>
FRUGAL_INLINE constexpr uint32_t float_to_small_float_bits(float f, Overflow policy,
                                                           uint32_t nan_code) {
  constexpr int kBias = (1 << (kExp - 1)) - 1;
  constexpr uint32_t kSignBit = 1u << (kExp + kMan);
  constexpr uint32_t kManMask = (1u << kMan) - 1;
  constexpr uint32_t kInfCode = ((1u << kExp) - 1) << kMan;
  // IEEE formats reserve the whole top exponent; E4M3 reserves only S.1111.111 (OFP8 v1.0 §4.1).
  constexpr uint32_t kMaxCode = kHasInf ? kInfCode - 1 : (kInfCode | kManMask) - 1;

  const uint32_t u = bit_cast<uint32_t>(f);
  const uint32_t sign = (u >> 31) != 0 ? kSignBit : 0u;
  const uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return sign | nan_code;
  const uint32_t overflow_code =
      policy == Overflow::kSaturate ? kMaxCode : (kHasInf ? kInfCode : nan_code);
  if (a == 0x7F800000u) return sign | overflow_code;

  // |f| = sig * 2^(e - 150) with sig < 2^24; a float subnormal is e = 1 without the hidden bit.
  const int e = a >> 23 == 0 ? 1 : static_cast<int>(a >> 23);
  const uint32_t sig = a >> 23 == 0 ? (a & 0x7FFFFFu) : ((a & 0x7FFFFFu) | 0x800000u);
  const int e_target = e - 127 + kBias;  // biased exponent in the target format, may be <= 0
  // A normal target code is ((e_target - 1) << kMan) + (sig >> (23 - kMan)): the hidden bit of sig
  // lands on bit kMan and adds the missing 1 to the exponent field. A subnormal target (exponent
  // field 0, scale 2^(1 - bias - kMan)) is sig shifted further right by 1 - e_target. A shift of 25
  // leaves less than half an ulp of the target, which rounds to zero, so larger shifts are clamped.
  int shift = 23 - kMan + (e_target < 1 ? 1 - e_target : 0);
  if (shift > 25) shift = 25;
  const uint32_t base = e_target < 1 ? 0u : static_cast<uint32_t>(e_target - 1) << kMan;
  uint32_t code = base + (sig >> shift);
  // Round to nearest, ties to even. The increment may carry into the exponent field, which is
  // exactly the next representable value (or the first value past the largest finite one).
  const uint32_t rem = sig & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  if (rem > half || (rem == half && (code & 1u) != 0)) ++code;
  if (code > kMaxCode) code = overflow_code;
  return sign | code;
}

/// Decodes a code of the format described at float_to_small_float_bits into float (exact: every
/// value of these formats with kExp <= 5 is a normal float).
template <int kExp, int kMan, bool kHasInf>
FRUGAL_INLINE constexpr float small_float_bits_to_float(uint32_t b) {
  static_assert(kExp <= 5, "subnormals of wider exponents are not normal floats");
  constexpr int kBias = (1 << (kExp - 1)) - 1;
  constexpr uint32_t kManMask = (1u << kMan) - 1;
  constexpr int kExpMax = (1 << kExp) - 1;

  const uint32_t sign = ((b >> (kExp + kMan)) & 1u) << 31;
  uint32_t man = b & kManMask;
  int exp = static_cast<int>((b >> kMan) & static_cast<uint32_t>(kExpMax));
  if (exp == kExpMax && (kHasInf || man == kManMask)) {
    if (kHasInf && man == 0) return bit_cast<float>(sign | 0x7F800000u);
    // NaN: keep the payload and set the quiet bit, as IEEE 754 §6.2.3 asks of conversions.
    return bit_cast<float>(sign | 0x7FC00000u | (man << (23 - kMan)));
  }
  if (exp == 0) {
    if (man == 0) return bit_cast<float>(sign);
    // Subnormal m * 2^(1 - bias - kMan): normalize so the leading one becomes the hidden bit.
    exp = 1;
    while ((man & (1u << kMan)) == 0) {
      man <<= 1;
      --exp;
    }
    man &= kManMask;
  }
  return bit_cast<float>(sign | (static_cast<uint32_t>(exp - kBias + 127) << 23) |
                         (man << (23 - kMan)));
}

}  // namespace detail

/// float -> fp8 E4M3 bits (OFP8 v1.0), round to nearest even. kSaturate: |x| beyond 448 and ±Inf
/// give ±448 (0x7E/0xFE). kNonSaturate: values that round past 448 (|x| > 464) and ±Inf give NaN.
/// NaN gives S.1111.111 with the sign kept.
FRUGAL_INLINE constexpr uint8_t float_to_e4m3_bits(float f, Overflow policy) {
  return static_cast<uint8_t>(detail::float_to_small_float_bits<4, 3, false>(f, policy, 0x7Fu));
}

/// float -> fp8 E5M2 bits (OFP8 v1.0), round to nearest even. kSaturate: values beyond 57344 and
/// ±Inf give ±57344 (0x7B/0xFB). kNonSaturate: values that round past 57344 (|x| >= 61440) give
/// ±Inf, ±Inf stays ±Inf. NaN gives S.11111.11 (CUDA's and PyTorch's canonical E5M2 NaN).
FRUGAL_INLINE constexpr uint8_t float_to_e5m2_bits(float f, Overflow policy) {
  return static_cast<uint8_t>(detail::float_to_small_float_bits<5, 2, true>(f, policy, 0x7Fu));
}

/// fp8 E4M3 bits -> float, exact. S.1111.111 gives a quiet NaN.
FRUGAL_INLINE constexpr float e4m3_bits_to_float(uint8_t b) {
  return detail::small_float_bits_to_float<4, 3, false>(b);
}

/// fp8 E5M2 bits -> float, exact. S.11111.00 gives ±Inf, other top-exponent codes a quiet NaN.
FRUGAL_INLINE constexpr float e5m2_bits_to_float(uint8_t b) {
  return detail::small_float_bits_to_float<5, 2, true>(b);
}

/// float -> IEEE binary16 bits, round to nearest even; overflow (|x| >= 65520) gives ±Inf.
/// NaN gives the quiet NaN 0x7E00 with the sign kept.
FRUGAL_INLINE constexpr uint16_t float_to_half_bits(float f) {
  return static_cast<uint16_t>(
      detail::float_to_small_float_bits<5, 10, true>(f, Overflow::kNonSaturate, 0x7E00u));
}

/// IEEE binary16 bits -> float, exact (a signaling NaN comes back quiet).
FRUGAL_INLINE constexpr float half_bits_to_float(uint16_t b) {
  return detail::small_float_bits_to_float<5, 10, true>(b);
}

/// float -> bfloat16 bits, round to nearest even (not truncation); overflow gives ±Inf, float
/// subnormals round to bf16 subnormals. NaN gives the quiet NaN 0x7FC0 with the sign kept, so a
/// NaN whose payload sits only in the low 16 bits does not turn into Inf.
FRUGAL_INLINE constexpr uint16_t float_to_bf16_bits(float f) {
  // bf16 is the upper half of a binary32 with the same exponent range, so rounding is integer
  // arithmetic on the bits: adding 0x7FFF plus the kept lsb carries into bit 16 exactly when the
  // dropped half is above one half ulp, or equal to it with an odd kept part (ties to even). The
  // carry runs through the exponent field, so the largest floats round up to Inf (0x7F80) and
  // subnormals to bf16 subnormals. No branches: loops of conversions vectorise (compare + blend).
  const uint32_t u = detail::bit_cast<uint32_t>(f);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const uint32_t nan = ((u >> 16) & 0x8000u) | 0x7FC0u;
  return static_cast<uint16_t>((u & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded);
}

/// bfloat16 bits -> float, exact: bf16 is the upper half of a binary32.
FRUGAL_INLINE constexpr float bf16_bits_to_float(uint16_t b) {
  return detail::bit_cast<float>(static_cast<uint32_t>(b) << 16);
}

/// IEEE 754 binary16. Trivial (usable in __shared__ arrays and memcpy'd buffers); Half{} is +0.
struct Half {
  uint16_t bits;  ///< the binary16 bit pattern

  Half() = default;
  /// Rounds to nearest even; overflow gives ±Inf (IEEE 754).
  FRUGAL_INLINE constexpr explicit Half(float f) : bits(float_to_half_bits(f)) {}
  /// Exact.
  FRUGAL_INLINE constexpr explicit operator float() const { return half_bits_to_float(bits); }
  /// The Half with bit pattern `b`.
  FRUGAL_HOST_DEVICE static constexpr Half from_bits(uint16_t b) {
    Half h{};
    h.bits = b;
    return h;
  }
};

/// bfloat16 (upper 16 bits of a binary32). Trivial; BFloat16{} is +0.
struct BFloat16 {
  uint16_t bits;  ///< the bfloat16 bit pattern

  BFloat16() = default;
  /// Rounds to nearest even; overflow gives ±Inf; NaN stays a quiet NaN.
  FRUGAL_INLINE constexpr explicit BFloat16(float f) : bits(float_to_bf16_bits(f)) {}
  /// Exact.
  FRUGAL_INLINE constexpr explicit operator float() const { return bf16_bits_to_float(bits); }
  /// The BFloat16 with bit pattern `b`.
  FRUGAL_HOST_DEVICE static constexpr BFloat16 from_bits(uint16_t b) {
    BFloat16 h{};
    h.bits = b;
    return h;
  }
};

/// OFP8 v1.0 E4M3 ("e4m3fn": no Inf, max 448). Trivial; Float8E4M3{} is +0.
struct Float8E4M3 {
  uint8_t bits;  ///< the E4M3 bit pattern

  Float8E4M3() = default;
  /// Rounds to nearest even and saturates (finite overflow and ±Inf -> ±448; NaN stays NaN), as
  /// CUDA's __NV_SATFINITE and Transformer Engine do. See float_to_e4m3_bits for the other policy.
  FRUGAL_INLINE constexpr explicit Float8E4M3(float f)
      : bits(float_to_e4m3_bits(f, Overflow::kSaturate)) {}
  /// Exact.
  FRUGAL_INLINE constexpr explicit operator float() const { return e4m3_bits_to_float(bits); }
  /// The Float8E4M3 with bit pattern `b`.
  FRUGAL_HOST_DEVICE static constexpr Float8E4M3 from_bits(uint8_t b) {
    Float8E4M3 h{};
    h.bits = b;
    return h;
  }
};

/// OFP8 v1.0 E5M2 (IEEE-like, max 57344). Trivial; Float8E5M2{} is +0.
struct Float8E5M2 {
  uint8_t bits;  ///< the E5M2 bit pattern

  Float8E5M2() = default;
  /// Rounds to nearest even and saturates (finite overflow and ±Inf -> ±57344; NaN stays NaN), as
  /// CUDA's __NV_SATFINITE and Transformer Engine do. See float_to_e5m2_bits for the other policy.
  FRUGAL_INLINE constexpr explicit Float8E5M2(float f)
      : bits(float_to_e5m2_bits(f, Overflow::kSaturate)) {}
  /// Exact.
  FRUGAL_INLINE constexpr explicit operator float() const { return e5m2_bits_to_float(bits); }
  /// The Float8E5M2 with bit pattern `b`.
  FRUGAL_HOST_DEVICE static constexpr Float8E5M2 from_bits(uint8_t b) {
    Float8E5M2 h{};
    h.bits = b;
    return h;
  }
};

static_assert(sizeof(Half) == 2 && sizeof(BFloat16) == 2, "16-bit storage types");
static_assert(sizeof(Float8E4M3) == 1 && sizeof(Float8E5M2) == 1, "8-bit storage types");
// Trivial so that CUDA accepts them in __shared__ arrays and buffers can be filled with memcpy.
static_assert(std::is_trivial_v<Half> && std::is_trivial_v<BFloat16> &&
                  std::is_trivial_v<Float8E4M3> && std::is_trivial_v<Float8E5M2>,
              "storage types stay trivial");

}  // namespace frugal
