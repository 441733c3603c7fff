// Quantized GEMMs on the host: the own int8 GEMM kernel (used without oneDNN), the float /
// requantizing epilogue, and the weight-only i4 / i8 GEMV / GEMM with fused dequantization.
//
// int8 kernel: a is turned into u8 (a + 128 for i8) so that a product of u8 and s8 bytes summed in
// int32 is what AVX-512 VNNI's vpdpbusd computes; GCC vectorizes the tile loop below into it when
// the function is compiled for VNNI (a target attribute, chosen at run time), and into vpmaddwd /
// plain code elsewhere. The zero point and the +128 come back as one correction per column:
//   sum_k (a - z) b = sum_k a_u8 b - (z + 128 [i8 only]) * colsum(b).
// Work is split over blocks of output columns (a block of b stays in L2 while every row of a
// passes), so results are exact integers independent of the thread count.
#include <immintrin.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "frugal/core/packed.hpp"
#include "quant/qgemm_internal.hpp"

// GCC 12 reports its own AVX-512 intrinsics (_mm512_setzero_ps, _mm512_reduce_add_ps) as reading
// an uninitialised value inside target-attribute functions; a known false positive (GCC PR 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace frugal::cpu {
namespace {

constexpr int kMr = 4;             // rows of a per tile
constexpr int kNr = 4;             // rows of b (columns of c) per tile
constexpr int64_t kNBlock = 64;    // rows of b per task: 64 x K bytes stay in L2 for K <= 4096
constexpr int64_t kKBlock = 4096;  // K is cut into blocks of this many bytes

#define FRUGAL_QGEMM_TILE_BODY                                                      \
  int32_t acc[kMr][kNr] = {};                                                       \
  for (int64_t k = 0; k < kc; ++k) {                                                \
    for (int i = 0; i < kMr; ++i) {                                                 \
      for (int j = 0; j < kNr; ++j) {                                               \
        acc[i][j] += static_cast<int32_t>(a[i][k]) * static_cast<int32_t>(b[j][k]); \
      }                                                                             \
    }                                                                               \
  }                                                                                 \
  for (int i = 0; i < kMr; ++i)                                                     \
    for (int j = 0; j < kNr; ++j) c[i * ldc + j] += acc[i][j];

// c[i][j] += sum_k a[i][k] * b[j][k] over kc bytes, for a kMr x kNr tile.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) void tile_vnni(
    const uint8_t* const* a, const int8_t* const* b, int64_t kc, int32_t* c, int64_t ldc) {
  FRUGAL_QGEMM_TILE_BODY
}
void tile_generic(const uint8_t* const* a, const int8_t* const* b, int64_t kc, int32_t* c,
                  int64_t ldc) {
  FRUGAL_QGEMM_TILE_BODY
}
#undef FRUGAL_QGEMM_TILE_BODY

using TileFn = void (*)(const uint8_t* const*, const int8_t* const*, int64_t, int32_t*, int64_t);

TileFn pick_tile() {
  static const TileFn fn = __builtin_cpu_supports("avx512vnni") ? tile_vnni : tile_generic;
  return fn;
}

// Edge tiles (fewer than kMr rows or kNr columns): plain loops.
void tile_edge(const uint8_t* const* a, int mr, const int8_t* const* b, int nr, int64_t kc,
               int32_t* c, int64_t ldc) {
  for (int i = 0; i < mr; ++i) {
    for (int j = 0; j < nr; ++j) {
      int32_t s = 0;
      for (int64_t k = 0; k < kc; ++k) s += static_cast<int32_t>(a[i][k]) * b[j][k];
      c[i * ldc + j] += s;
    }
  }
}

}  // namespace

void qgemm_s32_portable(ConstTensorView a, int32_t a_zero_point, ConstTensorView b, TensorView c,
                        const ExecContext& ctx) {
  const int64_t m = a.shape[0], k = a.shape[1], n = b.shape[0];
  const bool is_i8 = a.dtype == DType::kI8;
  std::vector<uint8_t> au;
  const uint8_t* ap = detail::activations_as_u8(a, au);
  const int64_t z = static_cast<int64_t>(a_zero_point) + (is_i8 ? 128 : 0);
  const int8_t* bp = b.data_as<int8_t>();
  int32_t* cp = c.data_as<int32_t>();
  const TileFn tile = pick_tile();
  const int64_t blocks = (n + kNBlock - 1) / kNBlock;
  ctx.run([&] {
    tbb::parallel_for(
        tbb::blocked_range<int64_t>(0, blocks, 1), [&](const tbb::blocked_range<int64_t>& r) {
          for (int64_t blk = r.begin(); blk < r.end(); ++blk) {
            const int64_t n0 = blk * kNBlock, n1 = std::min(n, n0 + kNBlock);
            for (int64_t i = 0; i < m; ++i) std::fill(cp + i * n + n0, cp + i * n + n1, 0);
            for (int64_t k0 = 0; k0 < k; k0 += kKBlock) {
              const int64_t kc = std::min(kKBlock, k - k0);
              for (int64_t i0 = 0; i0 < m; i0 += kMr) {
                const int mr = static_cast<int>(std::min<int64_t>(kMr, m - i0));
                const uint8_t* arows[kMr];
                for (int i = 0; i < kMr; ++i) arows[i] = ap + (i0 + std::min(i, mr - 1)) * k + k0;
                for (int64_t j0 = n0; j0 < n1; j0 += kNr) {
                  const int nr = static_cast<int>(std::min<int64_t>(kNr, n1 - j0));
                  const int8_t* brows[kNr];
                  for (int j = 0; j < kNr; ++j) brows[j] = bp + (j0 + std::min(j, nr - 1)) * k + k0;
                  int32_t* ct = cp + i0 * n + j0;
                  if (mr == kMr && nr == kNr) {
                    tile(arows, brows, kc, ct, n);
                  } else {
                    tile_edge(arows, mr, brows, nr, kc, ct, n);
                  }
                }
              }
            }
            // Zero-point correction: - z * colsum(b[j]) (exact in int64; the result fits int32).
            for (int64_t j = n0; j < n1; ++j) {
              int64_t s = 0;
              for (int64_t kk = 0; kk < k; ++kk) s += bp[j * k + kk];
              if (s == 0 || z == 0) continue;
              const int64_t corr = z * s;
              for (int64_t i = 0; i < m; ++i) {
                cp[i * n + j] = static_cast<int32_t>(static_cast<int64_t>(cp[i * n + j]) - corr);
              }
            }
          }
        });
  });
}

void qgemm_epilogue(ConstTensorView acc, float a_scale, ConstTensorView b_scale,
                    ConstTensorView bias, float out_scale, int32_t out_zero_point, TensorView out,
                    const ExecContext& ctx) {
  const int64_t m = acc.shape[0], n = acc.shape[1];
  const int32_t* ap = acc.data_as<int32_t>();
  const float* sp = b_scale.data_as<float>();
  const bool per_channel = b_scale.rank() == 1;
  const float* bp = bias.data != nullptr ? bias.data_as<float>() : nullptr;
  const DType od = out.dtype;
  const int32_t lo = od == DType::kI8 ? -128 : 0, hi = od == DType::kI8 ? 127 : 255;
  ctx.run([&] {
    tbb::parallel_for(
        tbb::blocked_range<int64_t>(0, m, 16), [&](const tbb::blocked_range<int64_t>& r) {
          for (int64_t i = r.begin(); i < r.end(); ++i) {
            for (int64_t j = 0; j < n; ++j) {
              const float y = detail::qgemm_dequant(
                  ap[i * n + j], a_scale, per_channel ? sp[j] : sp[0], bp != nullptr ? bp[j] : 0.f);
              if (od == DType::kF32) {
                out.data_as<float>()[i * n + j] = y;
              } else {
                const int32_t q = detail::qgemm_requant(y, out_scale, out_zero_point, lo, hi);
                if (od == DType::kI8) {
                  out.data_as<int8_t>()[i * n + j] = static_cast<int8_t>(q);
                } else {
                  out.data_as<uint8_t>()[i * n + j] = static_cast<uint8_t>(q);
                }
              }
            }
          }
        });
  });
}

// ---- weight-only quantized product
// ----------------------------------------------------------------
//
// y[m, n] = sum_g sum_{k in g} x[m, k] * (w[n, k] * scale[n, g]). i4: the 16 dequantized values of
// a group, scale * {-8, ..., 7}, live in one zmm register, and vpermps looks a nibble up in it, so
// a weight costs a shift or mask and a lookup; the low and high nibbles of a byte are elements 2i
// and 2i + 1, so x is split once per call into its even and odd elements and each nibble stream
// meets its own x stream. i8: codes widen to f32 and sum per group, then scale once. Up to kWoqRows
// rows of x share each decoded weight vector.
namespace {

constexpr int kWoqRows = 4;
constexpr int64_t kWoqRowBlock = 16;  // output rows per task

struct WoqArgs {
  const float* x;      // (M, K)
  const float* xe;     // (M, K / 2) even elements of x (i4 only)
  const float* xo;     // (M, K / 2) odd elements
  const uint8_t* w;    // (N, K) i8 or (N, K / 2) packed i4
  const float* scale;  // (N, K / G)
  float* y;            // (M, N)
  int64_t m, n, k, g;
};

// i4 row n for rows [m0, m0 + mr) of x, AVX-512. Four independent accumulators per row of x (even
// and odd elements of two consecutive 16-byte chunks) hide the fma latency; they are added in a
// fixed order at the end. `mr` (rows of x) is a template argument so that the accumulators are
// registers, not a stack array indexed at run time.
template <int mr>
__attribute__((target("avx512f,avx512bw,avx512vl"))) void woq_i4_row_avx512(const WoqArgs& p,
                                                                            int64_t row,
                                                                            int64_t m0) {
  const __m512 levels = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1);
  const __m512i low4 = _mm512_set1_epi32(0x0F);
  const int64_t half = p.k / 2, gb = p.g / 2, groups = p.k / p.g;
  const uint8_t* wr = p.w + row * half;
  const float* sr = p.scale + row * groups;
  __m512 acc[mr][4];
  float tail[mr] = {};
  for (int r = 0; r < mr; ++r)
    for (int u = 0; u < 4; ++u) acc[r][u] = _mm512_setzero_ps();
  for (int64_t gi = 0; gi < groups; ++gi) {
    const float s = sr[gi];
    const __m512 table = _mm512_mul_ps(levels, _mm512_set1_ps(s));
    const int64_t b0 = gi * gb, b1 = b0 + gb;
    int64_t b = b0;
    for (; b + 32 <= b1; b += 32) {
      const __m512i c0 =
          _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wr + b)));
      const __m512i c1 =
          _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wr + b + 16)));
      const __m512 we0 = _mm512_permutexvar_ps(_mm512_and_si512(c0, low4), table);
      const __m512 wo0 = _mm512_permutexvar_ps(_mm512_srli_epi32(c0, 4), table);
      const __m512 we1 = _mm512_permutexvar_ps(_mm512_and_si512(c1, low4), table);
      const __m512 wo1 = _mm512_permutexvar_ps(_mm512_srli_epi32(c1, 4), table);
      for (int r = 0; r < mr; ++r) {
        const float* xe = p.xe + (m0 + r) * half + b;
        const float* xo = p.xo + (m0 + r) * half + b;
        acc[r][0] = _mm512_fmadd_ps(we0, _mm512_loadu_ps(xe), acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(wo0, _mm512_loadu_ps(xo), acc[r][1]);
        acc[r][2] = _mm512_fmadd_ps(we1, _mm512_loadu_ps(xe + 16), acc[r][2]);
        acc[r][3] = _mm512_fmadd_ps(wo1, _mm512_loadu_ps(xo + 16), acc[r][3]);
      }
    }
    for (; b + 16 <= b1; b += 16) {
      const __m512i c0 =
          _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wr + b)));
      const __m512 we0 = _mm512_permutexvar_ps(_mm512_and_si512(c0, low4), table);
      const __m512 wo0 = _mm512_permutexvar_ps(_mm512_srli_epi32(c0, 4), table);
      for (int r = 0; r < mr; ++r) {
        acc[r][0] = _mm512_fmadd_ps(we0, _mm512_loadu_ps(p.xe + (m0 + r) * half + b), acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(wo0, _mm512_loadu_ps(p.xo + (m0 + r) * half + b), acc[r][1]);
      }
    }
    for (; b < b1; ++b) {
      const float we = static_cast<float>(unpack_i4_lo(wr[b])) * s;
      const float wo = static_cast<float>(unpack_i4_hi(wr[b])) * s;
      for (int r = 0; r < mr; ++r) {
        tail[r] += we * p.xe[(m0 + r) * half + b] + wo * p.xo[(m0 + r) * half + b];
      }
    }
  }
  for (int r = 0; r < mr; ++r) {
    const __m512 sum =
        _mm512_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]), _mm512_add_ps(acc[r][2], acc[r][3]));
    p.y[(m0 + r) * p.n + row] = _mm512_reduce_add_ps(sum) + tail[r];
  }
}

// i8 row n, AVX-512.
template <int mr>
__attribute__((target("avx512f,avx512bw,avx512vl"))) void woq_i8_row_avx512(const WoqArgs& p,
                                                                            int64_t row,
                                                                            int64_t m0) {
  const int64_t groups = p.k / p.g;
  const int8_t* wr = reinterpret_cast<const int8_t*>(p.w) + row * p.k;
  const float* sr = p.scale + row * groups;
  __m512 acc[mr];
  float tail[mr] = {};
  for (int r = 0; r < mr; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t gi = 0; gi < groups; ++gi) {
    const int64_t k0 = gi * p.g, k1 = k0 + p.g;
    __m512 gacc[mr];
    float gtail[mr] = {};
    for (int r = 0; r < mr; ++r) gacc[r] = _mm512_setzero_ps();
    int64_t k = k0;
    for (; k + 16 <= k1; k += 16) {
      const __m512 wv = _mm512_cvtepi32_ps(
          _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wr + k))));
      for (int r = 0; r < mr; ++r) {
        gacc[r] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(p.x + (m0 + r) * p.k + k), gacc[r]);
      }
    }
    for (; k < k1; ++k) {
      for (int r = 0; r < mr; ++r) gtail[r] += static_cast<float>(wr[k]) * p.x[(m0 + r) * p.k + k];
    }
    const __m512 sv = _mm512_set1_ps(sr[gi]);
    for (int r = 0; r < mr; ++r) {
      acc[r] = _mm512_fmadd_ps(gacc[r], sv, acc[r]);
      tail[r] += gtail[r] * sr[gi];
    }
  }
  for (int r = 0; r < mr; ++r) p.y[(m0 + r) * p.n + row] = _mm512_reduce_add_ps(acc[r]) + tail[r];
}

// Portable versions (no AVX-512): the same products, summed per group in index order.
void woq_row_generic(const WoqArgs& p, bool i4, int64_t row, int64_t m0, int mr) {
  const int64_t groups = p.k / p.g;
  for (int r = 0; r < mr; ++r) {
    const float* xr = p.x + (m0 + r) * p.k;
    float acc = 0.f;
    for (int64_t gi = 0; gi < groups; ++gi) {
      float gacc = 0.f;
      for (int64_t k = gi * p.g; k < (gi + 1) * p.g; ++k) {
        const int v = i4 ? (k % 2 == 0 ? unpack_i4_lo(p.w[(row * p.k + k) / 2])
                                       : unpack_i4_hi(p.w[(row * p.k + k) / 2]))
                         : static_cast<int8_t>(p.w[row * p.k + k]);
        gacc += static_cast<float>(v) * xr[k];
      }
      acc += gacc * p.scale[row * groups + gi];
    }
    p.y[(m0 + r) * p.n + row] = acc;
  }
}

}  // namespace

void woq_matmul(ConstTensorView x, ConstTensorView w, ConstTensorView scale, int64_t group_size,
                TensorView y, const ExecContext& ctx) {
  const bool i4 = w.dtype == DType::kI4;
  WoqArgs p{
      x.data_as<float>(), nullptr,    nullptr,    w.data_as<uint8_t>(), scale.data_as<float>(),
      y.data_as<float>(), x.shape[0], w.shape[0], w.shape[1],           group_size};
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  std::vector<float> xe, xo;
  if (i4 && avx512) {
    const int64_t half = p.k / 2;
    xe.resize(static_cast<size_t>(p.m * half));
    xo.resize(static_cast<size_t>(p.m * half));
    for (int64_t i = 0; i < p.m; ++i) {
      for (int64_t j = 0; j < half; ++j) {
        xe[i * half + j] = p.x[i * p.k + 2 * j];
        xo[i * half + j] = p.x[i * p.k + 2 * j + 1];
      }
    }
    p.xe = xe.data();
    p.xo = xo.data();
  }
  const int64_t blocks = (p.n + kWoqRowBlock - 1) / kWoqRowBlock;
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, blocks, 1),
                      [&](const tbb::blocked_range<int64_t>& r) {
                        for (int64_t blk = r.begin(); blk < r.end(); ++blk) {
                          const int64_t n1 = std::min(p.n, (blk + 1) * kWoqRowBlock);
                          for (int64_t m0 = 0; m0 < p.m; m0 += kWoqRows) {
                            const int mr = static_cast<int>(std::min<int64_t>(kWoqRows, p.m - m0));
                            for (int64_t row = blk * kWoqRowBlock; row < n1; ++row) {
                              if (!avx512) {
                                woq_row_generic(p, i4, row, m0, mr);
                              } else if (i4) {
                                switch (mr) {
                                  case 1:
                                    woq_i4_row_avx512<1>(p, row, m0);
                                    break;
                                  case 2:
                                    woq_i4_row_avx512<2>(p, row, m0);
                                    break;
                                  case 3:
                                    woq_i4_row_avx512<3>(p, row, m0);
                                    break;
                                  default:
                                    woq_i4_row_avx512<4>(p, row, m0);
                                    break;
                                }
                              } else {
                                switch (mr) {
                                  case 1:
                                    woq_i8_row_avx512<1>(p, row, m0);
                                    break;
                                  case 2:
                                    woq_i8_row_avx512<2>(p, row, m0);
                                    break;
                                  case 3:
                                    woq_i8_row_avx512<3>(p, row, m0);
                                    break;
                                  default:
                                    woq_i8_row_avx512<4>(p, row, m0);
                                    break;
                                }
                              }
                            }
                          }
                        }
                      });
  });
}

}  // namespace frugal::cpu
