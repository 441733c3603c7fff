#pragma once
/// Low-precision matrix products for mixed precision: bf16 / f16 inputs (CPU through oneDNN,
/// CUDA through cuBLAS tensor cores) and fp8 E4M3 / E5M2 inputs (CUDA through cuBLASLt on Hopper,
/// CPU through an exact emulation), always with fp32 accumulation.
///
///   C = alpha * (a_scale * op(A)) (b_scale * op(B)) + beta * C
///
/// op(X) is X or X^T (the last two axes). 2-D operands give one product; 3-D operands (B, M, K)
/// and (B, K, N) give B independent products (attention products). See docs/amp.md.
#include "frugal/core/dtype.hpp"
#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"

namespace frugal::amp {

/// Options of amp::gemm: transposes, the BLAS alpha/beta and the per-tensor dequantization scales.
struct GemmOptions {
  bool trans_a = false;  ///< use A^T: A is stored (K, M) / (B, K, M)
  bool trans_b = false;  ///< use B^T: B is stored (N, K) / (B, N, K)
  float alpha = 1.f;     ///< multiplies the product; finite
  float beta = 0.f;      ///< multiplies the previous C (gemm_into only; 0 ignores C's values)
  float a_scale = 1.f;   ///< dequantization scale of A (the FP8 recipe's 1/scale); > 0, finite
  float b_scale = 1.f;   ///< dequantization scale of B; > 0, finite
};

/// C = alpha * (a_scale * op(A)) (b_scale * op(B)) + beta * C into a preallocated `c`.
/// A: (M, K) or (B, M, K) after op, B: (K, N) or (B, K, N) after op, C: (M, N) or (B, M, N),
/// contiguous, on one device. A and B in bf16, f16, f8_e4m3 or f8_e5m2: bf16 and f16 need both
/// operands of the same dtype, fp8 allows any mix of e4m3 and e5m2. C in f32, bf16 or f16.
/// Products are exact and accumulate in fp32 (the CPU fp8 path is an exact emulation; only the
/// summation order differs from the GPU). K = 0 gives beta * C. Enqueued on ctx.stream on CUDA.
/// Call it qualified (amp::gemm_into): argument-dependent lookup also finds frugal::gemm_into.
/// Errors: "[amp::gemm] ..." (InvalidArgument) for unsupported dtypes or dtype combinations,
/// mismatched shapes or ranks, non-contiguous operands, operands or C on different devices,
/// scales <= 0 / Inf / NaN, non-finite alpha/beta, and on CUDA fp8 with M, N or K not a multiple
/// of 16 (cuBLASLt); Unsupported for CUDA fp8 data not 16-byte aligned.
void gemm_into(ConstTensorView a, ConstTensorView b, TensorView c, const GemmOptions& o = {},
               const ExecContext& ctx = {});

/// amp::gemm_into into a new C of dtype `out_dtype` (f32, bf16 or f16); beta is ignored (the new
/// C starts at zero). Returns C, (M, N) or (B, M, N), on the operands' device.
Tensor gemm(ConstTensorView a, ConstTensorView b, DType out_dtype = DType::kF32,
            const GemmOptions& o = {}, const ExecContext& ctx = {});

}  // namespace frugal::amp
