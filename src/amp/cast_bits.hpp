#pragma once
// Bit-level fp32 -> small-float conversions used by amp::cast on the host and the device. Nearest
// even delegates to float_types.hpp (the reference); stochastic rounding and saturation of f16 /
// bf16 are added here with the same integer arithmetic, so host and device agree bit for bit.
#include <math.h>  // ceilf, host and device

#include <cstdint>
#include <type_traits>

#include "frugal/core/config.hpp"
#include "frugal/core/float_types.hpp"
#include "frugal/core/philox.hpp"

namespace frugal::amp::detail {

// Format codes shared by the CPU and CUDA backends.
enum Format : int { kFmtF16 = 0, kFmtBF16 = 1, kFmtE4M3 = 2, kFmtE5M2 = 3 };

// The codes of a small float format with kExp exponent and kMan mantissa bits (kHasInf: the
// all-ones exponent holds Inf and NaNs; else, as e4m3, only its all-ones code is NaN), and the
// fp32 constants the fast conversions use. The readable references (float_types.hpp) derive
// their own, so the tests compare against an independent layout.
template <int kE, int kM, bool kInf>
struct SmallFloat {
  static constexpr int kExp = kE, kMan = kM;
  static constexpr bool kHasInf = kInf;
  static constexpr int kBias = (1 << (kExp - 1)) - 1;
  static constexpr int kShift = 23 - kMan;  // fp32 mantissa bits a normal drops
  static constexpr uint32_t kSignBit = 1u << (kExp + kMan);
  static constexpr uint32_t kManMask = (1u << kMan) - 1;
  static constexpr uint32_t kInfCode = ((1u << kExp) - 1) << kMan;  // the all-ones exponent
  static constexpr uint32_t kMaxCode = kHasInf ? kInfCode - 1 : (kInfCode | kManMask) - 1;
  static constexpr uint32_t kMinNormal = static_cast<uint32_t>(127 - kBias + 1) << 23;  // fp32
  static constexpr uint32_t kRebias = static_cast<uint32_t>(127 - kBias) << kMan;       // in codes
};

// The layout of format kFmt.
template <int kFmt>
using Layout = std::conditional_t<
    kFmt == kFmtF16, SmallFloat<5, 10, true>,
    std::conditional_t<
        kFmt == kFmtBF16, SmallFloat<8, 7, true>,
        std::conditional_t<kFmt == kFmtE4M3, SmallFloat<4, 3, false>, SmallFloat<5, 2, true>>>>;

// Stochastic rounding draws R random bits per element, R = 16 for f16 / bf16 and 8 for fp8
// (sr_bits). 16 bits are exact for bf16 (16 dropped bits) and f16 normals (13); elsewhere the
// round-up probability is the dropped fraction rounded up to a multiple of 2^-R (bias below 2^-R
// ulp: 2^-16 for f16 subnormals, 2^-8 for fp8, whose ulp is already 2^-3 / 2^-2 relative), as
// hardware SR units with few random bits do.
//
// The bits come from Philox4x32 with kSrRounds = 7 rounds (sr_philox: Philox4x32-10's round
// function and key schedule, stopped after 7 rounds). Salmon et al. 2011 (SC11, Table 2) give 7
// as the fewest rounds for which Philox4x32 is Crush-resistant (passes TestU01's SmallCrush,
// Crush and BigCrush on many counter and key patterns) and recommend 10 as a safety margin, which
// the library's other streams keep; rounding noise needs uniform bits, not that margin, and 7
// rounds make the generator, most of the cast's work, 30% cheaper (docs/amp.md). Counter c of a
// call is c + ctx.offset (a 128-bit integer as in philox.hpp), key ctx.seed; a block's 128 output
// bits hold E = 128 / R elements' bits, each 32-bit word k = 32 / R pieces, piece q = bits
// [R q, R q + R).
//   Full groups: the first floor(n / G) * G elements, G = 8 E, form groups of G; group g uses
//   the 8 blocks of counters 8 g .. 8 g + 7 arranged as two rows of 16 words (xb: word x of
//   block 8 g + b),
//     row 0 = x0 y0 x1 y1 ... x7 y7,   row 1 = z0 w0 z1 w1 ... z7 w7,
//   and element j (0 <= j < G) of the group takes piece p % k of word j % 16 of row p / k,
//   p = j / 16. (Sixteen consecutive elements take one piece of one row: the layout in which
//   AVX-512 Philox, 8 blocks per register, hands out the bits without a transposition.)
//   Tail: the last n - floor(n / G) * G elements take, in order, the pieces of the following
//   blocks (element t of the tail: piece t % k of word (t % E) / k of block 8 floor(n / G) +
//   t / E), so a call of n elements consumes ceil(n / E) counters (sr_counters), at most
//   philox_counters(n): advancing the offset by that between calls stays valid.
// 8 bits halve the Philox work, the cost that bounds the fp8 cast (docs/amp.md).
template <int kFmt>
constexpr int sr_bits() {
  return kFmt == kFmtE4M3 || kFmt == kFmtE5M2 ? 8 : 16;
}

FRUGAL_INLINE constexpr int sr_bits(int format) {
  return format == kFmtE4M3 || format == kFmtE5M2 ? 8 : 16;
}

FRUGAL_INLINE constexpr uint64_t sr_counters(int64_t n, int format) {
  const int64_t e = 128 / sr_bits(format);
  return static_cast<uint64_t>((n + e - 1) / e);
}

// Rounds of the stochastic-rounding generator (see above).
constexpr int kSrRounds = 7;

// Philox4x32 with kSrRounds rounds: the rounds and key schedule of Philox4x32::generate.
FRUGAL_INLINE constexpr Uint4 sr_philox(Uint4 counter, uint64_t seed) {
  Uint4 c = counter;
  Uint2 k = Philox4x32::key_of(seed);
  c = Philox4x32::round(c, k);
  for (int r = 1; r < kSrRounds; ++r) {
    k.x += Philox4x32::kW0;
    k.y += Philox4x32::kW1;
    c = Philox4x32::round(c, k);
  }
  return c;
}

// Bits [bits * q, bits * q + bits) of word w (0..3: x, y, z, w) of block b.
FRUGAL_INLINE constexpr uint32_t sr_piece(const Uint4& b, int w, int q, int bits) {
  return (lane(b, w) >> (bits * q)) & ((1u << bits) - 1u);
}

// Element j (0 <= j < 8 E) of a full group whose 8 blocks are blk[0..8): the layout above.
FRUGAL_INLINE constexpr uint32_t sr_group_random(const Uint4* blk, int j, int bits) {
  const int k = 32 / bits, p = j / 16, l = j % 16;
  return sr_piece(blk[l / 2], 2 * (p / k) + l % 2, p % k, bits);
}

// The R = bits random bits of element i of a call of n elements with stream (seed, offset),
// straight from the definition.
FRUGAL_INLINE constexpr uint32_t sr_random(uint64_t seed, uint64_t offset, int64_t n, int64_t i,
                                           int bits) {
  const int64_t e = 128 / bits, k = 32 / bits, g = 8 * e;
  const int64_t full = n / g * g;
  if (i < full) {
    const int64_t j = i % g, p = j / 16, l = j % 16;
    const auto block = static_cast<uint64_t>(8 * (i / g) + l / 2);
    const Uint4 b = sr_philox(philox_counter(block, offset), seed);
    return sr_piece(b, static_cast<int>(2 * (p / k) + l % 2), static_cast<int>(p % k), bits);
  }
  const int64_t t = i - full;
  const auto block = static_cast<uint64_t>(full / e + t / e);
  const Uint4 b = sr_philox(philox_counter(block, offset), seed);
  return sr_piece(b, static_cast<int>(t % e / k), static_cast<int>(t % k), bits);
}

// fp32 -> code with stochastic rounding, the readable reference. `shift` input mantissa bits are
// dropped (more for target subnormals), their value is rem, so the dropped fraction is
// rem / 2^shift. With r the element's kR random bits and thr = ceil(2^kR rem / 2^shift) (the
// fraction in kR-bit fixed point, rounded up), round up iff r + thr >= 2^kR, then truncate
// (toward zero on the magnitude): the probability is thr / 2^kR, exactly rem / 2^shift when at
// most kR bits are dropped, else rounded up to a multiple of 2^-kR (never 0 for rem > 0).
// Layout as in float_types.hpp's float_to_small_float_bits.
template <int kExp, int kMan, bool kHasInf, int kR>
FRUGAL_INLINE constexpr uint32_t float_to_small_float_bits_sr(float f, Overflow policy,
                                                              uint32_t nan_code, uint32_t r) {
  using L = SmallFloat<kExp, kMan, kHasInf>;
  constexpr int kBias = L::kBias;
  constexpr uint32_t kSignBit = L::kSignBit, kInfCode = L::kInfCode, kMaxCode = L::kMaxCode;

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
  // Beyond 24 + kR dropped bits the value is below 2^-kR of the smallest subnormal (sig < 2^24):
  // the ceil below is 1 for any rem > 0 either way, so clamping keeps the 64-bit shifts defined.
  int shift = 23 - kMan + (e_target < 1 ? 1 - e_target : 0);
  if (shift > 24 + kR) shift = 24 + kR;
  const uint32_t base = e_target < 1 ? 0u : static_cast<uint32_t>(e_target - 1) << kMan;
  const uint64_t sig64 = sig;
  uint32_t code = base + static_cast<uint32_t>(sig64 >> shift);
  const uint64_t rem = sig64 & ((uint64_t{1} << shift) - 1u);
  // thr = ceil(2^kR * rem / 2^shift): the dropped fraction in kR-bit fixed point, rounded up.
  const uint64_t thr = shift <= kR ? rem << (kR - shift)
                                   : (rem + (uint64_t{1} << (shift - kR)) - 1u) >> (shift - kR);
  const bool up = (((r & ((1u << kR) - 1u)) + thr) >> kR) != 0;
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

// fp32 -> code with stochastic rounding (rnd: the element's sr_bits<kFmt>() random bits,
// sr_random). The readable reference.
template <int kFmt>
FRUGAL_INLINE constexpr uint32_t encode_sr(float f, Overflow policy, uint32_t rnd) {
  constexpr int kR = sr_bits<kFmt>();
  if constexpr (kFmt == kFmtE4M3) {
    return float_to_small_float_bits_sr<4, 3, false, kR>(f, policy, 0x7Fu, rnd);
  } else if constexpr (kFmt == kFmtE5M2) {
    return float_to_small_float_bits_sr<5, 2, true, kR>(f, policy, 0x7Fu, rnd);
  } else if constexpr (kFmt == kFmtF16) {
    return float_to_small_float_bits_sr<5, 10, true, kR>(f, policy, 0x7E00u, rnd);
  } else {
    return float_to_small_float_bits_sr<8, 7, true, kR>(f, policy, 0x7FC0u, rnd);
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

// Branchless stochastic fp32 -> f16 / fp8 (same bits as float_to_small_float_bits_sr with kR
// random bits r). Target normals drop a fixed number of bits (23 - kMan): adding r aligned to the
// dropped bits (plus 2^(shift - kR) - 1 for the ceil when shift > kR) to the fp32 bits and
// truncating carries into the exponent like the reference. Below the smallest normal,
// |x| * 2^kR / step (step = the smallest subnormal; exact power-of-two scaling) rounded up is
// kept * 2^kR + thr, so (ceil(|x| * 2^kR / step) + r) >> kR is the code. The SIMD path in
// src/amp/cpu/cast.cpp is this function lane by lane.
template <int kExp, int kMan, bool kHasInf, int kR>
FRUGAL_INLINE uint32_t small_sr_branchless(uint32_t u, uint32_t r, bool saturate,
                                           uint32_t nan_code) {
  using L = SmallFloat<kExp, kMan, kHasInf>;
  constexpr int kBias = L::kBias, kShift = L::kShift;
  constexpr uint32_t kSignBit = L::kSignBit, kInfCode = L::kInfCode, kMaxCode = L::kMaxCode;
  constexpr uint32_t kMinNormal = L::kMinNormal, kRebias = L::kRebias;
  // 2^kR / step = 2^(kR - (1 - kBias - kMan)) as fp32 bits.
  constexpr uint32_t kSubMul = static_cast<uint32_t>(127 + kR - 1 + kBias + kMan) << 23;
  const uint32_t a = u & 0x7FFFFFFFu;
  const uint32_t sign = (u >> 31) != 0 ? kSignBit : 0u;
  const uint32_t ovf = saturate ? kMaxCode : (kHasInf ? kInfCode : nan_code);
  const uint32_t rr = r & ((1u << kR) - 1u);
  uint32_t add;
  if constexpr (kShift <= kR) {
    add = rr >> (kR - kShift);
  } else {
    add = (rr << (kShift - kR)) + ((1u << (kShift - kR)) - 1u);
  }
  const uint32_t nrm = ((a + add) >> kShift) - kRebias;
  // Only lanes below the smallest normal use t; others multiply 0 so the conversion stays in range.
  const float t = ceilf(frugal::detail::bit_cast<float>(a < kMinNormal ? a : 0u) *
                        frugal::detail::bit_cast<float>(kSubMul));
  const uint32_t sub = (static_cast<uint32_t>(static_cast<int32_t>(t)) + rr) >> kR;
  uint32_t code = a < kMinNormal ? sub : nrm;
  code = code > kMaxCode ? ovf : code;
  code = a == 0x7F800000u ? ovf : code;
  code = a > 0x7F800000u ? nan_code : code;
  return sign | code;
}

// Branchless nearest-even fp32 -> fp8 (same bits as float_to_e4m3_bits / float_to_e5m2_bits).
// Below the smallest normal the IEEE addition |x| + 2^(23 + log2(smallest subnormal)) rounds to
// a multiple of the subnormal step in hardware (nearest even; the carry reaches the first normal
// code), as f16_rne_branchless does; normals are rebiased and rounded by adding half an ulp minus
// one plus the lowest kept bit. Needs IEEE addition without flush-to-zero (the default flags).
template <int kFmt>
FRUGAL_INLINE uint8_t fp8_rne_branchless(uint32_t u, bool saturate) {
  using L = Layout<kFmt>;
  constexpr int kMan = L::kMan, kBias = L::kBias, kShift = L::kShift;
  constexpr uint32_t kMaxCode = L::kMaxCode, kMinNormal = L::kMinNormal;
  constexpr uint32_t kOvf = kMaxCode + 1;  // non-saturating overflow: e4m3 NaN, e5m2 Inf
  // 2^(23 + log2 smallest subnormal) = 2^(23 + 1 - kBias - kMan): its ulp is the subnormal step.
  constexpr uint32_t kMagic = static_cast<uint32_t>(127 + 23 + 1 - kBias - kMan) << 23;
  const uint32_t a = u & 0x7FFFFFFFu;
  const uint32_t s = (u >> 24) & 0x80u;
  const float sub_f = frugal::detail::bit_cast<float>(a) + frugal::detail::bit_cast<float>(kMagic);
  const uint32_t sub = frugal::detail::bit_cast<uint32_t>(sub_f) - kMagic;
  const uint32_t nrm = (a - (static_cast<uint32_t>(127 - kBias) << 23) +
                        ((1u << (kShift - 1)) - 1u) + ((a >> kShift) & 1u)) >>
                       kShift;
  uint32_t m = a < kMinNormal ? sub : nrm;
  m = m > kMaxCode ? (saturate ? kMaxCode : kOvf) : m;
  m = a > 0x7F800000u ? 0x7Fu : m;
  return static_cast<uint8_t>(s | m);
}

}  // namespace frugal::amp::detail
