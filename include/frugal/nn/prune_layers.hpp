#pragma once
/// Pruning for nn models: a mask registry keyed by parameter name (masked training: gradients
/// masked before the optimizer step, weights after it; masks saved in the checkpoint file or
/// beside it), schedules (one-shot, iterative, gradual polynomial of Zhu & Gupta 2017, lottery
/// ticket rewinding), the PruneFinetune driver (its own step or the training loops' StepHooks),
/// structured pruning of neurons and filters with PHYSICAL removal (smaller layers),
/// SparseLinear / SparseConv2d for CSR inference, and a size / FLOP report.
/// The tensor-level machinery is frugal/prune.hpp.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "frugal/nn/batch_norm.hpp"
#include "frugal/nn/checkpoint.hpp"
#include "frugal/nn/conv.hpp"
#include "frugal/nn/linear.hpp"
#include "frugal/nn/module.hpp"
#include "frugal/nn/optim.hpp"
#include "frugal/nn/train.hpp"
#include "frugal/prune/score.hpp"
#include "frugal/prune/sparse.hpp"

namespace frugal::nn {

/// How the Pruner ranks weights.
enum class PruneScope {
  kLayer,   ///< each tracked tensor pruned to the target sparsity on its own
  kGlobal,  ///< one magnitude threshold over every tracked tensor (global_unstructured)
};

/// Masks keyed by parameter name ("layers.0.weight"), living on each parameter's device.
/// Masked entries stay pruned: a new magnitude mask ranks them below every kept weight, so masks
/// only grow (monotone) under iterative and gradual schedules.
class Pruner {
 public:
  /// Tracks `names` of `model` (every parameter whose name ends in "weight" and whose rank is
  /// >= 2 when `names` is empty). Masks start as all ones. Throws InvalidArgument
  /// ("[Pruner] ...") for an unknown name or a non-float parameter.
  explicit Pruner(Module& model, std::vector<std::string> names = {});

  /// The tracked parameter names, in model order.
  const std::vector<std::string>& names() const { return names_; }
  /// The u8 mask of a tracked parameter (same shape and device).
  const Tensor& mask(const std::string& name) const;
  /// Replaces a mask (u8, the parameter's shape; moved to the parameter's device).
  void set_mask(const std::string& name, const Tensor& mask);

  /// Magnitude pruning of every tracked tensor to `sparsity` (per layer or global).
  void prune_magnitude(double sparsity, PruneScope scope = PruneScope::kLayer);
  /// N:M masks (along each weight's last dim, Conv2d weights viewed as (out, in*kh*kw)).
  void prune_nm(int n = 2, int m = 4);

  /// grad *= mask for every tracked parameter (call before Optimizer::step).
  void mask_grads(const ExecContext& ctx = {});
  /// weight *= mask for every tracked parameter (call after Optimizer::step).
  void apply_masks(const ExecContext& ctx = {});

  /// Fraction of pruned entries over all tracked tensors.
  double sparsity() const;
  /// Masks as safetensors tensors named "prune.mask.<param>" (host copies).
  std::map<std::string, Tensor> state() const;
  /// Restores masks from state(); every tracked name must be present with the right shape.
  /// Other entries of `state` (e.g. the "model." tensors of a checkpoint file) are ignored.
  void load_state(const std::map<std::string, Tensor>& state);
  /// Throws InvalidArgument ("[Pruner::load_state] ...") unless load_state(state) would succeed.
  void check_state(const std::map<std::string, Tensor>& state) const;
  /// Writes state() to a safetensors file (e.g. "<checkpoint>.masks.safetensors", next to the
  /// nn checkpoint, which holds the already-masked weights).
  void save(const std::string& path) const;
  /// Reads masks written by save() (strict, as load_state).
  void load(const std::string& path);

 private:
  Parameter& param(const std::string& name) const;
  Module* model_;
  std::vector<std::string> names_;
  std::map<std::string, Parameter*> params_;
  std::map<std::string, Tensor> masks_;
};

/// When and how much to prune.
struct PruneSchedule {
  enum class Kind { kOneShot, kIterative, kGradual };
  Kind kind = Kind::kOneShot;
  double initial_sparsity = 0.0;  ///< s_i (gradual)
  double final_sparsity = 0.5;    ///< s_f: one-shot target, gradual end, iterative cap
  double rate = 0.2;              ///< iterative: fraction of the remaining weights per round
  int64_t begin_step = 0;         ///< t0: first pruning step
  int64_t num_prunes = 1;         ///< n: gradual pruning events after t0 / iterative rounds
  int64_t frequency = 1;          ///< dt: steps between pruning events

  /// Prune once to `sparsity` at step `at`.
  static PruneSchedule one_shot(double sparsity, int64_t at = 0);
  /// Round r = 1..rounds at step begin + (r - 1) * steps_per_round prunes `rate` of the remaining
  /// weights: sparsity 1 - (1 - rate)^r (Han et al. 2015; the lottery-ticket papers).
  static PruneSchedule iterative(double rate, int64_t rounds, int64_t steps_per_round,
                                 int64_t begin = 0);
  /// Zhu & Gupta 2017: s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3 at t = t0, t0 + dt, ...,
  /// t0 + n dt.
  static PruneSchedule gradual(double s_i, double s_f, int64_t t0, int64_t n, int64_t dt);

  /// The target sparsity when step t is a pruning event, nothing otherwise.
  std::optional<double> target_at(int64_t t) const;
  /// The sparsity the schedule prescribes at step t (constant between events).
  double sparsity_at(int64_t t) const;
};

/// Drives masked training under a schedule: step() = mask gradients, optimizer step, prune when
/// the schedule says so (magnitude, per layer or global), apply masks. Lottery-ticket
/// rewinding (Frankle et al. 2019, "Stabilizing the Lottery Ticket Hypothesis"): the weights
/// of the tracked and all other trainable parameters are snapshotted after step
/// `rewind_step`; rewind() copies them back and re-applies the masks (optimizer state is not
/// reset: build a fresh optimizer for a faithful LTH run).
class PruneFinetune {
 public:
  /// `rewind_step` < 0 disables snapshots; 0 snapshots the weights at construction.
  PruneFinetune(Module& model, Optimizer& optim, Pruner& pruner, PruneSchedule schedule,
                PruneScope scope = PruneScope::kLayer, int64_t rewind_step = -1,
                bool rewind_after_prune = false);
  /// One training step after the caller's forward / backward. Returns true when it pruned.
  bool step(const ExecContext& ctx = {});
  /// The same step as hooks of the library training loops (train_classifier, train_char_gpt),
  /// which do the optimizer step themselves: before_step masks the gradients (and returns true),
  /// after_step counts the step, prunes when the schedule says so and re-applies the masks.
  /// The hooks refer to this driver, which must outlive the training call.
  StepHooks hooks(const ExecContext& ctx = {});
  /// Steps taken so far (the schedule's t).
  int64_t step_count() const { return t_; }
  /// Restores the snapshot of step `rewind_step` (throws InvalidArgument before it exists).
  void rewind(const ExecContext& ctx = {});
  bool has_snapshot() const { return !snapshot_.empty(); }

 private:
  void take_snapshot(const ExecContext& ctx);
  bool after_update(const ExecContext& ctx);
  Module* model_;
  Optimizer* optim_;
  Pruner* pruner_;
  PruneSchedule schedule_;
  PruneScope scope_;
  int64_t rewind_step_;
  bool rewind_after_prune_;
  int64_t t_ = 0;
  std::map<std::string, Tensor> snapshot_;
};

/// Indices (ascending) of the rows to KEEP when pruning `fraction` of rows with the lowest
/// `scores` (1-D, f32/f64; exactly llround(fraction * rows) pruned; ties prune the lower index).
/// Throws InvalidArgument ("[structured_keep] ...") when every row would go, fraction is outside
/// [0, 1) or a score is NaN.
std::vector<int64_t> structured_keep(const Tensor& scores, double fraction);

/// A new Linear holding rows `keep_out` and columns `keep_in` of `l` (empty = keep all), on l's
/// device and dtype.
std::shared_ptr<Linear> slice_linear(Linear& l, const std::vector<int64_t>& keep_out,
                                     const std::vector<int64_t>& keep_in);
/// A new Conv2d with filters `keep_out` and input channels `keep_in` (groups = 1 only).
std::shared_ptr<Conv2d> slice_conv2d(Conv2d& c, const std::vector<int64_t>& keep_out,
                                     const std::vector<int64_t>& keep_in);
/// A new BatchNorm2d with the channels `keep` (parameters and running statistics).
std::shared_ptr<BatchNorm2d> slice_batch_norm(BatchNorm2d& bn, const std::vector<int64_t>& keep);

/// Result of structured pruning of one layer of a Sequential.
struct StructuredPruneResult {
  std::shared_ptr<Sequential> model;  ///< the new, smaller model (unchanged layers are shared)
  std::vector<int64_t> kept;          ///< kept output neurons / filters of the layer
};

/// Removes `fraction` of the output neurons (Linear) or filters (Conv2d, groups = 1) of layer
/// `index` of `model`, ranked by the L1 / L2 norm of their weight rows (or `scores` when
/// given, e.g. TaylorAccumulator::row_scores()), and the matching inputs of the next Linear /
/// Conv2d; a BatchNorm2d in between is sliced too, element-wise layers (activations, dropout,
/// pooling) pass through, and a Flatten between a Conv2d and a Linear removes the matching
/// blocks of H*W input columns. The old model is unchanged; build a new optimizer for the new
/// one. Throws InvalidArgument ("[prune_structured] ...") when layer `index` is not a Linear or
/// Conv2d, no following Linear / Conv2d consumes it, or every neuron would be pruned.
StructuredPruneResult prune_structured(Sequential& model, std::size_t index, double fraction,
                                       prune::Norm norm = prune::Norm::kL2,
                                       const Tensor& scores = {});

/// Inference-only Linear y = x W^T + b with W stored as CSR (frugal::prune::spmm): built from a
/// pruned Linear (entries where `mask` is nonzero, or the nonzero weights without a mask).
/// forward computes W x^T with the sparse product and transposes. backward throws Unsupported.
class SparseLinear : public Module {
 public:
  explicit SparseLinear(Linear& dense, const Tensor& mask = {});
  Tensor forward(const Tensor& input) override;
  Tensor backward(const Tensor& grad_output) override;
  std::string type_name() const override { return "SparseLinear"; }
  const prune::CsrMatrix& weight() const { return w_; }
  int64_t in_features() const { return w_.cols; }
  int64_t out_features() const { return w_.rows; }

 private:
  prune::CsrMatrix w_;
  Tensor bias_;
};

/// Inference-only Conv2d (groups = 1) with the filter matrix W (out, in * kh * kw) stored as CSR,
/// built from a pruned Conv2d (entries where `mask` (u8, the weight's shape) is nonzero, or the
/// nonzero weights without a mask). forward is a direct sparse convolution (Park et al. 2017):
/// the input is zero-padded into planes (in, N, H + 2 pad_h, W + 2 pad_w), where every tap
/// (c, a, e) of every output position is the same flat shift, so each nonzero weight adds one
/// shifted run of its channel's plane to its output channel (an axpy over N Hp Wp values; no
/// im2col matrix), and the result is cropped (every stride-th row / column) to (N, out, oh, ow)
/// plus the bias. Work nnz * N Hp Wp, so it pays off at high sparsity with stride 1.
/// CPU only (InvalidArgument for another device); f32 / f64. backward throws Unsupported.
class SparseConv2d : public Module {
 public:
  /// Throws InvalidArgument ("[SparseConv2d] ...") for groups != 1, a convolution not on the
  /// CPU or a mask of another shape.
  explicit SparseConv2d(Conv2d& dense, const Tensor& mask = {});
  /// x (N, in, H, W) -> (N, out, oh, ow), the dense Conv2d's geometry.
  Tensor forward(const Tensor& input) override;
  /// Throws Unsupported: inference only.
  Tensor backward(const Tensor& grad_output) override;
  std::string type_name() const override { return "SparseConv2d"; }
  /// The filter matrix (out, in * kh * kw) in CSR.
  const prune::CsrMatrix& weight() const { return w_; }
  int64_t in_channels() const { return in_channels_; }
  int64_t out_channels() const { return w_.rows; }
  Size2 kernel_size() const { return kernel_; }
  const Conv2dParams& params() const { return params_; }

 private:
  prune::CsrMatrix w_;
  Tensor bias_;
  int64_t in_channels_ = 0;
  Size2 kernel_;
  Conv2dParams params_;
  Tensor padded_;     // (in, N Hp Wp + tail) reused while the input extents stay the same
  Shape padded_for_;  // the input shape padded_ was laid out for
};

/// An inference copy of `model` in which every direct child Linear becomes a SparseLinear and
/// every Conv2d (groups = 1) a SparseConv2d, keeping the entries of `pruner`'s mask for
/// "<child>.weight" when the pruner tracks it (the nonzero weights otherwise); other layers are
/// shared with `model`. The copy, shared layers included, is put in evaluation mode; CPU only
/// (as SparseConv2d).
std::shared_ptr<Sequential> sparse_inference_model(Sequential& model,
                                                   const Pruner* pruner = nullptr);

/// save_checkpoint(path, model, optim, state) with the pruner's masks in the same file, as
/// tensors "prune.mask.<param>" (u8) beside "model.<param>" (load_checkpoint ignores them), so
/// the masks live with the parameters they belong to. Written atomically.
void save_pruned_checkpoint(const std::string& path, Module& model, const Optimizer* optim,
                            const TrainState& state, const Pruner& pruner);
/// Reads a file written by save_pruned_checkpoint: load_checkpoint(path, model, optim) and the
/// masks of every parameter `pruner` tracks, then re-applies them. Everything is validated before
/// anything is assigned. Throws as load_checkpoint, and InvalidArgument
/// ("[Pruner::load_state] ...") when a mask is missing or has the wrong shape.
TrainState load_pruned_checkpoint(const std::string& path, Module& model, Optimizer* optim,
                                  Pruner& pruner, const ExecContext& ctx = {});

/// One row of a prune report.
struct LayerPruneStats {
  std::string name;          ///< parameter name
  std::string shape;         ///< "(out, in)"
  int64_t params = 0;        ///< elements
  int64_t nonzero = 0;       ///< kept (nonzero) elements
  double sparsity = 0.0;     ///< 1 - nonzero / params
  int64_t dense_bytes = 0;   ///< params * element size
  int64_t csr_bytes = 0;     ///< CSR with i32 indices: nonzero * (size + 4) + (rows + 1) * 4
  int64_t dense_flops = 0;   ///< 2 * params per output position (sample for Linear, pixel for conv)
  int64_t sparse_flops = 0;  ///< 2 * nonzero per output position
};

/// Per-layer sparsity, parameters, FLOPs and bytes of every parameter of rank >= 2, plus totals.
struct PruneReport {
  std::vector<LayerPruneStats> layers;
  int64_t params = 0, nonzero = 0, dense_bytes = 0, csr_bytes = 0, dense_flops = 0,
          sparse_flops = 0;
  /// A fixed-width table with one line per layer and a total line.
  std::string to_string() const;
};

/// Report of `model`'s weights (zeros count as pruned).
PruneReport prune_report(Module& model);

}  // namespace frugal::nn
