#pragma once
/// Low-rank layers: factorized Linear and Conv2d layers built from frugal/lowrank decompositions,
/// a whole-model rewrite with a per-layer report, and LoRA adapters (Hu et al., ICLR 2022).
///
///   Linear W (m, n) at rank r  ->  Linear(n -> r, no bias) then Linear(r -> m, bias):
///     W ~ U_r S_r V_r^T = (U_r S_r^1/2)(S_r^1/2 V_r^T), the square root of S split evenly.
///   Conv2d, Tucker-2 (Kim et al. 2016)  ->  1x1 C_in -> r_in, kh x kw r_in -> r_out (the original
///     stride, padding and dilation), 1x1 r_out -> C_out (bias).
///   Conv2d, CP (Lebedev et al. 2015)    ->  1x1 C_in -> R, depthwise kh x 1, depthwise 1 x kw,
///     1x1 R -> C_out (bias); the vertical / horizontal parts take the stride, padding and
///     dilation of their own axis.
/// Each factorized layer is exactly its reconstructed dense layer (same outputs up to rounding);
/// the flow is reconstruct-then-fine-tune: factorize, then train the factors as ordinary layers.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"
#include "frugal/lowrank/rank.hpp"
#include "frugal/lowrank/tensor_decomp.hpp"
#include "frugal/nn/conv.hpp"
#include "frugal/nn/linear.hpp"
#include "frugal/nn/module.hpp"

namespace frugal::nn {

/// The Sequential that replaces a factorized layer; type_name() names the method
/// ("LowRankLinear", "Tucker2Conv2d", "CPConv2d") so reports and factorize_model recognise it.
class FactorizedSequential : public Sequential {
 public:
  explicit FactorizedSequential(std::string kind) : kind_(std::move(kind)) {}
  std::string type_name() const override { return kind_; }

 private:
  std::string kind_;
};

/// Linear(n -> rank, no bias) then Linear(rank -> m, with the original bias if any), from the
/// truncated SVD of the layer's weight (m, n); same dtype, device and context as `layer`.
/// Needs 1 <= rank <= min(m, n). The layer itself is not modified.
std::shared_ptr<Sequential> factorize_linear(Linear& layer, int64_t rank,
                                             const ExecContext& ctx = {});

/// The three convolutions of the Tucker-2 decomposition of the layer's kernel with ranks
/// (rank_out, rank_in) (lowrank::tucker2). Needs groups == 1.
std::shared_ptr<Sequential> factorize_conv_tucker2(Conv2d& layer, int64_t rank_out,
                                                   int64_t rank_in, const ExecContext& ctx = {});

/// The four convolutions of the rank-`rank` CP decomposition of the layer's kernel
/// (lowrank::cp_als with `opt`). Needs groups == 1.
std::shared_ptr<Sequential> factorize_conv_cp(Conv2d& layer, int64_t rank,
                                              const lowrank::CpOptions& opt = {},
                                              const ExecContext& ctx = {});

/// How factorize_model treats convolutions.
enum class ConvFactorization {
  kNone,     ///< leave Conv2d layers alone
  kTucker2,  ///< Tucker-2 (ranks per channel mode from the policy)
  kCp,       ///< CP (one rank; see docs/lowrank.md for how the policy maps to it)
};

/// Options of factorize_model beyond the rank policy.
struct FactorizeOptions {
  bool linear = true;                                   ///< factorize Linear layers
  ConvFactorization conv = ConvFactorization::kTucker2;  ///< and Conv2d layers (groups == 1, k > 1x1)
  lowrank::CpOptions cp{};                              ///< CP-ALS options for kCp
  /// Layers whose path (e.g. "0", "3.body.1") is listed here are left alone (e.g. the last
  /// classifier layer).
  std::vector<std::string> skip{};
};

/// What factorize_model did to one eligible layer.
struct LowRankLayerReport {
  std::string name;           ///< path of the layer in the model ("2", "1.body.0")
  std::string type;           ///< "Linear" or "Conv2d"
  std::string method;         ///< "svd", "tucker2", "cp"
  bool factorized = false;    ///< replaced; false when it would not save parameters
  std::string reason;         ///< why a layer was left alone
  int64_t rank = 0;           ///< r (Linear, CP) or r_out (Tucker-2)
  int64_t rank_in = 0;        ///< r_in (Tucker-2), 0 otherwise
  double relative_error = 0;  ///< ||W - W_approx||_F / ||W||_F of the kernel / weight
  int64_t params_before = 0;  ///< weight + bias elements
  int64_t params_after = 0;   ///< of the factorized layers (= before when not factorized)
  /// Multiply-adds x 2 per input row (Linear) or per output position (Conv2d; the 1x1 layers of
  /// a factorization are counted at the output resolution, exact for stride 1).
  int64_t flops_before = 0;
  int64_t flops_after = 0;
};

/// Replaces, in place, every eligible Linear / Conv2d that is a direct child of `model` or of any
/// Sequential nested in it (through any module, e.g. a Residual's body) by its factorization at
/// the rank `policy` selects, when that saves parameters (r (m + n) < m n for Linear; fewer
/// parameters for Conv2d). Returns one report per eligible layer, in model order. Layers held
/// outside a Sequential (e.g. GPT's MLP members) cannot be replaced and are not visited.
std::vector<LowRankLayerReport> factorize_model(Sequential& model,
                                                const lowrank::RankPolicy& policy,
                                                const FactorizeOptions& opt = {},
                                                const ExecContext& ctx = {});

/// LoRA adapter on a frozen Linear: y = base(x) + (alpha / r) (x A^T) B^T, A (r, in), B (out, r).
/// A is initialised Kaiming-uniform (U(-1/sqrt(in), 1/sqrt(in)), Philox with `seed`) and B to
/// zero, as in the LoRA paper, so the adapter starts as the identity change. The base layer's
/// parameters are set trainable = false (shared, not copied): backward accumulates gradients into
/// A and B only, and returns the full input gradient. Parameters "base.weight", "base.bias",
/// "lora_a", "lora_b"; on the base's device and dtype. forward then backward must pair.
class LoRALinear : public Module {
 public:
  LoRALinear(std::shared_ptr<Linear> base, int64_t rank, double alpha, uint64_t seed = 0);

  Tensor forward(const Tensor& input) override;
  Tensor backward(const Tensor& grad_output) override;
  std::string type_name() const override { return "LoRALinear"; }

  /// W += (alpha / r) B A: afterwards forward uses the base layer alone (same outputs up to
  /// rounding) and backward returns the input gradient only. No-op when already merged.
  void merge();
  /// Undoes merge(): W -= (alpha / r) B A. No-op when not merged.
  void unmerge();
  bool merged() const { return merged_; }

  Linear& base() { return *base_; }
  std::shared_ptr<Linear> base_ptr() const { return base_; }
  Parameter& lora_a() { return *a_; }
  Parameter& lora_b() { return *b_; }
  int64_t rank() const { return rank_; }
  double scaling() const { return scaling_; }

 private:
  std::shared_ptr<Linear> base_;
  int64_t rank_;
  double scaling_;
  Parameter* a_ = nullptr;
  Parameter* b_ = nullptr;
  bool merged_ = false;
  Tensor x_;  // (N, in): the last forward's input rows
  Tensor h_;  // (N, r): x A^T
};

}  // namespace frugal::nn
