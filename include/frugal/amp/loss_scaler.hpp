#pragma once
/// Dynamic loss scaling for fp16 training: PyTorch GradScaler's rule plus DeepSpeed's hysteresis
/// and minimum scale (see docs/amp.md for the rule and a worked trace).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"

namespace frugal::amp {

/// Options of DynamicLossScaler; the defaults are PyTorch GradScaler's plus DeepSpeed's min_scale.
struct LossScalerOptions {
  float init_scale = 65536.f;      ///< initial scale, 2^16
  float growth_factor = 2.f;       ///< scale *= growth_factor after growth_interval finite steps
  float backoff_factor = 0.5f;     ///< scale *= backoff_factor on an overflow that backs off
  int64_t growth_interval = 2000;  ///< consecutive finite steps before growing
  int hysteresis = 1;     ///< overflows tolerated (DeepSpeed): back off on the hysteresis-th
  float min_scale = 1.f;  ///< the scale never backs off below this
};

/// Outcome of unscale_and_check.
struct UnscaleResult {
  bool found_inf = false;       ///< some gradient held Inf or NaN (tested on the scaled input)
  std::string first_nonfinite;  ///< name of the first such tensor in the given order, or ""
  int64_t num_nonfinite_tensors = 0;  ///< how many tensors held a non-finite value
};

/// What update() decided for the step it closes.
struct StepDecision {
  bool skip_step = false;    ///< the optimizer step must be skipped (found_inf)
  bool backed_off = false;   ///< the scale was multiplied by backoff_factor (clamped to min_scale)
  bool grew = false;         ///< the scale was multiplied by growth_factor
  float scale_before = 0.f;  ///< scale used for this step
  float scale_after = 0.f;   ///< scale for the next step
};

/// The scaler's state, as scalars, for checkpoints.
struct LossScalerState {
  float scale = 65536.f;       ///< current scale
  int64_t growth_tracker = 0;  ///< consecutive finite steps since the last growth or overflow
  int hysteresis_left = 1;     ///< overflows still tolerated before the next backoff
};

/// Dynamic loss scaler. Per step: loss * scale() -> backward -> unscale_and_check(grads) ->
/// optimizer step unless found_inf -> update(found_inf).
class DynamicLossScaler {
 public:
  /// Validates the options: init_scale, growth_factor > 1, 0 < backoff_factor < 1,
  /// growth_interval >= 1, hysteresis >= 1, 0 < min_scale <= init_scale, all finite. Errors
  /// "[amp::DynamicLossScaler] ...".
  explicit DynamicLossScaler(LossScalerOptions opt = {});

  /// The current loss scale.
  float scale() const { return state_.scale; }
  /// The options.
  const LossScalerOptions& options() const { return opt_; }

  /// Multiplies every gradient (contiguous f32, CPU or CUDA) by 1 / scale() in place and checks
  /// for Inf / NaN in the same pass. Multi-tensor: one parallel loop (CPU) or one kernel launch
  /// (CUDA) over 64K-element chunks of all the tensors. Every tensor is unscaled; the result
  /// names the first tensor, in the given order, that held a non-finite value. On CUDA the
  /// kernel is enqueued on ctx.stream and one synchronization returns the flags. Errors
  /// "[amp::unscale_and_check] ..." for a non-f32 or non-contiguous gradient or mixed devices.
  UnscaleResult unscale_and_check(const std::vector<std::pair<std::string, TensorView>>& grads,
                                  const ExecContext& ctx = {}) const;

  /// Closes a step. found_inf: the step is skipped, the growth tracker resets and, when the
  /// hysteresis is used up, scale = max(scale * backoff_factor, min_scale) (else one overflow
  /// of the hysteresis is consumed). Finite: the tracker counts up and at growth_interval the
  /// scale grows (unless that would overflow fp32), the tracker resets and the hysteresis is
  /// restored.
  StepDecision update(bool found_inf);

  /// The state, for a checkpoint.
  LossScalerState state() const { return state_; }
  /// Restores a state from state(). Errors "[amp::DynamicLossScaler] ..." for a scale that is
  /// not finite and > 0, a negative tracker, or hysteresis_left outside [1, hysteresis].
  void load_state(const LossScalerState& s);

 private:
  LossScalerOptions opt_;
  LossScalerState state_;
};

}  // namespace frugal::amp
