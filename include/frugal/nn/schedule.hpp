#pragma once
/// Learning-rate schedules as pure functions of the step: lr_at(step) for step = 0, 1, 2, ...
/// (the step about to be taken). Use them as `opt.set_lr(schedule.lr_at(step)); opt.step();`.
/// Being stateless, a schedule needs nothing in a checkpoint beyond the step count.
#include <cstdint>

namespace frugal::nn {

/// A learning rate as a function of the step.
class LrSchedule {
 public:
  virtual ~LrSchedule() = default;
  /// The learning rate for `step` (>= 0; InvalidArgument otherwise).
  virtual double lr_at(int64_t step) const = 0;
};

/// base * gamma^floor(step / step_size), as torch.optim.lr_scheduler.StepLR (closed form).
/// Throws InvalidArgument ("[StepLR] ...") unless base is finite and >= 0, step_size > 0 and gamma
/// is finite and >= 0.
class StepLR : public LrSchedule {
 public:
  StepLR(double base, int64_t step_size, double gamma);
  double lr_at(int64_t step) const override;

 private:
  double base_;
  int64_t step_size_;
  double gamma_;
};

/// Linear warm-up from 0 to `base` over `warmup_steps`, then half a cosine from `base` down to
/// `min_lr` at `total_steps`, and `min_lr` after that:
///   step < warmup:          base * step / warmup
///   warmup <= step < total: min_lr + (base - min_lr) * (1 + cos(pi * (step - warmup) /
///                                                            (total - warmup))) / 2
///   step >= total:          min_lr
/// (HuggingFace's get_cosine_schedule_with_warmup with a floor; step 0 has lr 0 when warmup > 0.)
/// Throws InvalidArgument ("[CosineWithWarmup] ...") unless 0 <= min_lr <= base (finite),
/// warmup_steps >= 0 and total_steps >= warmup_steps.
class CosineWithWarmup : public LrSchedule {
 public:
  CosineWithWarmup(double base, int64_t warmup_steps, int64_t total_steps, double min_lr = 0.0);
  double lr_at(int64_t step) const override;

 private:
  double base_;
  int64_t warmup_;
  int64_t total_;
  double min_lr_;
};

}  // namespace frugal::nn
