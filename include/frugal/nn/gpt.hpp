#pragma once
/// A small GPT-2 (Radford et al. 2019), layer for layer as llm.c's train_gpt2.c:
///   x = wte[tokens] + wpe[0..T)
///   L blocks: x = x + attn(ln_1(x)); x = x + mlp(ln_2(x)), mlp = c_proj(GELU_tanh(c_fc(.)))
///   logits = ln_f(x) W_te^T      (the head is tied to the token embedding)
/// Parameter names follow GPT-2: "wte.weight", "wpe.weight", "h.0.ln_1.weight",
/// "h.0.attn.c_attn.weight", "h.0.mlp.c_fc.bias", ..., "ln_f.weight". Linear weights are
/// (out, in) as torch.nn.Linear (Hugging Face's GPT-2 Conv1D stores the transpose).
/// Like every layer here there is no tape: forward keeps what backward needs, and backward must
/// follow the forward it differentiates.
#include <cstdint>
#include <memory>
#include <vector>

#include "frugal/amp/autocast.hpp"
#include "frugal/core/dtype.hpp"
#include "frugal/core/tensor.hpp"
#include "frugal/nn/activation.hpp"
#include "frugal/nn/attention.hpp"
#include "frugal/nn/embedding.hpp"
#include "frugal/nn/layer_norm.hpp"
#include "frugal/nn/linear.hpp"
#include "frugal/nn/module.hpp"

namespace frugal::nn {

/// Shape of a GPT. Defaults are GPT-2 small (124M).
struct GPTConfig {
  int64_t vocab_size = 50257;  ///< V, rows of the token embedding and columns of the logits
  int64_t block_size = 1024;   ///< largest sequence length T (rows of the position embedding)
  int64_t n_layer = 12;        ///< L, transformer blocks
  int64_t n_head = 12;         ///< attention heads; must divide n_embd
  int64_t n_embd = 768;        ///< C, the model width
  uint64_t seed = 0;           ///< Philox seed of the initialisation
  DType dtype = DType::kF32;   ///< parameter dtype: f32, or f64 (finite-difference tests)
};

/// The feed-forward part of a block: c_proj(GELU_tanh(c_fc(x))), c_fc = Linear(C, 4C),
/// c_proj = Linear(4C, C). Input and output (..., C). Children "c_fc", "gelu", "c_proj" are
/// used through the registry, so a model rewrite (factorize_model, prune_structured, quantized
/// layers) may replace c_fc and c_proj by any module of the same input and output widths.
class MLP : public Module {
 public:
  MLP(int64_t dim, uint64_t seed, DType dtype = DType::kF32);
  Tensor forward(const Tensor& input) override;
  Tensor backward(const Tensor& grad_output) override;
  std::string type_name() const override { return "MLP"; }
  Module& c_fc() const { return *children()[0].second; }
  Module& c_proj() const { return *children()[2].second; }
};

/// One pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)). Input (B, T, C).
/// Children "ln_1", "attn", "ln_2", "mlp".
class TransformerBlock : public Module {
 public:
  TransformerBlock(int64_t dim, int64_t num_heads, uint64_t seed, DType dtype = DType::kF32);
  Tensor forward(const Tensor& input) override;
  Tensor backward(const Tensor& grad_output) override;
  std::string type_name() const override { return "TransformerBlock"; }
  LayerNorm& ln_1() { return *ln_1_; }
  CausalSelfAttention& attn() { return *attn_; }
  LayerNorm& ln_2() { return *ln_2_; }
  MLP& mlp() { return *mlp_; }

 private:
  std::shared_ptr<LayerNorm> ln_1_, ln_2_;
  std::shared_ptr<CausalSelfAttention> attn_;
  std::shared_ptr<MLP> mlp_;
};

/// The GPT model. Initialisation as GPT-2 / llm.c: every Linear weight and both embeddings
/// N(0, 0.02), the residual projections (attn.c_proj, mlp.c_proj) N(0, 0.02 / sqrt(2 L)),
/// biases 0, LayerNorm weight 1 and bias 0; drawn with Philox from config.seed, a distinct
/// counter range per parameter, so one seed gives one model on any device.
/// Created on the CPU; move with to(Device::cuda()).
class GPT : public Module {
 public:
  explicit GPT(const GPTConfig& config);

  /// tokens (B, T) i64 with 1 <= T <= block_size and ids in [0, V) -> logits (B, T, V).
  /// On CUDA the embedding id checks synchronize the stream (see embedding_forward).
  /// Under an amp::AmpContext whose policy runs kGemm low (f32 model), the tied head multiplies
  /// ln_f's output and a cached low-precision copy of W_te with amp::gemm (fp32 accumulation,
  /// f32 logits), and so do its two backward products; without a context it is the fp32 GEMM.
  Tensor forward(const Tensor& tokens) override;
  /// grad_logits (B, T, V) -> accumulates every parameter gradient (the tied W_te gets the
  /// head's and the embedding's contributions) and returns an undefined Tensor (tokens have no
  /// gradient). Calls the grad-ready hook per child as its gradients become final (wte last).
  Tensor backward(const Tensor& grad_logits) override;
  std::string type_name() const override { return "GPT"; }

  const GPTConfig& config() const { return config_; }
  Embedding& wte() { return *wte_; }
  Embedding& wpe() { return *wpe_; }
  TransformerBlock& block(int64_t i) { return *blocks_.at(static_cast<std::size_t>(i)); }
  LayerNorm& ln_f() { return *ln_f_; }

 private:
  GPTConfig config_;
  std::shared_ptr<Embedding> wte_, wpe_;
  std::vector<std::shared_ptr<TransformerBlock>> blocks_;
  std::shared_ptr<LayerNorm> ln_f_;
  Tensor positions_;  // (B, T) i64: 0..T-1 per row, cached for the last (B, T, device)
  Tensor x_final_;    // (B*T, C): ln_f's output, the head's input (in head_low_ under autocast)
  DType head_low_ = DType::kF32;  // the head's GEMM dtype in the last forward
  amp::WeightCopy head_w_copy_;   // autocast: low-precision copy of W_te for the head
  Tensor head_w_used_;            // autocast: the copy the last forward multiplied by
};

}  // namespace frugal::nn
