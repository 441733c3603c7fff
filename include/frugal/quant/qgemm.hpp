#pragma once
/// Quantized matrix products.
///
/// int8 GEMM: a (M, K) i8 or u8 activations with a per-tensor zero point, b (N, K) i8 symmetric
/// weights (the row-major layout of a Linear weight, out x in), both row-major with unit inner
/// stride:
///   acc[m, n] = sum_k (a[m, k] - a_zero_point) * b[n, k]                  exact, int32
///   f32 out:  y[m, n] = float(acc) * (a_scale * b_scale[n]) + bias[n]     (f32 ops, no fma)
///   requant:  q[m, n] = clamp(rint(y[m, n] / out_scale) + out_zero_point)  (half to even)
/// K <= 65536 and a_zero_point inside a's code range, so no int32 sum can overflow. The
/// epilogue's float operations are spelled out so that CPU, CUDA and ref::qgemm_requantize give
/// identical codes. CPU: oneDNN's u8s8s32 matmul (AVX-512 VNNI) where compiled in, otherwise a
/// blocked kernel (see QGemmBackend); CUDA: cuBLASLt int8 (CUBLAS_COMPUTE_32I) when K and N are
/// multiples of 4, otherwise a tiled kernel.
///
/// Weight-only quantized product (the LLM decoding case): x (M, K) or (K) f32 activations, w (N, K)
/// i4 (packed, DType::kI4) or i8 codes with per-group scales (N, K / group_size) f32,
///   y[m, n] = sum_k x[m, k] * (w[n, k] * scale[n, k / group_size])
/// with the dequantization fused into the product (the weights are never expanded in memory).
#include <cstdint>

#include "frugal/core/tensor.hpp"

namespace frugal::quant {

/// Which CPU int8 GEMM runs. kAuto is the faster where both exist (measured, see docs/quant.md):
/// oneDNN when compiled in, else the own blocked kernel.
enum class QGemmBackend : uint8_t { kAuto, kDnnl, kPortable };

/// Options of the int8 GEMMs.
struct QGemmOptions {
  QGemmBackend backend = QGemmBackend::kAuto;  ///< CPU only; kDnnl without oneDNN: NotCompiled
};

/// acc (M, N) i32 = (a - a_zero_point) b^T; a (M, K) i8 / u8, b (N, K) i8, on one device.
Tensor qgemm_s32(ConstTensorView a, int32_t a_zero_point, ConstTensorView b,
                 const QGemmOptions& opt = {}, const ExecContext& ctx = {});

/// y (M, N) f32 = acc * (a_scale * b_scale[n]) + bias[n]. b_scale: f32 {} (per tensor) or {N}
/// (per output channel), > 0 and finite; bias: f32 {N}, or a view with null data for none.
Tensor qgemm_f32(ConstTensorView a, float a_scale, int32_t a_zero_point, ConstTensorView b,
                 ConstTensorView b_scale, ConstTensorView bias, const QGemmOptions& opt = {},
                 const ExecContext& ctx = {});

/// q (M, N) of `out_dtype` (i8 or u8) = clamp(rint(y / out_scale) + out_zero_point), y as in
/// qgemm_f32; out_zero_point inside out_dtype's range.
Tensor qgemm_requantize(ConstTensorView a, float a_scale, int32_t a_zero_point, ConstTensorView b,
                        ConstTensorView b_scale, ConstTensorView bias, float out_scale,
                        int32_t out_zero_point, DType out_dtype, const QGemmOptions& opt = {},
                        const ExecContext& ctx = {});

/// Weight-only quantized product y = x dequant(w)^T: x (M, K) or (K) f32, w (N, K) i4 or i8,
/// scale (N, K / group_size) f32; group_size divides K (even for i4); returns (M, N) or (N) f32.
/// Each y element sums its groups in a fixed order, independent of the thread count.
Tensor woq_matmul(ConstTensorView x, ConstTensorView w, ConstTensorView scale, int64_t group_size,
                  const ExecContext& ctx = {});

}  // namespace frugal::quant
