// amp::cast on the CPU: one pass of oneTBB blocks of 64K elements; each block scales, converts
// and tracks max |x| as an integer max over the magnitude bits (order-independent, NaN wins since
// its bits exceed Inf's), so results do not depend on the thread count.
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#if defined(__F16C__) && defined(__AVX2__)
#include <immintrin.h>
#define FRUGAL_AMP_F16C 1
#endif

#include "amp/amp_internal.hpp"
#include "amp/cast_bits.hpp"
#include "frugal/core/philox.hpp"

namespace frugal::cpu {
namespace {

using namespace amp::detail;

constexpr int64_t kBlock = int64_t{1} << 16;  // a multiple of 4: Philox blocks never straddle

template <int kFmt>
using Code = std::conditional_t<(kFmt <= kFmtBF16), uint16_t, uint8_t>;

template <int kFmt, bool kSR, bool kAmax>
uint32_t cast_block(const float* x, Code<kFmt>* y, int64_t begin, int64_t end, float scale,
                    Overflow ov, uint64_t seed, uint64_t offset) {
  const bool sat = ov == Overflow::kSaturate;
  uint32_t amax = 0;
  if constexpr (kSR) {
    // Random words for 64 elements at a time (16 independent Philox blocks, a loop the compiler
    // can vectorize), then the conversions.
    constexpr int64_t kChunk = 64;
    uint32_t rnd[kChunk];
    for (int64_t c0 = begin; c0 < end; c0 += kChunk) {
      const int64_t m = std::min<int64_t>(kChunk, end - c0);
      for (int64_t k = 0; k < kChunk / 4; ++k) {
        const Uint4 b = philox_block(seed, offset, static_cast<uint64_t>(c0 + 4 * k));
        rnd[4 * k] = b.x;
        rnd[4 * k + 1] = b.y;
        rnd[4 * k + 2] = b.z;
        rnd[4 * k + 3] = b.w;
      }
      for (int64_t j = 0; j < m; ++j) {
        const float v = x[c0 + j];
        if constexpr (kAmax) amax = std::max(amax, detail::bit_cast<uint32_t>(v) & 0x7FFFFFFFu);
        const float sv = v * scale;
        if constexpr (kFmt == kFmtBF16) {
          y[c0 + j] = bf16_sr_branchless(detail::bit_cast<uint32_t>(sv), rnd[j], sat);
        } else {
          y[c0 + j] = static_cast<Code<kFmt>>(encode_sr<kFmt>(sv, ov, rnd[j]));
        }
      }
    }
  } else {
    int64_t i0 = begin;
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
      const uint32_t u = detail::bit_cast<uint32_t>(v * scale);
      if constexpr (kFmt == kFmtBF16) {
        y[i] = bf16_rne_branchless(u, sat);
      } else if constexpr (kFmt == kFmtF16) {
        y[i] = f16_rne_branchless(u, sat);
      } else {
        y[i] = static_cast<Code<kFmt>>(encode_rne<kFmt>(detail::bit_cast<float>(u), ov));
      }
    }
  }
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
                              xs, ys, lo, hi, opt.scale, opt.overflow, ctx.seed, ctx.offset);
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
