// Learning-rate schedules (include/frugal/nn/schedule.hpp): closed forms evaluated in double.
#include "frugal/nn/schedule.hpp"

#include <cmath>
#include <numbers>

#include "frugal/core/error.hpp"

namespace frugal::nn {

StepLR::StepLR(double base, int64_t step_size, double gamma)
    : base_(base), step_size_(step_size), gamma_(gamma) {
  FRUGAL_REQUIRE(std::isfinite(base) && base >= 0, "StepLR", "base learning rate ", base,
                 " must be finite and >= 0");
  FRUGAL_REQUIRE(step_size > 0, "StepLR", "step_size ", step_size, " must be > 0");
  FRUGAL_REQUIRE(std::isfinite(gamma) && gamma >= 0, "StepLR", "gamma ", gamma,
                 " must be finite and >= 0");
}

double StepLR::lr_at(int64_t step) const {
  FRUGAL_REQUIRE(step >= 0, "StepLR::lr_at", "step ", step, " is negative");
  return base_ * std::pow(gamma_, static_cast<double>(step / step_size_));
}

CosineWithWarmup::CosineWithWarmup(double base, int64_t warmup_steps, int64_t total_steps,
                                   double min_lr)
    : base_(base), warmup_(warmup_steps), total_(total_steps), min_lr_(min_lr) {
  const char* op = "CosineWithWarmup";
  FRUGAL_REQUIRE(std::isfinite(base) && base >= 0, op, "base learning rate ", base,
                 " must be finite and >= 0");
  FRUGAL_REQUIRE(std::isfinite(min_lr) && min_lr >= 0 && min_lr <= base, op, "min_lr ", min_lr,
                 " must be in [0, base = ", base, "]");
  FRUGAL_REQUIRE(warmup_steps >= 0, op, "warmup_steps ", warmup_steps, " is negative");
  FRUGAL_REQUIRE(total_steps >= warmup_steps, op, "total_steps ", total_steps,
                 " is less than warmup_steps ", warmup_steps);
}

double CosineWithWarmup::lr_at(int64_t step) const {
  FRUGAL_REQUIRE(step >= 0, "CosineWithWarmup::lr_at", "step ", step, " is negative");
  if (step < warmup_) return base_ * static_cast<double>(step) / static_cast<double>(warmup_);
  if (step >= total_) return min_lr_;
  const double progress =
      static_cast<double>(step - warmup_) / static_cast<double>(total_ - warmup_);
  return min_lr_ + (base_ - min_lr_) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

}  // namespace frugal::nn
