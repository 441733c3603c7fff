// amp::cast on CUDA: one grid-stride pass. Stochastic rounding: each thread draws one Philox
// block of the stream (amp/cast_bits.hpp: sr_philox, Philox4x32 with 7 rounds) and rounds the
// elements that block's bits belong to: in a full group of 8 blocks, block b's two words of a
// row serve elements 16 p + 2 b and 16 p + 2 b + 1 for every piece p; in the tail, E consecutive
// elements. So the CPU's stream is drawn exactly. Nearest even: one element per work item. The
// conversions are the integer functions of amp/cast_bits.hpp (nearest even:
// float_types.hpp), so the bits equal the CPU's. amax: an integer atomicMax on the magnitude bits
// (NaN's bits exceed Inf's).
#include <limits>

#include "amp/cast_bits.hpp"
#include "common/check.cuh"
#include "common/launch.cuh"
#include "cu_ops.hpp"
#include "frugal/core/philox.hpp"

namespace frugal::cu {
namespace {

using namespace amp::detail;

template <int kFmt>
using Code = std::conditional_t<(kFmt <= kFmtBF16), uint16_t, uint8_t>;

// One element: x * scale (never contracted; IEEE with subnormals, no -ftz), rounded. A NaN
// product is replaced by x itself: PTX's multiply returns the canonical NaN (positive), x86's
// keeps the input's sign, and the encoders read only the sign of a NaN, so both devices give the
// code of x's sign.
template <int kFmt, bool kSR>
__device__ __forceinline__ void cast_one(const float* __restrict__ x, Code<kFmt>* __restrict__ y,
                                         int64_t i, float scale, Overflow ov, uint32_t rnd,
                                         unsigned int& m) {
  const float v = x[i];
  m = max(m, __float_as_uint(v) & 0x7FFFFFFFu);
  float s = __fmul_rn(v, scale);
  if (s != s) s = v;
  y[i] = static_cast<Code<kFmt>>(kSR ? encode_sr<kFmt>(s, ov, rnd) : encode_rne<kFmt>(s, ov));
}

// Work items: Philox blocks (stochastic) or elements (nearest even).
template <int kFmt, bool kSR>
__global__ void cast_kernel(const float* __restrict__ x, Code<kFmt>* __restrict__ y, int64_t n,
                            int64_t items, float scale, Overflow ov, uint64_t seed, uint64_t offset,
                            unsigned int* amax) {
  constexpr int kBits = sr_bits<kFmt>();
  constexpr int kE = 128 / kBits, kK = 32 / kBits, kG = 8 * kE;
  const int64_t full = n / kG * kG;  // elements in full groups
  unsigned int m = 0;
  for (int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; c < items;
       c += int64_t{gridDim.x} * blockDim.x) {
    if constexpr (kSR) {
      const Uint4 b = sr_philox(philox_counter(static_cast<uint64_t>(c), offset), seed);
      const int64_t e0 = c * kE;  // the block's first element position in stream order
      if (e0 < full) {
        const int64_t base = e0 / kG * kG;
        const int lb = static_cast<int>(c % 8);
#pragma unroll
        for (int p = 0; p < 2 * kK; ++p) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            cast_one<kFmt, true>(x, y, base + 16 * p + 2 * lb + e, scale, ov,
                                 sr_piece(b, 2 * (p / kK) + e, p % kK, kBits), m);
          }
        }
      } else {
#pragma unroll
        for (int l = 0; l < kE; ++l) {
          if (e0 + l >= n) break;
          cast_one<kFmt, true>(x, y, e0 + l, scale, ov, sr_piece(b, l / kK, l % kK, kBits), m);
        }
      }
    } else {
      cast_one<kFmt, false>(x, y, c, scale, ov, 0u, m);
    }
  }
  if (amax != nullptr) {
    // Warp max first, then one atomic per warp.
    for (int o = 16; o > 0; o >>= 1) m = max(m, __shfl_xor_sync(0xFFFFFFFFu, m, o));
    if ((threadIdx.x & 31) == 0) atomicMax(amax, m);
  }
}

template <int kFmt>
void launch(ConstTensorView x, TensorView out, bool sr, Overflow ov, float scale,
            unsigned int* amax, const ExecContext& ctx) {
  const int64_t n = x.numel();
  constexpr int kE = 128 / sr_bits<kFmt>();
  const int64_t items = sr ? (n + kE - 1) / kE : n;
  const LaunchShape ls = grid_stride_launch(items);
  auto* y = static_cast<Code<kFmt>*>(out.data);
  if (sr) {
    cast_kernel<kFmt, true><<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(
        x.data_as<float>(), y, n, items, scale, ov, ctx.seed, ctx.offset, amax);
  } else {
    cast_kernel<kFmt, false><<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(
        x.data_as<float>(), y, n, items, scale, ov, ctx.seed, ctx.offset, amax);
  }
  FRUGAL_CUDA_CHECK_LAUNCH();
}

}  // namespace

float amp_cast(ConstTensorView x, TensorView out, int format, int rounding, int overflow,
               float scale, bool compute_amax, const ExecContext& ctx) {
  const bool sr = rounding == 1;
  const Overflow ov = static_cast<Overflow>(overflow);
  Tensor amax_buf;
  unsigned int* amax = nullptr;
  if (compute_amax) {
    amax_buf = Tensor::empty(Shape{1}, DType::kI32, x.device, ctx);
    amax = static_cast<unsigned int*>(amax_buf.view().data);
    FRUGAL_CUDA_CHECK(cudaMemsetAsync(amax, 0, sizeof(unsigned int), stream_of(ctx)));
  }
  switch (format) {
    case kFmtF16:
      launch<kFmtF16>(x, out, sr, ov, scale, amax, ctx);
      break;
    case kFmtBF16:
      launch<kFmtBF16>(x, out, sr, ov, scale, amax, ctx);
      break;
    case kFmtE4M3:
      launch<kFmtE4M3>(x, out, sr, ov, scale, amax, ctx);
      break;
    default:
      launch<kFmtE5M2>(x, out, sr, ov, scale, amax, ctx);
      break;
  }
  if (!compute_amax) return 0.f;
  unsigned int h = 0;
  FRUGAL_CUDA_CHECK(cudaMemcpyAsync(&h, amax, sizeof(h), cudaMemcpyDeviceToHost, stream_of(ctx)));
  FRUGAL_CUDA_CHECK(cudaStreamSynchronize(stream_of(ctx)));
  return h > 0x7F800000u ? std::numeric_limits<float>::quiet_NaN()
                         : frugal::detail::bit_cast<float>(h);
}

}  // namespace frugal::cu
