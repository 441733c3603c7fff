#pragma once
// Backend contract of the transformer ops (frugal/nn/{layer_norm,embedding,attention}.hpp): the
// CPU functions here and the CUDA ones in cu_ops.def take the same arguments. Internal header.
//
// The dispatch files (src/nn/{layer_norm,embedding,attention}.cpp) validate everything and hand
// the backends contiguous f32 or f64 tensors of matching dtype, allocated outputs and, where a
// gradient accumulates (+=), a contiguous destination. Optional views (LayerNorm weight / bias
// and their gradients) have data == nullptr when absent.
#include <cstdint>

#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"

namespace frugal::cpu {

/// x (N, C) -> out (N, C), mean (N), rstd (N).
void layer_norm_forward(ConstTensorView x, ConstTensorView weight, ConstTensorView bias, double eps,
                        TensorView out, TensorView mean, TensorView rstd, const ExecContext& ctx);
/// grad_input (N, C) = dL/dx; grad_weight (C) += sum_n dout * xhat; grad_bias (C) += sum_n dout.
void layer_norm_backward(ConstTensorView grad_out, ConstTensorView x, ConstTensorView weight,
                         ConstTensorView mean, ConstTensorView rstd, TensorView grad_input,
                         TensorView grad_weight, TensorView grad_bias, const ExecContext& ctx);

/// ids (N) i64, all in [0, V) -> out (N, D) = weight[ids].
void embedding_forward(ConstTensorView ids, ConstTensorView weight, TensorView out,
                       const ExecContext& ctx);
/// grad_weight (V, D) += scatter of grad_out (N, D) by ids (N), summed per row in index order.
void embedding_backward(ConstTensorView grad_out, ConstTensorView ids, TensorView grad_weight,
                        const ExecContext& ctx);

/// qkv (B, T, 3C) -> out (B, T, C), probs (B, H, T, T) (zero above the diagonal).
void causal_attention_forward(ConstTensorView qkv, int64_t num_heads, TensorView out,
                              TensorView probs, const ExecContext& ctx);
/// grad_qkv (B, T, 3C) from grad_out (B, T, C), the forward's qkv and probs.
void causal_attention_backward(ConstTensorView grad_out, ConstTensorView qkv, ConstTensorView probs,
                               int64_t num_heads, TensorView grad_qkv, const ExecContext& ctx);

/// Autocast: src (B, T, P*C) f32 (P = 3 for qkv, 1 for an output gradient) -> dst
/// (P, B*H, T, hd) in bf16 / f16 (rounded to nearest even, overflow to Inf): the per-head
/// contiguous operands of the attention products.
void attention_split_heads_low(ConstTensorView src, int64_t parts, int64_t num_heads,
                               TensorView dst, const ExecContext& ctx);
/// Autocast: src (P, B*H, T, hd) f32 -> dst (B, T, P*C) f32, the inverse permutation.
void attention_merge_heads(ConstTensorView src, int64_t num_heads, TensorView dst,
                           const ExecContext& ctx);
/// Autocast: scores (N, T, T) f32 (already scaled) -> probs (N, T, T) in bf16 or f16: per row i
/// the softmax over columns 0..i (in double on the host), rounded to nearest even; zero after i.
void causal_softmax_low(ConstTensorView scores, TensorView probs, const ExecContext& ctx);
/// Autocast: dscores = P * (dP - sum_j P dP) * scale, zero after the diagonal, rounded to nearest
/// even into probs' dtype; probs (N, T, T) bf16 / f16, dprobs (N, T, T) f32.
void causal_softmax_backward_low(ConstTensorView probs, ConstTensorView dprobs, double scale,
                                 TensorView dscores, const ExecContext& ctx);

}  // namespace frugal::cpu
