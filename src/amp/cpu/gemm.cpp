// amp::gemm on the CPU. Every supported input (bf16, f16, fp8 e4m3 / e5m2) is exactly
// representable in f32, and every product of two of them is exact in f32 (at most 11 + 11
// significand bits), so the only rounding is the fp32 accumulation (and the final conversion of C):
//   - with oneDNN: bf16 runs oneDNN's bf16 matmul (AVX-512 BF16 / AMX, fp32 accumulation); fp8 is
//     decoded exactly to bf16 first (bf16 holds every e4m3 / e5m2 value, subnormals included:
//     the smallest is 2^-16, a normal bf16), so the fp8 emulation runs at the bf16 speed; f16 is
//     decoded to f32 and multiplied by oneDNN's f32 matmul (measured faster than oneDNN's f16
//     matmul on CPUs without AVX-512 FP16, see docs/amp.md).
//   - without oneDNN: the inputs are decoded to f32 and multiplied by the Eigen f32 GEMM.
// The scales are folded into one fp32 multiplier alpha * a_scale * b_scale (rounded once, as
// cuBLASLt applies them to the fp32 accumulator), so CPU and GPU differ only in summation order.
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>

#include <array>
#include <vector>

#include "amp/gemm_internal.hpp"
#include "core/copy.hpp"
#include "core/ops_internal.hpp"
#include "frugal/core/float_types.hpp"

namespace frugal::cpu {
namespace {

constexpr int64_t kGrain = int64_t{1} << 16;

// code -> value tables of the two fp8 formats (exact).
const std::array<float, 256>& fp8_table(DType t) {
  static const auto tables = [] {
    std::array<std::array<float, 256>, 2> r{};
    for (int i = 0; i < 256; ++i) {
      r[0][i] = e4m3_bits_to_float(static_cast<uint8_t>(i));
      r[1][i] = e5m2_bits_to_float(static_cast<uint8_t>(i));
    }
    return r;
  }();
  return tables[t == DType::kF8E4M3 ? 0 : 1];
}

/// Decodes contiguous v (bf16, f16, fp8) into `out` (numel floats), exactly.
void decode_f32(ConstTensorView v, float* out, const ExecContext& ctx) {
  const int64_t n = v.numel();
  if (v.dtype == DType::kF8E4M3 || v.dtype == DType::kF8E5M2) {
    const std::array<float, 256>& lut = fp8_table(v.dtype);
    const uint8_t* p = v.data_as<uint8_t>();
    ctx.run([&] {
      tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, kGrain),
                        [&](const tbb::blocked_range<int64_t>& r) {
                          for (int64_t i = r.begin(); i < r.end(); ++i) out[i] = lut[p[i]];
                        });
    });
    return;
  }
  TensorView dst{out, v.shape, contiguous_strides(v.shape), DType::kF32, v.device};
  detail::copy(v, dst, ctx);
}

ConstTensorView matrix(ConstTensorView v, int64_t i) {
  ConstTensorView m = v;
  m.shape = Shape{v.shape[1], v.shape[2]};
  m.strides = Strides{v.shape[2], 1};
  m.data = static_cast<const char*>(v.data) + dtype_nbytes(v.dtype, i * v.shape[1] * v.shape[2]);
  return m;
}

TensorView matrix(TensorView v, int64_t i) {
  TensorView m = v;
  m.shape = Shape{v.shape[1], v.shape[2]};
  m.strides = Strides{v.shape[2], 1};
  m.data = static_cast<char*>(v.data) + dtype_nbytes(v.dtype, i * v.shape[1] * v.shape[2]);
  return m;
}

#if FRUGAL_HAS_DNNL
// fp8 -> bf16 bits, exact (see the file comment).
const std::array<uint16_t, 256>& fp8_bf16_table(DType t) {
  static const auto tables = [] {
    std::array<std::array<uint16_t, 256>, 2> r{};
    for (int i = 0; i < 256; ++i) {
      r[0][i] = float_to_bf16_bits(e4m3_bits_to_float(static_cast<uint8_t>(i)));
      r[1][i] = float_to_bf16_bits(e5m2_bits_to_float(static_cast<uint8_t>(i)));
    }
    return r;
  }();
  return tables[t == DType::kF8E4M3 ? 0 : 1];
}

Tensor decode_bf16(ConstTensorView v, const ExecContext& ctx) {
  Tensor t = Tensor::empty(v.shape, DType::kBF16, v.device, ctx);
  const std::array<uint16_t, 256>& lut = fp8_bf16_table(v.dtype);
  const uint8_t* p = v.data_as<uint8_t>();
  uint16_t* q = static_cast<uint16_t*>(t.view().data);
  const int64_t n = v.numel();
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, kGrain),
                      [&](const tbb::blocked_range<int64_t>& r) {
                        for (int64_t i = r.begin(); i < r.end(); ++i) q[i] = lut[p[i]];
                      });
  });
  return t;
}

Tensor decode_f32_tensor(ConstTensorView v, const ExecContext& ctx) {
  Tensor t = Tensor::empty(v.shape, DType::kF32, v.device, ctx);
  decode_f32(v, t.view().data_as<float>(), ctx);
  return t;
}
#endif

}  // namespace

void amp_gemm_portable(ConstTensorView a, ConstTensorView b, TensorView c,
                       const amp::GemmOptions& o, const ExecContext& ctx) {
  std::vector<float> a32(static_cast<size_t>(a.numel())), b32(static_cast<size_t>(b.numel()));
  decode_f32(a, a32.data(), ctx);
  decode_f32(b, b32.data(), ctx);
  ConstTensorView af{a32.data(), a.shape, a.strides, DType::kF32, a.device};
  ConstTensorView bf{b32.data(), b.shape, b.strides, DType::kF32, b.device};
  const double alpha = static_cast<double>(static_cast<float>(
      static_cast<double>(o.alpha) * static_cast<double>(o.a_scale) * o.b_scale));
  Tensor c32;
  TensorView target = c;
  if (c.dtype != DType::kF32) {
    c32 = Tensor::empty(c.shape, DType::kF32, c.device, ctx);
    if (o.beta != 0.f) detail::copy(c, c32.view(), ctx);
    target = c32.view();
  }
  for (int64_t i = 0; i < a.shape[0]; ++i) {
    gemm(matrix(af, i), o.trans_a, matrix(bf, i), o.trans_b, alpha, o.beta, matrix(target, i), ctx);
  }
  if (c32.defined()) detail::copy(c32.cview(), c, ctx);
}

void amp_gemm(ConstTensorView a, ConstTensorView b, TensorView c, const amp::GemmOptions& o,
              const ExecContext& ctx) {
#if FRUGAL_HAS_DNNL
  // oneDNN 2.6 has bf16 -> bf16 and any -> f32 matmuls; other outputs go through an f32 C.
  if (c.dtype != DType::kF32 && !(c.dtype == DType::kBF16 && a.dtype != DType::kF16)) {
    Tensor c32 = Tensor::empty(c.shape, DType::kF32, c.device, ctx);
    if (o.beta != 0.f) detail::copy(c, c32.view(), ctx);
    amp_gemm(a, b, c32.view(), o, ctx);
    detail::copy(c32.cview(), c, ctx);
    return;
  }
  if (a.dtype == DType::kBF16) return amp_gemm_dnnl(a, b, c, o, ctx);
  if (a.dtype == DType::kF16) {
    const Tensor a32 = decode_f32_tensor(a, ctx), b32 = decode_f32_tensor(b, ctx);
    return amp_gemm_dnnl(a32.cview(), b32.cview(), c, o, ctx);
  }
  const Tensor a16 = decode_bf16(a, ctx), b16 = decode_bf16(b, ctx);
  return amp_gemm_dnnl(a16.cview(), b16.cview(), c, o, ctx);
#else
  amp_gemm_portable(a, b, c, o, ctx);
#endif
}

}  // namespace frugal::cpu
