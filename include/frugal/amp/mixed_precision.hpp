#pragma once
/// Mixed-precision training with the nn training loops: the autocast policy, fp32 master weights
/// with refreshed low-precision copies, and dynamic loss scaling, packaged as nn::StepHooks.
///
///   amp::MixedPrecision mp(optimizer, {.dtype = DType::kF16});   // loss scaling on for f16
///   nn::TrainOptions o = recipe.train;  o.hooks = mp.hooks();
///   amp::AmpContext autocast(mp.policy());                        // layers follow the policy
///   nn::train_classifier(model, optimizer, train, test, o);
///
/// Per step (nn/train.hpp): grad of loss * loss_scale() -> backward -> before_step: unscale every
/// gradient and check Inf/NaN in one pass each (DynamicLossScaler::unscale_and_check); a
/// non-finite step is skipped (the fp32 master is untouched) and reported -> optimizer step on the
/// fp32 master -> after_step: the low-precision weight copies are invalidated and, when asked,
/// the master weights are checked for Inf/NaN.
#include <cstdint>
#include <string>
#include <vector>

#include "frugal/amp/loss_scaler.hpp"
#include "frugal/amp/policy.hpp"
#include "frugal/core/dtype.hpp"
#include "frugal/nn/checkpoint.hpp"
#include "frugal/nn/optim.hpp"
#include "frugal/nn/train.hpp"

namespace frugal::amp {

/// Options of MixedPrecision.
struct MixedPrecisionOptions {
  DType dtype = DType::kBF16;  ///< low-precision compute dtype: kBF16 or kF16
  /// Dynamic loss scaling: kAuto is on for f16 and off for bf16 (bf16 has fp32's range).
  enum class LossScaling { kAuto, kOn, kOff } loss_scaling = LossScaling::kAuto;
  LossScalerOptions scaler;  ///< the scaler's options (PyTorch defaults)
  /// After each step, check the fp32 master weights for Inf/NaN (one abs-max pass over them) and
  /// throw "[amp::MixedPrecision] Inf or NaN in master weights '<name>' after step <n>".
  bool check_master_weights = true;
};

/// One skipped step, as the scaler reported it.
struct SkippedStep {
  int64_t step = 0;                   ///< the loop's step index (from 0)
  std::string first_nonfinite;        ///< first parameter whose gradient held Inf/NaN
  int64_t num_nonfinite_tensors = 0;  ///< parameters with non-finite gradients
  float scale_before = 0.f;           ///< the loss scale of that step
  float scale_after = 0.f;            ///< the loss scale after the update
};

/// The training-loop side of mixed precision for one optimizer (its parameters are the master
/// weights). Keeps the scaler and the log of skipped steps; must outlive the hooks it returns.
class MixedPrecision {
 public:
  /// Errors "[amp::MixedPrecision] ..." for a dtype other than bf16 / f16 or a parameter that is
  /// not f32 (the master weights must be fp32); the scaler options as DynamicLossScaler.
  explicit MixedPrecision(nn::Optimizer& optimizer, const MixedPrecisionOptions& options = {});

  /// The autocast policy to activate with amp::AmpContext (default_policy(dtype)).
  AutocastPolicy policy() const { return default_policy(options_.dtype); }
  /// Hooks for nn::TrainOptions::hooks (loss_scale, before_step, after_step).
  nn::StepHooks hooks();

  /// Whether dynamic loss scaling is on.
  bool loss_scaling() const { return scaling_; }
  /// The scaler (scale 1 and never used when loss scaling is off).
  const DynamicLossScaler& scaler() const { return scaler_; }
  /// The current loss scale (1 without loss scaling).
  float loss_scale() const { return scaling_ ? scaler_.scale() : 1.f; }

  /// The before_step half by hand (for custom loops): unscale and check every gradient of the
  /// optimizer's parameters, update the scale; returns false when the step must be skipped.
  bool unscale_and_update(int64_t step, const ExecContext& ctx = {});
  /// The after_step half by hand: invalidate weight copies, check the master weights.
  void after_step(int64_t step, const ExecContext& ctx = {});

  /// Result of the last unscale and the last scale decision.
  const UnscaleResult& last_unscale() const { return last_unscale_; }
  const StepDecision& last_decision() const { return last_decision_; }
  /// Every skipped step so far, in order.
  const std::vector<SkippedStep>& skipped() const { return skipped_; }

  /// Writes the scaler state into state.extra ("amp.loss_scale", "amp.growth_tracker",
  /// "amp.hysteresis_left"), so nn::save_checkpoint stores it.
  void save_state(nn::TrainState& state) const;
  /// Restores it from state.extra (after nn::load_checkpoint); keys missing: nothing changes.
  /// Errors "[amp::MixedPrecision] ..." for unparsable values, as load_state for invalid ones.
  void load_state(const nn::TrainState& state);

 private:
  nn::Optimizer* optimizer_;
  MixedPrecisionOptions options_;
  bool scaling_;
  DynamicLossScaler scaler_;
  UnscaleResult last_unscale_;
  StepDecision last_decision_;
  std::vector<SkippedStep> skipped_;
};

}  // namespace frugal::amp
