// amp::cast on the CPU: one pass of oneTBB blocks of 64K elements; each block scales, converts
// and tracks max |x| as an integer max over the magnitude bits (order-independent, NaN wins since
// its bits exceed Inf's), so results do not depend on the thread count.
// GCC 12's _mm512_extracti64x4_epi64 starts from _mm256_undefined_si256 (`__Y = __Y`), which it
// then reports as used uninitialized (GCC bug 105593); every lane is written before it is read.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#if (defined(__F16C__) && defined(__AVX2__)) || defined(__AVX512F__)
#include <immintrin.h>
#endif
#if defined(__F16C__) && defined(__AVX2__)
#define FRUGAL_AMP_F16C 1
#endif

#include "amp/amp_internal.hpp"
#include "amp/cast_bits.hpp"
#include "frugal/core/philox.hpp"

namespace frugal::cpu {
namespace {

using namespace amp::detail;

// Casts (stochastic, and fp8 nearest even) with an output of at least this many bytes (the L3 of
// the machine in docs/benchmarks.md) write it with non-temporal stores.
constexpr int64_t kStreamBytes = int64_t{32} << 20;

// Whether a cast of n codes written from y on should use non-temporal stores: a large output, and
// y on a cache line (the stores then fill whole lines).
template <class C>
bool use_streaming_stores(int64_t n, const C* y) {
  return n * static_cast<int64_t>(sizeof(C)) >= kStreamBytes &&
         reinterpret_cast<uintptr_t>(y) % 64 == 0;
}

constexpr int64_t kBlock = int64_t{1} << 16;  // a multiple of the SR group sizes (64, 128)

template <int kFmt>
using Code = std::conditional_t<(kFmt <= kFmtBF16), uint16_t, uint8_t>;

// One element: x * scale converted with the format's branchless code; rnd (the element's
// sr_bits random bits) only for kSR.
template <int kFmt, bool kSR>
FRUGAL_INLINE Code<kFmt> convert_one(float v, float scale, bool sat, uint32_t rnd) {
  const uint32_t u = detail::bit_cast<uint32_t>(v * scale);
  if constexpr (kSR) {
    if constexpr (kFmt == kFmtBF16) {
      return bf16_sr_branchless(u, rnd, sat);
    } else if constexpr (kFmt == kFmtF16) {
      return static_cast<uint16_t>(small_sr_branchless<5, 10, true, 16>(u, rnd, sat, 0x7E00u));
    } else if constexpr (kFmt == kFmtE4M3) {
      return static_cast<uint8_t>(small_sr_branchless<4, 3, false, 8>(u, rnd, sat, 0x7Fu));
    } else {
      return static_cast<uint8_t>(small_sr_branchless<5, 2, true, 8>(u, rnd, sat, 0x7Fu));
    }
  } else {
    if constexpr (kFmt == kFmtBF16) {
      return bf16_rne_branchless(u, sat);
    } else if constexpr (kFmt == kFmtF16) {
      return f16_rne_branchless(u, sat);
    } else {
      return fp8_rne_branchless<kFmt>(u, sat);
    }
  }
}

#if defined(__AVX512F__) && defined(__AVX512BW__)
#define FRUGAL_AMP_AVX512 1
// The SIMD helpers pass __m512i values; GCC's inliner gives up on the larger ones, which then
// spill every register at the call.
#define FRUGAL_AMP_SIMD_INLINE inline __attribute__((always_inline))
// AVX-512 forms of small_sr_branchless and fp8_rne_branchless (amp/cast_bits.hpp), 16 lanes at
// a time, same operations lane by lane (so the same bits; the tests compare every path with the
// readable reference). The result lanes hold the codes in their low bits.

FRUGAL_INLINE __m512i set1(uint32_t v) { return _mm512_set1_epi32(static_cast<int>(v)); }

template <int kExp, int kMan, bool kHasInf, int kR>
FRUGAL_AMP_SIMD_INLINE __m512i small_sr_x16(__m512 v, __m512i r, bool saturate, uint32_t nan_code) {
  using L = SmallFloat<kExp, kMan, kHasInf>;
  constexpr int kBias = L::kBias, kShift = L::kShift;
  constexpr uint32_t kInfCode = L::kInfCode, kMaxCode = L::kMaxCode;
  constexpr uint32_t kMinNormal = L::kMinNormal, kRebias = L::kRebias;
  constexpr uint32_t kSubMul = static_cast<uint32_t>(127 + kR - 1 + kBias + kMan) << 23;
  const uint32_t ovf = saturate ? kMaxCode : (kHasInf ? kInfCode : nan_code);
  const __m512i u = _mm512_castps_si512(v);
  const __m512i a = _mm512_and_si512(u, set1(0x7FFFFFFFu));
  const __m512i sign = _mm512_srli_epi32(_mm512_andnot_si512(a, u), 31 - kExp - kMan);
  __m512i add;
  if constexpr (kShift <= kR) {
    add = _mm512_srli_epi32(r, kR - kShift);
  } else {
    add = _mm512_add_epi32(_mm512_slli_epi32(r, kShift - kR), set1((1u << (kShift - kR)) - 1u));
  }
  __m512i code =
      _mm512_sub_epi32(_mm512_srli_epi32(_mm512_add_epi32(a, add), kShift), set1(kRebias));
  // Lanes below the smallest normal or NaN: a - kMinNormal wraps above 0x7F800000 - kMinNormal
  // for both, one unsigned compare. Rare in practice, so a branch skips their arithmetic.
  const __m512i inf = set1(0x7F800000u);
  const __mmask16 special = _mm512_cmpgt_epu32_mask(_mm512_sub_epi32(a, set1(kMinNormal)),
                                                    set1(0x7F800000u - kMinNormal));
  // Inf (and finite overflow) land above kMaxCode through the normal-path arithmetic.
  if (saturate) {
    code = _mm512_min_epu32(code, set1(kMaxCode));
  } else {
    code = _mm512_mask_mov_epi32(code, _mm512_cmpgt_epu32_mask(code, set1(kMaxCode)), set1(ovf));
  }
  if (special != 0) {
    const __mmask16 is_sub = _mm512_cmplt_epu32_mask(a, set1(kMinNormal));
    const __m512 af = _mm512_castsi512_ps(_mm512_maskz_mov_epi32(is_sub, a));
    const __m512 t = _mm512_roundscale_ps(_mm512_mul_ps(af, _mm512_castsi512_ps(set1(kSubMul))),
                                          _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC);
    const __m512i sub = _mm512_srli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(t), r), kR);
    code = _mm512_mask_mov_epi32(code, is_sub, sub);  // <= 2^kMan: never above kMaxCode
    code = _mm512_mask_mov_epi32(code, _mm512_cmpgt_epu32_mask(a, inf), set1(nan_code));
  }
  return _mm512_or_si512(code, sign);
}

template <int kFmt>
FRUGAL_INLINE __m512i fp8_rne_x16(__m512 v, bool saturate) {
  using L = Layout<kFmt>;
  constexpr int kMan = L::kMan, kBias = L::kBias, kShift = L::kShift;
  constexpr uint32_t kMaxCode = L::kMaxCode, kMinNormal = L::kMinNormal;
  constexpr uint32_t kOvf = kMaxCode + 1;  // non-saturating overflow: e4m3 NaN, e5m2 Inf
  constexpr uint32_t kMagic = static_cast<uint32_t>(127 + 23 + 1 - kBias - kMan) << 23;
  const __m512i u = _mm512_castps_si512(v);
  const __m512i a = _mm512_and_si512(u, set1(0x7FFFFFFFu));
  const __m512i s = _mm512_and_si512(_mm512_srli_epi32(u, 24), set1(0x80u));
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(a, kShift), set1(1u));
  // (a - rebias + half ulp - 1 + odd) >> kShift, the constants folded into one.
  __m512i m = _mm512_srli_epi32(
      _mm512_add_epi32(_mm512_add_epi32(a, odd), set1((1u << (kShift - 1)) - 1u -
                                                      (static_cast<uint32_t>(127 - kBias) << 23))),
      kShift);
  if (saturate) {
    m = _mm512_min_epu32(m, set1(kMaxCode));
  } else {
    m = _mm512_mask_mov_epi32(m, _mm512_cmpgt_epu32_mask(m, set1(kMaxCode)), set1(kOvf));
  }
  // Lanes below the smallest normal or NaN (one unsigned compare, see small_sr_x16): rare, so a
  // branch skips their arithmetic.
  const __mmask16 special = _mm512_cmpgt_epu32_mask(_mm512_sub_epi32(a, set1(kMinNormal)),
                                                    set1(0x7F800000u - kMinNormal));
  if (special != 0) {
    const __m512i sub =
        _mm512_sub_epi32(_mm512_castps_si512(_mm512_add_ps(_mm512_castsi512_ps(a),
                                                           _mm512_castsi512_ps(set1(kMagic)))),
                         set1(kMagic));
    m = _mm512_mask_mov_epi32(m, _mm512_cmplt_epu32_mask(a, set1(kMinNormal)), sub);
    m = _mm512_mask_mov_epi32(m, _mm512_cmpgt_epu32_mask(a, set1(0x7F800000u)), set1(0x7Fu));
  }
  return _mm512_or_si512(m, s);
}

// Converts 16 elements x[0..16) to fp8 with nearest even into y; returns their |x| bits (the
// tail of a block after its 64-element groups).
template <int kFmt>
FRUGAL_INLINE __m512i convert_rne_x16(const float* x, Code<kFmt>* y, __m512 vs, bool sat) {
  const __m512 xv = _mm512_loadu_ps(x);
  const __m512i c = fp8_rne_x16<kFmt>(_mm512_mul_ps(xv, vs), sat);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(y), _mm512_cvtepi32_epi8(c));
  return _mm512_and_si512(_mm512_castps_si512(xv), set1(0x7FFFFFFFu));
}

// Stochastic rounding, AVX-512. Philox4x32-kSrRounds of the 16 blocks with counters
// first + offset .. first + 15 + offset (two groups of the stream layout in amp/cast_bits.hpp):
// block b of a group sits in 64-bit lane b of its registers, its words in the low halves, so one
// vpmuludq gives 8 full 32 x 32 -> 64-bit products and one vpternlogd a three-way XOR; the two
// groups interleave to hide the multiply latency. rows[2 h + q] is row q of group h: its 32-bit
// lanes (2 b, 2 b + 1) hold words (x, y) (row 0) or (z, w) (row 1) of the group's block b.
FRUGAL_AMP_SIMD_INLINE void sr_philox_rows(const __m512i* keys, uint64_t offset, uint64_t first,
                                           __m512i rows[4]) {
  const __m512i off = _mm512_set1_epi64(static_cast<long long>(offset));
  const __m512i c0 = _mm512_add_epi64(_mm512_set1_epi64(static_cast<long long>(first + offset)),
                                      _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0));
  const __m512i c1 = _mm512_add_epi64(c0, _mm512_set1_epi64(8));
  const __m512i one = _mm512_set1_epi64(1);
  // Counter words: x = low 32 bits of first + b + offset (vpmuludq reads only the low halves),
  // y = its high 32 bits, z = the carry of that 64-bit sum (it wrapped iff it is below offset).
  __m512i x0 = c0, y0 = _mm512_srli_epi64(c0, 32);
  __m512i z0 = _mm512_maskz_mov_epi64(_mm512_cmplt_epu64_mask(c0, off), one);
  __m512i w0 = _mm512_setzero_si512();
  __m512i x1 = c1, y1 = _mm512_srli_epi64(c1, 32);
  __m512i z1 = _mm512_maskz_mov_epi64(_mm512_cmplt_epu64_mask(c1, off), one);
  __m512i w1 = _mm512_setzero_si512();
  const __m512i m0 = _mm512_set1_epi64(Philox4x32::kM0), m1 = _mm512_set1_epi64(Philox4x32::kM1);
  for (int r = 0; r < kSrRounds; ++r) {
    // The round keys are read from memory (folded into vpternlogd): kept in registers, they
    // would take 14 of the 32 and push the conversions' constants out.
    const __m512i vkx = keys[2 * r], vky = keys[2 * r + 1];
    const __m512i p0a = _mm512_mul_epu32(x0, m0), p1a = _mm512_mul_epu32(z0, m1);
    const __m512i p0b = _mm512_mul_epu32(x1, m0), p1b = _mm512_mul_epu32(z1, m1);
    x0 = _mm512_ternarylogic_epi32(_mm512_srli_epi64(p1a, 32), y0, vkx, 0x96);
    z0 = _mm512_ternarylogic_epi32(_mm512_srli_epi64(p0a, 32), w0, vky, 0x96);
    x1 = _mm512_ternarylogic_epi32(_mm512_srli_epi64(p1b, 32), y1, vkx, 0x96);
    z1 = _mm512_ternarylogic_epi32(_mm512_srli_epi64(p0b, 32), w1, vky, 0x96);
    y0 = p1a;
    w0 = p0a;
    y1 = p1b;
    w1 = p0b;
  }
  // Odd 32-bit lanes take the low half of y (w) from the even lane below: one masked vpshufd.
  constexpr __mmask16 kOdd = 0xAAAA;
  constexpr auto kLowToOdd = static_cast<_MM_PERM_ENUM>(0xA0);  // dwords (0, 0, 2, 2)
  rows[0] = _mm512_mask_shuffle_epi32(x0, kOdd, y0, kLowToOdd);
  rows[1] = _mm512_mask_shuffle_epi32(z0, kOdd, w0, kLowToOdd);
  rows[2] = _mm512_mask_shuffle_epi32(x1, kOdd, y1, kLowToOdd);
  rows[3] = _mm512_mask_shuffle_epi32(z1, kOdd, w1, kLowToOdd);
}

// Piece kQ (bits [kR kQ, kR kQ + kR)) of every 32-bit lane of a row, in the low bits.
template <int kR, int kQ>
FRUGAL_AMP_SIMD_INLINE __m512i sr_piece_x16(__m512i row) {
  if constexpr (kR * (kQ + 1) == 32) {
    return _mm512_srli_epi32(row, 32 - kR);
  } else if constexpr (kQ == 0) {
    return _mm512_and_si512(row, set1((1u << kR) - 1u));
  } else {
    return _mm512_and_si512(_mm512_srli_epi32(row, kR * kQ), set1((1u << kR) - 1u));
  }
}

// bf16_sr_branchless lane by lane (r: 16 random bits per lane).
FRUGAL_AMP_SIMD_INLINE __m512i bf16_sr_x16(__m512i u, __m512i a, __m512i r, bool saturate) {
  __m512i m = _mm512_srli_epi32(_mm512_add_epi32(a, r), 16);
  if (saturate) m = _mm512_min_epu32(m, set1(0x7F7Fu));
  m = _mm512_mask_mov_epi32(m, _mm512_cmpgt_epu32_mask(a, set1(0x7F800000u)), set1(0x7FC0u));
  return _mm512_or_si512(m, _mm512_and_si512(_mm512_srli_epi32(u, 16), set1(0x8000u)));
}

// Stochastic rounding of 16 scaled values v with piece kQ of `row` as their random bits. The
// result is in "high-word form", so that one word permute packs two vectors: bits 16-31 of each
// lane hold the bf16 code, or for fp8 the sign in bit 31 and the 7 magnitude bits at bit
// kShift (23 - mantissa bits) up. The common case (the result a normal of the target, no overflow
// possible) is the normal-path arithmetic of small_sr_branchless on the signed bits u, the random
// bits aligned and the ceil constant and the rebias merged into one addend by one vpternlogd
// (their bits do not overlap; the sum stays below 2^31 - so the sign bit passes through - for
// these lanes). A vector with any other lane takes a slower path: the subnormal code alone for fp8
// when every such lane is below the smallest normal, else (near or past the largest finite, Inf,
// NaN) the full lane-by-lane code. f16 has its own form, sr_f16_x16.
template <int kFmt, int kQ>
FRUGAL_AMP_SIMD_INLINE __m512i sr_convert_x16(__m512 v, __m512i row, bool sat, const __m512i* cst) {
  constexpr int kR = sr_bits<kFmt>();
  const __m512i u = _mm512_castps_si512(v);
  const __m512i a = _mm512_and_si512(u, set1(0x7FFFFFFFu));
  if constexpr (kFmt == kFmtBF16) {
    // bf16 keeps fp32's exponent range: the high word of u + r is the code, sign included, unless
    // |x| + r may reach the Inf exponent (|x| > 0x7F7F0000: near max, Inf, NaN).
    const __m512i r = sr_piece_x16<16, kQ>(row);
    const __mmask16 special = _mm512_cmpgt_epu32_mask(a, set1(0x7F7F0000u));
    __m512i h = _mm512_add_epi32(u, r);
    if (special != 0) h = _mm512_slli_epi32(bf16_sr_x16(u, a, r, sat), 16);
    return h;
  } else {
    static_assert(kFmt != kFmtF16, "f16 takes sr_f16_x16");
    using L = Layout<kFmt>;
    constexpr int kExp = L::kExp, kMan = L::kMan, kBias = L::kBias, kShift = L::kShift;
    constexpr bool kHasInf = L::kHasInf;
    constexpr uint32_t kNan = 0x7Fu;
    constexpr uint32_t kMaxCode = L::kMaxCode, kMinNormal = L::kMinNormal, kRebias = L::kRebias;
    // Largest |x| whose code stays <= kMaxCode for every addend (< 2^kShift).
    constexpr uint32_t kNormMax = (kMaxCode + kRebias) << kShift;
    const __mmask16 special =
        _mm512_cmpgt_epu32_mask(_mm512_sub_epi32(a, set1(kMinNormal)), set1(kNormMax - kMinNormal));
    // (r << kUp) + 2^kUp - 1 (the ceil of small_sr_branchless) - (kRebias << kShift).
    constexpr int kUp = kShift - kR;
    constexpr int kMove = kUp - kR * kQ;
    __m512i s;
    if constexpr (kMove >= 0) {
      s = _mm512_slli_epi32(row, kMove);
    } else {
      s = _mm512_srli_epi32(row, -kMove);
    }
    // The two constants come from memory (cst, see sr_fp8_constants): as immediates GCC
    // rebuilds them with mov + vpbroadcastd for every vector, short of registers.
    const __m512i add = _mm512_ternarylogic_epi32(s, cst[0], cst[1], 0xEA);
    __m512i h = _mm512_add_epi32(u, add);
    if (special != 0) {
      if (_mm512_cmpgt_epu32_mask(a, set1(kNormMax)) != 0) {
        // Near the largest finite, Inf or NaN: the full lane-by-lane code.
        const __m512i c =
            small_sr_x16<kExp, kMan, kHasInf, kR>(v, sr_piece_x16<kR, kQ>(row), sat, kNan);
        h = _mm512_or_si512(_mm512_slli_epi32(_mm512_and_si512(c, set1(0x7Fu)), kShift),
                            _mm512_slli_epi32(_mm512_and_si512(c, set1(0x80u)), 24));
      } else {
        // Only lanes below the smallest normal (zeros included; common for e4m3, whose
        // smallest normal is 2^-6): small_sr_x16's subnormal code s = ceil(|x| 2^kR / step) +
        // r, code s >> kR, put at bit kShift as s << (kShift - kR) (s < 2^(kR + kMan + 1), so
        // bits 24-30 stay clear; the bits below kShift are not read), sign in bit 31.
        constexpr uint32_t kSubMul = static_cast<uint32_t>(127 + kR - 1 + kBias + kMan) << 23;
        const __m512 t =
            _mm512_roundscale_ps(_mm512_maskz_mul_ps(special, _mm512_castsi512_ps(a),
                                                     _mm512_castsi512_ps(set1(kSubMul))),
                                 _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC);
        const __m512i sub = _mm512_slli_epi32(
            _mm512_add_epi32(_mm512_cvttps_epi32(t), sr_piece_x16<kR, kQ>(row)), kShift - kR);
        // sub | (u & ~0x7FFFFFFF), bitwise: A | (B & ~C).
        h = _mm512_mask_mov_epi32(h, special,
                                  _mm512_ternarylogic_epi32(sub, u, set1(0x7FFFFFFFu), 0xF4));
      }
    }
    return h;
  }
}

// x * scale, or x itself when the scale is 1 (UnitScale): the same bits (no flush-to-zero, and
// NaN lanes give the canonical NaN code either way), one multiply less per vector.
struct UnitScale {};
FRUGAL_AMP_SIMD_INLINE __m512 scaled(__m512 x, __m512 vs) { return _mm512_mul_ps(x, vs); }
FRUGAL_AMP_SIMD_INLINE __m512 scaled(__m512 x, UnitScale) { return x; }

// The constants of sr_convert_x16's fp8 addend: the mask of the aligned random bits, then the
// ceil constant with the rebias (zeros for f16 / bf16, which do not use them).
template <int kFmt>
FRUGAL_INLINE void sr_fp8_constants(__m512i* cst) {
  cst[0] = cst[1] = _mm512_setzero_si512();
  if constexpr (kFmt >= kFmtE4M3) {
    constexpr int kR = sr_bits<kFmt>();
    constexpr int kShift = Layout<kFmt>::kShift;
    constexpr int kUp = kShift - kR;
    constexpr uint32_t kRebias = Layout<kFmt>::kRebias;
    cst[0] = set1(((1u << kR) - 1u) << kUp);
    cst[1] = set1(((1u << kUp) - 1u) | (0u - (kRebias << kShift)));
  }
  // Opaque to the optimizer, so that it reads them from memory rather than rebuilding them.
  __asm__("" : "+m"(cst[0]), "+m"(cst[1]));
}

// Elements 16 kP .. 16 kP + 15 of a group (rows: its two rows) in high-word form; max |x| bits
// into vmax.
template <int kFmt, bool kAmax, int kP, class S>
FRUGAL_AMP_SIMD_INLINE __m512i sr_high_x16(const float* xg, S vs, bool sat, __m512i row0,
                                           __m512i row1, __m512i& vmax, const __m512i* cst) {
  constexpr int kK = 32 / sr_bits<kFmt>();
  const __m512 xv = _mm512_loadu_ps(xg + 16 * kP);
  if constexpr (kAmax) {
    vmax = _mm512_max_epu32(vmax, _mm512_and_si512(_mm512_castps_si512(xv), set1(0x7FFFFFFFu)));
  }
  return sr_convert_x16<kFmt, kP % kK>(scaled(xv, vs), kP / kK == 0 ? row0 : row1, sat, cst);
}

// The high words of a (elements 0-15) then b (16-31), in order.
FRUGAL_AMP_SIMD_INLINE __m512i high_words(__m512i a, __m512i b) {
  const __m512i idx =
      _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33, 31, 29, 27,
                       25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  return _mm512_permutex2var_epi16(a, idx, b);
}

// 32 elements 32 kM .. 32 kM + 31 of a group: f16 / bf16 codes (one 64-byte store), or for fp8
// the 16-bit words (sign << 7) | code in the low bytes.
template <int kFmt, bool kAmax, int kM, class S>
FRUGAL_AMP_SIMD_INLINE __m512i sr_pair_x16(const float* xg, S vs, bool sat, __m512i row0,
                                           __m512i row1, __m512i& vmax, const __m512i* cst) {
  const __m512i w =
      high_words(sr_high_x16<kFmt, kAmax, 2 * kM>(xg, vs, sat, row0, row1, vmax, cst),
                 sr_high_x16<kFmt, kAmax, 2 * kM + 1>(xg, vs, sat, row0, row1, vmax, cst));
  if constexpr (kFmt <= kFmtBF16) {
    return w;
  } else {
    // Word: sign in bit 15, magnitude code from bit kShift - 16 up (bits 11-14 are zero).
    constexpr int kShift = Layout<kFmt>::kShift;
    return _mm512_ternarylogic_epi32(set1(0x007F007Fu), _mm512_srli_epi16(w, kShift - 16),
                                     _mm512_srli_epi16(w, 8), 0xCA);  // A ? B : C, bitwise
  }
}

// f16, elements 16 kP .. 16 kP + 15 of a group as 16 packed codes (F16C's vcvtps2ph does the
// rebias and the packing). For target normals (no overflow possible) the reference's round-up
// test r + (rem << 3) >= 2^16 (13 dropped bits, 16 random bits) is (r >> 3) + rem >= 2^13: adding
// r >> 3 to the fp32 bits (|x| + (r >> 3) < 2^31, the sign passes through) and converting with
// round toward zero gives the reference bits. Any other lane sends the vector to small_sr_x16.
template <bool kAmax, int kP, class S>
FRUGAL_AMP_SIMD_INLINE __m256i sr_f16_x16(const float* xg, S vs, bool sat, __m512i row0,
                                          __m512i row1, __m512i& vmax) {
  constexpr int kQ = kP % 2;
  using L = Layout<kFmtF16>;
  constexpr uint32_t kMinNormal = L::kMinNormal;                          // 2^-14
  constexpr uint32_t kNormMax = (L::kMaxCode + L::kRebias) << L::kShift;  // 65504
  const __m512i row = kP / 2 == 0 ? row0 : row1;
  const __m512 xv = _mm512_loadu_ps(xg + 16 * kP);
  if constexpr (kAmax) {
    vmax = _mm512_max_epu32(vmax, _mm512_and_si512(_mm512_castps_si512(xv), set1(0x7FFFFFFFu)));
  }
  const __m512 v = scaled(xv, vs);
  const __m512i u = _mm512_castps_si512(v);
  const __m512i a = _mm512_and_si512(u, set1(0x7FFFFFFFu));
  const __mmask16 special =
      _mm512_cmpgt_epu32_mask(_mm512_sub_epi32(a, set1(kMinNormal)), set1(kNormMax - kMinNormal));
  if (special != 0) {
    return _mm512_cvtepi32_epi16(
        small_sr_x16<5, 10, true, 16>(v, sr_piece_x16<16, kQ>(row), sat, 0x7E00u));
  }
  __m512i add;
  if constexpr (kQ == 0) {
    add = _mm512_and_si512(_mm512_srli_epi32(row, 3), set1(0x1FFFu));
  } else {
    add = _mm512_srli_epi32(row, 19);
  }
  return _mm512_cvtps_ph(_mm512_castsi512_ps(_mm512_add_epi32(u, add)),
                         _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
}

// 32 bytes to p: a non-temporal store (p 32-byte aligned) or a plain one.
template <bool kNT>
FRUGAL_AMP_SIMD_INLINE void store32(void* p, __m256i v) {
  if constexpr (kNT) {
    _mm256_stream_si256(static_cast<__m256i*>(p), v);
  } else {
    _mm256_storeu_si256(static_cast<__m256i*>(p), v);
  }
}

// 64 bytes to p: a non-temporal store (p 64-byte aligned) or a plain one.
template <bool kNT>
FRUGAL_AMP_SIMD_INLINE void store64(void* p, __m512i v) {
  if constexpr (kNT) {
    _mm512_stream_si512(static_cast<__m512i*>(p), v);
  } else {
    _mm512_storeu_si512(p, v);
  }
}

// One full group of G = 8 E elements.
template <int kFmt, bool kAmax, bool kNT, class S, int... kM>
FRUGAL_AMP_SIMD_INLINE void sr_group_x16(const float* xg, Code<kFmt>* yg, S vs, bool sat,
                                         __m512i row0, __m512i row1, __m512i& vmax,
                                         const __m512i* cst, std::integer_sequence<int, kM...>) {
  if constexpr (kFmt == kFmtF16) {
    (store32<kNT>(yg + 32 * kM, sr_f16_x16<kAmax, 2 * kM>(xg, vs, sat, row0, row1, vmax)), ...);
    (store32<kNT>(yg + 32 * kM + 16, sr_f16_x16<kAmax, 2 * kM + 1>(xg, vs, sat, row0, row1, vmax)),
     ...);
  } else if constexpr (kFmt <= kFmtBF16) {
    (store64<kNT>(yg + 32 * kM, sr_pair_x16<kFmt, kAmax, kM>(xg, vs, sat, row0, row1, vmax, cst)),
     ...);
  } else {
    // Four pairs: 128 codes; the low bytes of two word vectors make one 64-byte store.
    const __m512i w[] = {sr_pair_x16<kFmt, kAmax, kM>(xg, vs, sat, row0, row1, vmax, cst)...};
    for (int m = 0; m < 4; m += 2) {
#ifdef __AVX512VBMI__
      const __m512i idx = _mm512_set_epi8(
          126, 124, 122, 120, 118, 116, 114, 112, 110, 108, 106, 104, 102, 100, 98, 96, 94, 92, 90,
          88, 86, 84, 82, 80, 78, 76, 74, 72, 70, 68, 66, 64, 62, 60, 58, 56, 54, 52, 50, 48, 46,
          44, 42, 40, 38, 36, 34, 32, 30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
      store64<kNT>(yg + 32 * m, _mm512_permutex2var_epi8(w[m], idx, w[m + 1]));
#else
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(yg + 32 * m), _mm512_cvtepi16_epi8(w[m]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(yg + 32 * m + 32),
                          _mm512_cvtepi16_epi8(w[m + 1]));
#endif
    }
  }
}

// The full groups of [i, gend) (i a multiple of the group size): two groups per Philox call
// (their chains interleave), then at most one more. Returns where it stopped. vmax: max |x| bits.
template <int kFmt, bool kAmax, bool kNT, class S>
int64_t sr_groups_x16(const float* x, Code<kFmt>* y, int64_t i, int64_t gend, const __m512i* keys,
                      uint64_t offset, S vs, bool sat, __m512i& vmax_out) {
  constexpr int64_t kE = 128 / sr_bits<kFmt>(), kG = 8 * kE;
  using Pairs = std::make_integer_sequence<int, static_cast<int>(kG / 32)>;
  __m512i vmax = vmax_out;  // a local: the byte stores below may alias anything in memory
  for (; i + 2 * kG <= gend; i += 2 * kG) {
    __m512i rows[4];
    sr_philox_rows(keys, offset, static_cast<uint64_t>(i / kE), rows);
    sr_group_x16<kFmt, kAmax, kNT>(x + i, y + i, vs, sat, rows[0], rows[1], vmax,
                                   keys + 2 * kSrRounds, Pairs{});
    sr_group_x16<kFmt, kAmax, kNT>(x + i + kG, y + i + kG, vs, sat, rows[2], rows[3], vmax,
                                   keys + 2 * kSrRounds, Pairs{});
  }
  if (i + kG <= gend) {
    __m512i rows[4];
    sr_philox_rows(keys, offset, static_cast<uint64_t>(i / kE), rows);
    sr_group_x16<kFmt, kAmax, kNT>(x + i, y + i, vs, sat, rows[0], rows[1], vmax,
                                   keys + 2 * kSrRounds, Pairs{});
    i += kG;
  }
  vmax_out = vmax;
  return i;
}

// Nearest-even fp8, the common lane: |x| scale a normal of the target that does not overflow,
// or a zero. For |x| scale = a, adding the rebias, half an ulp - 1 and the odd bit of the kept
// mantissa (vptestmd + masked add) and shifting gives dev = code - 2^kMan: within
// [0, kFastMax] exactly for these lanes, above it for every other (the sum wraps for a below the
// half ulp that rounds up to the smallest normal, and passes kFastMax for overflow, Inf and NaN).
// Zeros are forced to dev 0 and keep their sign alone. Returns the code lanes (sign in bit 7);
// `dev` lets the caller test a whole group at once.
template <int kFmt, bool kAmax, class S>
FRUGAL_AMP_SIMD_INLINE __m512i fp8_rne_common_x16(const float* x, S vs, __m512i& vmax,
                                                  __m512i& dev) {
  using L = Layout<kFmt>;
  constexpr int kMan = L::kMan, kShift = L::kShift;
  constexpr uint32_t kMinNormal = L::kMinNormal;
  const __m512i u = _mm512_castps_si512(_mm512_loadu_ps(x));
  const __m512i ax = _mm512_and_si512(u, set1(0x7FFFFFFFu));
  if constexpr (kAmax) vmax = _mm512_max_epu32(vmax, ax);
  // |x| scale has the bits of |x scale| (scale > 0), and the sign of x scale is that of x.
  const __m512i a = _mm512_castps_si512(scaled(_mm512_castsi512_ps(ax), vs));
  const __mmask16 nonzero = _mm512_test_epi32_mask(a, a);
  __m512i t = _mm512_add_epi32(a, set1((1u << (kShift - 1)) - 1u - kMinNormal));
  t = _mm512_mask_add_epi32(t, _mm512_test_epi32_mask(a, set1(1u << kShift)), t, set1(1u));
  dev = _mm512_maskz_srli_epi32(nonzero, t, kShift);
  // (u >> 24) & 0x80 | 2^kMan, or for zeros u >> 24 (their sign byte) as it is.
  const __m512i add = _mm512_mask_ternarylogic_epi32(_mm512_srli_epi32(u, 24), nonzero, set1(0x80u),
                                                     set1(1u << kMan), 0xEA);  // (A & B) | C
  return _mm512_add_epi32(dev, add);
}

// The low bytes of four vectors of codes (each lane <= 0xFF), in order.
FRUGAL_AMP_SIMD_INLINE __m512i pack_bytes_x64(__m512i c0, __m512i c1, __m512i c2, __m512i c3) {
  // The packs work within 128-bit lanes: lane L of the result holds 4 codes of c0, c1, c2, c3.
  const __m512i b = _mm512_packus_epi16(_mm512_packus_epi32(c0, c1), _mm512_packus_epi32(c2, c3));
  const __m512i idx = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
  return _mm512_permutexvar_epi32(idx, b);
}

// Nearest-even fp8 of x[0, 64) into y (kNT: a non-temporal store, y 64-byte aligned): the
// common-lane arithmetic for four vectors, one unsigned max over their dev to test the group,
// and fp8_rne_x16 (every lane) for the vectors of a group that holds another lane.
template <int kFmt, bool kAmax, bool kNT, class S>
FRUGAL_AMP_SIMD_INLINE void fp8_rne_x64(const float* x, uint8_t* y, S vs, bool sat, __m512i& vmax) {
  constexpr uint32_t kFastMax = Layout<kFmt>::kMaxCode - (1u << Layout<kFmt>::kMan);
  __m512i d[4], c[4];
  for (int j = 0; j < 4; ++j) c[j] = fp8_rne_common_x16<kFmt, kAmax>(x + 16 * j, vs, vmax, d[j]);
  const __m512i dmax = _mm512_max_epu32(_mm512_max_epu32(d[0], d[1]), _mm512_max_epu32(d[2], d[3]));
  if (_mm512_cmpgt_epu32_mask(dmax, set1(kFastMax)) != 0) [[unlikely]] {
    for (int j = 0; j < 4; ++j) {
      if (_mm512_cmpgt_epu32_mask(d[j], set1(kFastMax)) != 0) {
        c[j] = fp8_rne_x16<kFmt>(scaled(_mm512_loadu_ps(x + 16 * j), vs), sat);
      }
    }
  }
  store64<kNT>(y, pack_bytes_x64(c[0], c[1], c[2], c[3]));
}

// Nearest-even fp8 of the full 64-element groups of [i, end); returns where it stopped.
template <int kFmt, bool kAmax, bool kNT, class S>
int64_t fp8_rne_groups(const float* x, uint8_t* y, int64_t i, int64_t end, S vs, bool sat,
                       __m512i& vmax_out) {
  __m512i vmax = vmax_out;  // a local: the stores may alias anything in memory
  for (; i + 64 <= end; i += 64) fp8_rne_x64<kFmt, kAmax, kNT>(x + i, y + i, vs, sat, vmax);
  vmax_out = vmax;
  return i;
}
#endif

// Stochastic rounding of elements [lo, hi) of the full groups (lo a multiple of the group
// size), one group at a time, scalar: the stream layout of amp/cast_bits.hpp spelled out.
template <int kFmt, bool kAmax>
void sr_groups_scalar(const float* x, Code<kFmt>* y, int64_t lo, int64_t hi, float scale, bool sat,
                      uint64_t seed, uint64_t offset, uint32_t& amax) {
  constexpr int kR = sr_bits<kFmt>();
  constexpr int64_t kE = 128 / kR, kG = 8 * kE;
  for (int64_t g0 = lo; g0 < hi; g0 += kG) {
    Uint4 blk[8];
    for (int b = 0; b < 8; ++b) {
      blk[b] = sr_philox(philox_counter(static_cast<uint64_t>(g0 / kE + b), offset), seed);
    }
    for (int j = 0; j < kG; ++j) {
      const float v = x[g0 + j];
      if constexpr (kAmax) amax = std::max(amax, detail::bit_cast<uint32_t>(v) & 0x7FFFFFFFu);
      y[g0 + j] = convert_one<kFmt, true>(v, scale, sat, sr_group_random(blk, j, kR));
    }
  }
}

// Stochastic rounding of elements [lo, hi) of the tail (after the last full group, which ends
// at `full`): block by block in stream order.
template <int kFmt, bool kAmax>
void sr_tail_scalar(const float* x, Code<kFmt>* y, int64_t full, int64_t lo, int64_t hi,
                    float scale, bool sat, uint64_t seed, uint64_t offset, uint32_t& amax) {
  constexpr int kR = sr_bits<kFmt>();
  constexpr int64_t kE = 128 / kR, kK = 32 / kR;
  for (int64_t i = lo; i < hi; ++i) {
    const int64_t t = i - full;
    const Uint4 b =
        sr_philox(philox_counter(static_cast<uint64_t>(full / kE + t / kE), offset), seed);
    const float v = x[i];
    if constexpr (kAmax) amax = std::max(amax, detail::bit_cast<uint32_t>(v) & 0x7FFFFFFFu);
    y[i] = convert_one<kFmt, true>(
        v, scale, sat, sr_piece(b, static_cast<int>(t % kE / kK), static_cast<int>(t % kK), kR));
  }
}

// Stochastic rounding of elements [begin, end) of n (begin a multiple of kBlock, so of the
// group size).
template <int kFmt, bool kAmax>
uint32_t cast_block_sr(const float* x, Code<kFmt>* y, int64_t begin, int64_t end, int64_t n,
                       float scale, bool sat, uint64_t seed, uint64_t offset) {
  constexpr int kR = sr_bits<kFmt>();
  constexpr int64_t kE = 128 / kR, kG = 8 * kE;
  const int64_t full = n / kG * kG;
  const int64_t gend = std::min(end, full);
  uint32_t amax = 0;
  int64_t i = begin;
#ifdef FRUGAL_AMP_AVX512
  // The Philox round keys, then the two fp8 addend constants of sr_convert_x16 (all read from
  // memory in the loop).
  __m512i keys[2 * kSrRounds + 2];
  const Uint2 k0 = Philox4x32::key_of(seed);
  for (int r = 0; r < kSrRounds; ++r) {
    keys[2 * r] = set1(k0.x + static_cast<uint32_t>(r) * Philox4x32::kW0);
    keys[2 * r + 1] = set1(k0.y + static_cast<uint32_t>(r) * Philox4x32::kW1);
  }
  sr_fp8_constants<kFmt>(keys + 2 * kSrRounds);
  const __m512 vs = _mm512_set1_ps(scale);
  __m512i vmax = _mm512_setzero_si512();
  // Outputs far larger than the caches bypass them (no read-for-ownership of the output lines);
  // smaller ones stay cached for the consumer that reads them next.
  const bool unit = scale == 1.f;
  if (use_streaming_stores(n, y + i)) {
    i = unit ? sr_groups_x16<kFmt, kAmax, true>(x, y, i, gend, keys, offset, UnitScale{}, sat, vmax)
             : sr_groups_x16<kFmt, kAmax, true>(x, y, i, gend, keys, offset, vs, sat, vmax);
    _mm_sfence();
  } else {
    i = unit
            ? sr_groups_x16<kFmt, kAmax, false>(x, y, i, gend, keys, offset, UnitScale{}, sat, vmax)
            : sr_groups_x16<kFmt, kAmax, false>(x, y, i, gend, keys, offset, vs, sat, vmax);
  }
  if constexpr (kAmax) amax = static_cast<uint32_t>(_mm512_reduce_max_epu32(vmax));
#endif
  if (i < gend) sr_groups_scalar<kFmt, kAmax>(x, y, i, gend, scale, sat, seed, offset, amax);
  if (end > full) {
    sr_tail_scalar<kFmt, kAmax>(x, y, full, std::max(begin, full), end, scale, sat, seed, offset,
                                amax);
  }
  return amax;
}

template <int kFmt, bool kSR, bool kAmax>
uint32_t cast_block(const float* x, Code<kFmt>* y, int64_t begin, int64_t end, int64_t n,
                    float scale, Overflow ov, uint64_t seed, uint64_t offset) {
  const bool sat = ov == Overflow::kSaturate;
  if constexpr (kSR) {
    return cast_block_sr<kFmt, kAmax>(x, y, begin, end, n, scale, sat, seed, offset);
  }
  uint32_t amax = 0;
#ifdef FRUGAL_AMP_AVX512
  // The SIMD path below handles fp8 nearest even (bf16 and f16 nearest even vectorize well from
  // the scalar branchless code or use F16C).
  constexpr bool kSimd = kFmt >= kFmtE4M3;
  const __m512 vs = _mm512_set1_ps(scale);
  __m512i vmax = _mm512_setzero_si512();
#endif
  {
    int64_t i0 = begin;
#ifdef FRUGAL_AMP_AVX512
    if constexpr (kSimd) {
      // As the stochastic casts: outputs far larger than the caches bypass them.
      const bool unit = scale == 1.f;
      if (use_streaming_stores(n, y + i0)) {
        i0 = unit ? fp8_rne_groups<kFmt, kAmax, true>(x, y, i0, end, UnitScale{}, sat, vmax)
                  : fp8_rne_groups<kFmt, kAmax, true>(x, y, i0, end, vs, sat, vmax);
        _mm_sfence();
      } else {
        i0 = unit ? fp8_rne_groups<kFmt, kAmax, false>(x, y, i0, end, UnitScale{}, sat, vmax)
                  : fp8_rne_groups<kFmt, kAmax, false>(x, y, i0, end, vs, sat, vmax);
      }
      for (; i0 + 16 <= end; i0 += 16) {
        const __m512i ax = convert_rne_x16<kFmt>(x + i0, y + i0, vs, sat);
        if constexpr (kAmax) vmax = _mm512_max_epu32(vmax, ax);
      }
    }
#endif
#ifdef FRUGAL_AMP_F16C
    if constexpr (kFmt == kFmtF16) {
      // F16C's vcvtps2ph with an explicit round-to-nearest-even immediate gives the reference bits
      // for every non-NaN input (subnormals, overflow to Inf); NaNs are replaced by the canonical
      // sign | 0x7E00 and saturation clamps the magnitude at 0x7BFF. Checked against the
      // reference on random bit patterns in tests/amp/cast_test.cpp.
      const __m256 vs = _mm256_set1_ps(scale);
      const __m128i sign_mask = _mm_set1_epi16(static_cast<short>(0x8000));
      const __m128i qnan = _mm_set1_epi16(0x7E00);
      const __m128i maxf = _mm_set1_epi16(0x7BFF);
      __m256i vmax = _mm256_setzero_si256();
      const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF);
      for (; i0 + 8 <= end; i0 += 8) {
        const __m256 xv = _mm256_loadu_ps(x + i0);
        if constexpr (kAmax) {
          vmax = _mm256_max_epu32(vmax, _mm256_and_si256(_mm256_castps_si256(xv), abs_mask));
        }
        const __m256 v = _mm256_mul_ps(xv, vs);
        __m128i h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT);
        const __m128i sg = _mm_and_si128(h, sign_mask);
        if (sat) h = _mm_or_si128(sg, _mm_min_epu16(_mm_andnot_si128(sign_mask, h), maxf));
        const __m256i nan32 = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        const __m128i nan16 =
            _mm_packs_epi32(_mm256_castsi256_si128(nan32), _mm256_extracti128_si256(nan32, 1));
        h = _mm_blendv_epi8(h, _mm_or_si128(sg, qnan), nan16);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i0), h);
      }
      if constexpr (kAmax) {
        alignas(32) uint32_t lanes[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), vmax);
        for (uint32_t l : lanes) amax = std::max(amax, l);
      }
    }
#endif
    for (int64_t i = i0; i < end; ++i) {
      const float v = x[i];
      if constexpr (kAmax) amax = std::max(amax, detail::bit_cast<uint32_t>(v) & 0x7FFFFFFFu);
      y[i] = convert_one<kFmt, false>(v, scale, sat, 0u);
    }
  }
#ifdef FRUGAL_AMP_AVX512
  if constexpr (kAmax) amax = std::max(amax, static_cast<uint32_t>(_mm512_reduce_max_epu32(vmax)));
#endif
  return amax;
}

template <int kFmt, bool kSR, bool kAmax>
float run(ConstTensorView x, TensorView out, const amp::CastOptions& opt, const ExecContext& ctx) {
  const int64_t n = x.numel();
  const float* xs = x.data_as<float>();
  auto* ys = static_cast<Code<kFmt>*>(out.data);
  const int64_t nblocks = (n + kBlock - 1) / kBlock;
  std::vector<uint32_t> partial(static_cast<size_t>(nblocks), 0u);
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, nblocks, 1),
                      [&](const tbb::blocked_range<int64_t>& r) {
                        for (int64_t b = r.begin(); b < r.end(); ++b) {
                          const int64_t lo = b * kBlock, hi = std::min(n, lo + kBlock);
                          partial[b] = cast_block<kFmt, kSR, kAmax>(
                              xs, ys, lo, hi, n, opt.scale, opt.overflow, ctx.seed, ctx.offset);
                        }
                      });
  });
  if (!kAmax) return 0.f;
  uint32_t m = 0;
  for (uint32_t p : partial) m = std::max(m, p);
  return m > 0x7F800000u ? std::numeric_limits<float>::quiet_NaN() : detail::bit_cast<float>(m);
}

template <int kFmt>
float dispatch_mode(ConstTensorView x, TensorView out, const amp::CastOptions& opt,
                    const ExecContext& ctx) {
  const bool sr = opt.rounding == amp::Rounding::kStochastic;
  if (sr) {
    return opt.compute_amax ? run<kFmt, true, true>(x, out, opt, ctx)
                            : run<kFmt, true, false>(x, out, opt, ctx);
  }
  return opt.compute_amax ? run<kFmt, false, true>(x, out, opt, ctx)
                          : run<kFmt, false, false>(x, out, opt, ctx);
}

}  // namespace

float amp_cast(ConstTensorView x, TensorView out, int format, const amp::CastOptions& opt,
               const ExecContext& ctx) {
  switch (format) {
    case kFmtF16:
      return dispatch_mode<kFmtF16>(x, out, opt, ctx);
    case kFmtBF16:
      return dispatch_mode<kFmtBF16>(x, out, opt, ctx);
    case kFmtE4M3:
      return dispatch_mode<kFmtE4M3>(x, out, opt, ctx);
    default:
      return dispatch_mode<kFmtE5M2>(x, out, opt, ctx);
  }
}

}  // namespace frugal::cpu
