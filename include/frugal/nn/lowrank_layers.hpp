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
///   Conv2d, data-aware Tucker-2         ->  the Tucker-2 structure with both channel modes from
///     calibration data (tucker2_response_table); a Linear reading a flattened map can take it
///     as an H x W convolution (FactorizeOptions::linear_as_conv).
/// Each factorized layer is exactly its reconstructed dense layer (same outputs up to rounding);
/// the flow is reconstruct-then-fine-tune: factorize, then train the factors as ordinary layers
/// (fine_tune_factorized_classifier / fine_tune_factorized_char_gpt).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"
#include "frugal/lowrank/rank.hpp"
#include "frugal/lowrank/tensor_decomp.hpp"
#include "frugal/nn/conv.hpp"
#include "frugal/nn/data.hpp"
#include "frugal/nn/gpt.hpp"
#include "frugal/nn/linear.hpp"
#include "frugal/nn/module.hpp"
#include "frugal/nn/optim.hpp"
#include "frugal/nn/train.hpp"

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
std::shared_ptr<Sequential> factorize_conv_tucker2(Conv2d& layer, int64_t rank_out, int64_t rank_in,
                                                   const ExecContext& ctx = {});

/// The four convolutions of the rank-`rank` CP decomposition of the layer's kernel
/// (lowrank::cp_als with `opt`). Needs groups == 1.
std::shared_ptr<Sequential> factorize_conv_cp(Conv2d& layer, int64_t rank,
                                              const lowrank::CpOptions& opt = {},
                                              const ExecContext& ctx = {});

/// The two convolutions of lowrank::channel_svd at rank `rank` (kh x kw C_in -> r with the
/// original stride / padding / dilation, then 1x1 r -> C_out with the bias). Needs groups == 1.
std::shared_ptr<Sequential> factorize_conv_channel(Conv2d& layer, int64_t rank,
                                                   const ExecContext& ctx = {});

/// The two convolutions of lowrank::spatial_svd at rank `rank` (kh x 1 C_in -> r, then 1 x kw
/// r -> C_out with the bias; each takes its own axis's stride / padding / dilation). Needs
/// groups == 1.
std::shared_ptr<Sequential> factorize_conv_spatial(Conv2d& layer, int64_t rank,
                                                   const ExecContext& ctx = {});

/// Response (data-aware) factorization of a Linear (lowrank/response.hpp): W ~ U_r U_r^T W with
/// U_r the top-r principal directions of the layer's outputs (without bias) on `inputs`
/// (..., in), i.e. Linear(in -> r, weight U_r^T W, no bias) then Linear(r -> out, weight U_r,
/// the bias). Needs 1 <= rank <= min(out, rows of inputs, in) and inputs of the layer's dtype
/// and device.
/// With `centered` (the default), the directions of the centered outputs and the mean moved into
/// the second layer's bias (which it then has even if the layer had none): see
/// lowrank::project_output.
std::shared_ptr<Sequential> factorize_linear_response(Linear& layer, const Tensor& inputs,
                                                      int64_t rank, bool centered = true,
                                                      const ExecContext& ctx = {});

/// Response factorization of a Conv2d (Zhang et al. 2015 channel decomposition): U_r from the
/// layer's outputs (without bias) on `inputs` (N, C_in, H, W), one sample per output position;
/// then a kh x kw conv C_in -> r (weight U_r^T W) and a 1x1 conv r -> C_out (weight U_r, bias).
/// Needs groups == 1, inputs of the layer's dtype and device, and 1 <= rank <= C_out.
/// `centered` as for factorize_linear_response.
std::shared_ptr<Sequential> factorize_conv_response(Conv2d& layer, const Tensor& inputs,
                                                    int64_t rank, bool centered = true,
                                                    const ExecContext& ctx = {});

/// Data-aware Tucker-2 analysis of a convolution on calibration inputs: both channel modes from
/// the data (Zhang et al., TPAMI 2015, response reconstruction, on the output mode; the
/// principal subspace of the inputs on the input mode), and for every rank pair the fraction of
/// the output variance the factorized layer keeps.
///   U (C_out, R_out): principal directions of the centered bias-free responses Y (one row per
///     image and output position), R_out = min(rows, C_out).
///   P (C_in, R_in): principal directions of the input channels' second moment (one row per
///     image and input position; uncentered, so the 1x1 projection P P^T x commutes with the
///     zero padding), R_in = min(rows, C_in): the input subspace that best reproduces x.
///   At ranks (a, b) the layer computes Yhat = U_a U_a^T Z_b + c with Z_b = W * (P_b P_b^T x)
///     and the least-squares constant c = mean(Y) - U_a U_a^T mean(Z_b) (moved into the bias);
///     kept(a, b) = 1 - ||Y - Yhat||_F^2 / ||Y - mean(Y)||_F^2 on the calibration rows. At
///     b = C_in this is the variance kept by the channel (output-mode) response decomposition.
/// Costs C_in + 1 convolutions of the calibration batch (one per input rank).
struct Tucker2ResponseTable {
  Tensor u_out;  ///< (C_out, R_out) orthonormal columns, by decreasing response variance
  Tensor mean;   ///< (C_out) mean bias-free response on the calibration inputs
  Tensor p_in;   ///< (C_in, R_in) orthonormal columns, by decreasing input second moment
  int64_t r_out_max = 0;
  int64_t r_in_max = 0;
  /// kept[(a - 1) r_in_max + (b - 1)] for ranks (a, b): fraction of the response variance kept
  /// (all 1 for constant responses, which the bias keeps; NaN when an SVD did not converge).
  std::vector<double> kept;
  bool converged = true;  ///< both SVDs converged
};

/// The analysis above for `layer` (groups == 1) on `inputs` (N, C_in, H, W) of its dtype and
/// device. Throws InvalidArgument "[tucker2_response_table] ..." otherwise.
Tucker2ResponseTable tucker2_response_table(Conv2d& layer, const Tensor& inputs,
                                            const ExecContext& ctx = {});

/// Data-aware Tucker-2 of a convolution at ranks (rank_out, rank_in) from
/// tucker2_response_table(layer, inputs): 1x1 C_in -> r_in (weight P^T; left out when
/// r_in = C_in), kh x kw r_in -> r_out (weight U^T W P, the original stride / padding /
/// dilation), 1x1 r_out -> C_out (weight U; left out when r_out = C_out), the last layer with the
/// bias b + c (which it has even if the layer had none). Parameters:
/// lowrank::tucker2_folded_params + C_out. Needs groups == 1, 1 <= rank_out <= R_out,
/// 1 <= rank_in <= R_in.
std::shared_ptr<Sequential> factorize_conv_tucker2_response(Conv2d& layer, const Tensor& inputs,
                                                            int64_t rank_out, int64_t rank_in,
                                                            const ExecContext& ctx = {});

/// Reshapes rows (N, C H W) into maps (N, C, H, W), the inverse of Flatten(1): the first layer of
/// a Linear factorized as an H x W convolution (FactorizeOptions::linear_as_conv).
class Unflatten : public Module {
 public:
  Unflatten(int64_t channels, int64_t height, int64_t width);
  Tensor forward(const Tensor& input) override;
  Tensor backward(const Tensor& grad_output) override;
  std::string type_name() const override { return "Unflatten"; }

 private:
  int64_t c_, h_, w_;
};

/// How factorize_model treats convolutions.
enum class ConvFactorization {
  kNone,     ///< leave Conv2d layers alone
  kTucker2,  ///< Tucker-2 (ranks per channel mode from the policy, or by core energy)
  kCp,       ///< CP (one rank; see docs/lowrank.md for how the policy maps to it)
  kChannel,  ///< channel SVD (kxk conv to r, then 1x1): the (C_out, C_in kh kw) matrix
  kSpatial,  ///< spatial SVD (kx1 then 1xk; Jaderberg et al. 2014): (C_in kh, C_out kw)
};

/// Whose spectrum the energy / error / global-energy rules measure.
enum class EnergySource {
  kWeights,    ///< the weights' singular values (data-free)
  kResponses,  ///< the layer outputs on FactorizeOptions::calibration (Linear; conv with
               ///< kChannel: response channel decomposition; conv with kTucker2: data-aware
               ///< Tucker-2, tucker2_response_table, per-layer energy / error rules only);
               ///< CP and spatial convs are not supported
};

/// What "energy" means for a Tucker-2 rank pair.
enum class Tucker2Energy {
  kPerMode,  ///< each channel mode's unfolding energy separately (r_out, r_in chosen apart)
  kCore,     ///< the fraction of ||W||^2 the truncated HOSVD core keeps (cheapest pair)
};

/// Options of factorize_model beyond the rank policy.
struct FactorizeOptions {
  bool linear = true;  ///< factorize Linear layers
  ConvFactorization conv =
      ConvFactorization::kTucker2;  ///< and Conv2d layers (groups == 1, k > 1x1)
  lowrank::CpOptions cp{};          ///< CP-ALS options for kCp
  /// Layers whose path (e.g. "0", "3.body.1") is listed here are left alone (e.g. the last
  /// classifier layer).
  std::vector<std::string> skip{};
  EnergySource energy_source = EnergySource::kWeights;  ///< spectrum the rules measure
  /// Model inputs (one batch, as model.forward takes them) for kResponses; the model runs them
  /// once in eval mode (BatchNorm uses its running statistics) before anything is replaced.
  Tensor calibration{};
  /// kResponses: principal directions of the centered outputs (their covariance; energy = the
  /// fraction of the output variance kept) with the mean moved into the bias (Zhang et al.
  /// 2015; adds a bias of C_out / out parameters to a layer that had none), or of the raw
  /// outputs (uncentered second moment).
  bool response_centered = true;
  Tucker2Energy tucker2_energy = Tucker2Energy::kPerMode;  ///< Tucker-2 energy definition
  /// RankRule::kGlobalEnergy: every layer's energy as a fraction of its own total (each layer
  /// weighs the same) instead of the raw sum of squares across layers.
  bool global_normalized = false;
  /// kResponses with kTucker2: a Linear that reads a flattened map (its Sequential sibling just
  /// before it is a Flatten whose calibration input is (N, C, H, W) with C H W = in) is an
  /// H x W valid convolution over that map (as fully convolutional networks read their
  /// classifiers, Long et al. 2015) and is factorized by the same data-aware Tucker-2 over its
  /// channel modes: Unflatten, [1x1 C -> r_in], H x W conv r_in -> r_out, [1x1 r_out -> out],
  /// Flatten. Other Linear layers keep the response SVD.
  bool linear_as_conv = false;
};

/// What factorize_model did to one eligible layer.
struct LowRankLayerReport {
  std::string name;           ///< path of the layer in the model ("2", "1.body.0")
  std::string type;           ///< "Linear" or "Conv2d"
  std::string method;         ///< "svd", "tucker2", "cp", "channel", "spatial", "response",
                              ///< "channel_response", "tucker2_response"
  bool factorized = false;    ///< replaced; false when it would not save parameters
  std::string reason;         ///< why a layer was left alone
  int64_t rank = 0;           ///< r (Linear, CP) or r_out (Tucker-2)
  int64_t rank_in = 0;        ///< r_in (Tucker-2), 0 otherwise
  double relative_error = 0;  ///< ||W - W_approx||_F / ||W||_F of the kernel / weight
  /// Fraction of the energy the rule measured that the chosen rank keeps: of the weights
  /// (1 - relative_error^2 for SVD / HOSVD) or of the responses (kResponses); NaN for CP.
  double energy_kept = 0;
  int64_t params_before = 0;  ///< weight + bias elements
  int64_t params_after = 0;   ///< of the factorized layers (= before when not factorized)
  /// Multiply-adds x 2 per input row (Linear) or per output position (Conv2d; the 1x1 layers of
  /// a factorization are counted at the output resolution, exact for stride 1).
  int64_t flops_before = 0;
  int64_t flops_after = 0;
};

/// Replaces, in place, every eligible Linear / Conv2d that is a direct child of a Sequential or
/// of a GPT MLP (nn::MLP, whose c_fc / c_proj are used through the registry) anywhere in `model`
/// (through any module: a Residual's body, a GPT's blocks) by its factorization at the rank
/// `policy` selects, when that saves parameters (r (m + n) < m n for Linear; fewer parameters
/// for Conv2d). Returns one report per eligible layer, in model order. Layers held as members
/// of other modules (e.g. the attention's c_attn) cannot be replaced and are not visited.
/// Rank rules: per layer (select_rank on the spectrum of opt.energy_source: weights, or the
/// responses on opt.calibration), or RankRule::kGlobalEnergy: one budget over all eligible
/// layers (lowrank::allocate_global_energy on chains capped at each layer's dense size; a
/// layer whose share would cost as much as its dense weight stays dense; Tucker-2 by core
/// energy; CP unsupported). Everything is analysed before anything is replaced. Throws
/// InvalidArgument "[factorize_model] ..." for kResponses without calibration, kResponses with
/// a convolution factorized by kCp or kSpatial, kGlobalEnergy with kCp or with a data-aware
/// Tucker-2 (kResponses + kTucker2 on a model with convolutions, or linear_as_conv),
/// linear_as_conv without kResponses + kTucker2.
std::vector<LowRankLayerReport> factorize_model(Module& model, const lowrank::RankPolicy& policy,
                                                const FactorizeOptions& opt = {},
                                                const ExecContext& ctx = {});

/// Totals over the factorized layers of a factorize_model report.
struct LowRankSummary {
  int64_t layers = 0;         ///< layers replaced
  int64_t params_before = 0;  ///< parameters of the replaced layers before (weight + bias)
  int64_t params_after = 0;   ///< parameters of their factorizations
  /// params_before / params_after (1 when nothing was replaced): 2 means half the parameters
  /// in the factorized layers.
  double param_ratio = 1;
  int64_t flops_before = 0;  ///< FLOPs of the replaced layers (units of LowRankLayerReport)
  int64_t flops_after = 0;   ///< FLOPs of their factorizations
  /// Parameters of every reported (eligible) layer, factorized or kept dense, before / after,
  /// and their ratio: unlike param_ratio, a rule that keeps the large layers dense does not look
  /// better than it is.
  int64_t eligible_params_before = 0;
  int64_t eligible_params_after = 0;
  double eligible_ratio = 1;
};
/// The totals of the reports whose layer was replaced (factorized == true).
LowRankSummary summarize(const std::vector<LowRankLayerReport>& reports);

/// What a reconstruct-then-fine-tune run measured.
struct LowRankFineTuneResult {
  std::vector<LowRankLayerReport> layers;  ///< factorize_model's report
  LowRankSummary summary;                  ///< its totals
  double factorize_seconds = 0;            ///< wall time of factorize_model
  /// Test accuracy (0..1) right after factorizing, before fine-tuning, measured as
  /// train_classifier measures its result (classifier; NaN for the GPT).
  double accuracy_before_fine_tune = TrainResult::kNaN;
  /// Validation loss (nats per character) right after factorizing, on the windows
  /// train_char_gpt evaluates (GPT; NaN for the classifier).
  double val_loss_before_fine_tune = TrainResult::kNaN;
  TrainResult fine_tune;  ///< the fine-tuning run (its test_accuracy / val_loss are the final ones)
};

/// Reconstruct-then-fine-tune for a classifier: factorize_model(model, policy, fopt) (the
/// factors reconstruct the truncated weights), measure the test accuracy, then train every
/// parameter of the rewritten model (factors included) with a fresh AdamW(`adamw`) by
/// train_classifier(model, ., train, test, train_opt). Same inputs as train_classifier.
LowRankFineTuneResult fine_tune_factorized_classifier(
    Module& model, const lowrank::RankPolicy& policy, const FactorizeOptions& fopt,
    const LabeledData& train, const LabeledData& test, const AdamWOptions& adamw,
    const TrainOptions& train_opt);

/// Reconstruct-then-fine-tune for a character GPT: factorize_model on the GPT (its MLPs' c_fc
/// and c_proj; the attention and embeddings stay dense), the validation loss estimate as
/// train_char_gpt measures it (train_opt's eval_batches, batch, seq_len and seed), then
/// train_char_gpt(model, AdamW(adamw), corpus, train_opt).
LowRankFineTuneResult fine_tune_factorized_char_gpt(GPT& model, const lowrank::RankPolicy& policy,
                                                    const FactorizeOptions& fopt,
                                                    const CharCorpus& corpus,
                                                    const AdamWOptions& adamw,
                                                    const TrainOptions& train_opt);

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
