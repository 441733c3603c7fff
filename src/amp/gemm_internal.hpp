#pragma once
// CPU backends of amp::gemm (src/amp/cpu/gemm.cpp, src/amp/cpu/gemm_dnnl.cpp). Every operand is a
// contiguous 3-D view: a (B, M, K) or (B, K, M) when trans_a, b (B, K, N) or (B, N, K) when
// trans_b, c (B, M, N); dtypes validated by amp::gemm_into; M, N, K, B > 0.
#include "frugal/amp/gemm.hpp"
#include "frugal/core/build_config.hpp"
#include "frugal/core/tensor.hpp"

namespace frugal::cpu {

/// amp::gemm on the CPU: oneDNN when built with it (bf16, f16 and fp8 decoded exactly to bf16),
/// else the inputs decoded exactly to f32 and multiplied by the Eigen f32 GEMM.
void amp_gemm(ConstTensorView a, ConstTensorView b, TensorView c, const amp::GemmOptions& o,
              const ExecContext& ctx);

/// The portable path: decode to f32, Eigen f32 GEMM (fp32 accumulation), any valid input.
void amp_gemm_portable(ConstTensorView a, ConstTensorView b, TensorView c,
                       const amp::GemmOptions& o, const ExecContext& ctx);

#if FRUGAL_HAS_DNNL
/// oneDNN matmul for a, b both bf16 or both f16 (primitives cached by shape and dtypes).
void amp_gemm_dnnl(ConstTensorView a, ConstTensorView b, TensorView c, const amp::GemmOptions& o,
                   const ExecContext& ctx);
#endif

}  // namespace frugal::cpu
