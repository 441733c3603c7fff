#pragma once
/// Causal multi-head self-attention as in GPT-2 (llm.c attention_forward / attention_backward):
///   qkv = x W_attn^T + b_attn                          (B, T, 3C), laid out [q | k | v]
///   per head h (hd = C / H columns): A = softmax(q_h k_h^T / sqrt(hd) + causal mask)
///   y_h = A v_h;  y = concat_h(y_h) W_proj^T + b_proj   (B, T, C)
/// The core (qkv -> y before the projection) is a functional op pair here; the projections are
/// nn::Linear layers. Dtypes f32 and f64 on CPU and CUDA.
/// CPU: oneTBB over the B*H (batch, head) pairs, Eigen products per pair; each pair writes its
/// own slice, so results do not depend on the thread count. CUDA: q, k, v are permuted to
/// (B, H, T, hd), the products are cuBLAS strided-batched GEMMs (full fp32, no TF32) and the
/// causal softmax and its backward are fused warp-per-row kernels.
#include <cstdint>
#include <memory>

#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"
#include "frugal/nn/linear.hpp"
#include "frugal/nn/module.hpp"

namespace frugal::nn {

/// What causal_attention_forward returns.
struct CausalAttentionForward {
  Tensor out;    ///< (B, T, C): the heads' outputs side by side (before any output projection)
  Tensor probs;  ///< (B, H, T, T): attention probabilities, row t zero after column t
};

/// Causal softmax attention of the packed qkv (B, T, 3C) with `num_heads` heads (C divisible by
/// it): head h uses columns [h*hd, (h+1)*hd) of each of the q, k and v thirds. Output at time t
/// depends only on times <= t.
CausalAttentionForward causal_attention_forward(ConstTensorView qkv, int64_t num_heads,
                                                const ExecContext& ctx = {});

/// dL/dqkv (B, T, 3C) for grad_out (B, T, C), given the forward's qkv and probs.
Tensor causal_attention_backward(ConstTensorView grad_out, ConstTensorView qkv,
                                 ConstTensorView probs, int64_t num_heads,
                                 const ExecContext& ctx = {});

/// CausalSelfAttention(C, H): children "c_attn" = Linear(C, 3C) and "c_proj" = Linear(C, C)
/// (GPT-2 names; seeds `seed` and `seed + 1`, PyTorch default init). Input and output (B, T, C).
/// forward keeps qkv and probs for the next backward (B*H*T*T elements: memory grows as T^2).
/// Inside an amp::AmpContext whose policy runs kAttentionProduct low (f32 layers): the four
/// forward and backward products run on amp::gemm (CPU and CUDA) with q, k, v, the stored
/// probabilities, the output gradient and the score gradient rounded to the low dtype (fp32
/// accumulation, fp32 softmax and output), and q, k, v and probs are kept in the low dtype when
/// the policy has low_saved_activations (half the T^2 memory).
class CausalSelfAttention : public Module {
 public:
  CausalSelfAttention(int64_t dim, int64_t num_heads, uint64_t seed, DType dtype = DType::kF32);

  Tensor forward(const Tensor& input) override;
  Tensor backward(const Tensor& grad_output) override;
  std::string type_name() const override { return "CausalSelfAttention"; }

  int64_t dim() const { return dim_; }
  int64_t num_heads() const { return num_heads_; }
  Linear& c_attn() { return *c_attn_; }
  Linear& c_proj() { return *c_proj_; }

 private:
  int64_t dim_, num_heads_;
  std::shared_ptr<Linear> c_attn_, c_proj_;
  Tensor qkv_, probs_;                 // saved by forward (in the low dtype under autocast)
  DType product_dtype_ = DType::kF32;  // dtype of the attention products' operands
};

}  // namespace frugal::nn
