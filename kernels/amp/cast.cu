// amp::cast on CUDA: one grid-stride pass; each thread handles one Philox block's worth of
// consecutive elements (8 with 16 random bits each for f16 / bf16, 16 with 8 bits for fp8:
// amp/cast_bits.hpp) so stochastic rounding draws exactly the CPU's stream. The conversions are
// the integer functions of amp/cast_bits.hpp (nearest even: float_types.hpp), so the bits equal
// the CPU's. amax: an integer atomicMax on the magnitude bits (NaN's bits exceed Inf's).
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

template <int kFmt, bool kSR>
__global__ void cast_kernel(const float* __restrict__ x, Code<kFmt>* __restrict__ y, int64_t n,
                            float scale, Overflow ov, uint64_t seed, uint64_t offset,
                            unsigned int* amax) {
  constexpr int kBits = sr_bits<kFmt>();
  constexpr int kGroup = 128 / kBits;
  const int64_t groups = (n + kGroup - 1) / kGroup;
  unsigned int m = 0;
  for (int64_t g = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; g < groups;
       g += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i0 = g * kGroup;
    Uint4 b{};
    if constexpr (kSR)
      b = Philox4x32::generate(philox_counter(static_cast<uint64_t>(g), offset), seed);
#pragma unroll
    for (int l = 0; l < kGroup; ++l) {
      const int64_t i = i0 + l;
      if (i >= n) break;
      const float v = x[i];
      m = max(m, __float_as_uint(v) & 0x7FFFFFFFu);
      const float s = __fmul_rn(v, scale);  // never contracted; IEEE with subnormals (no -ftz)
      uint32_t c;
      if constexpr (kSR) {
        const uint32_t word = lane(b, l * kBits / 32);
        c = encode_sr<kFmt>(s, ov, (word >> (l * kBits % 32)) & ((1u << kBits) - 1u));
      } else {
        c = encode_rne<kFmt>(s, ov);
      }
      y[i] = static_cast<Code<kFmt>>(c);
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
  constexpr int kGroup = 128 / sr_bits<kFmt>();
  const LaunchShape ls = grid_stride_launch((n + kGroup - 1) / kGroup);
  auto* y = static_cast<Code<kFmt>*>(out.data);
  if (sr) {
    cast_kernel<kFmt, true><<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(
        x.data_as<float>(), y, n, scale, ov, ctx.seed, ctx.offset, amax);
  } else {
    cast_kernel<kFmt, false><<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(
        x.data_as<float>(), y, n, scale, ov, ctx.seed, ctx.offset, amax);
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
