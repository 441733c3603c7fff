// DynamicLossScaler: PyTorch GradScaler's update (torch/amp/grad_scaler.py, _amp_update_scale)
// with DeepSpeed's hysteresis and min_scale (deepspeed/runtime/fp16/loss_scaler.py).
#include "frugal/amp/loss_scaler.hpp"

#include <algorithm>
#include <cmath>

#include "amp/amp_internal.hpp"
#include "cu_ops.hpp"
#include "frugal/core/error.hpp"

namespace frugal::amp {

DynamicLossScaler::DynamicLossScaler(LossScalerOptions opt) : opt_(opt) {
  constexpr const char* kOp = "amp::DynamicLossScaler";
  FRUGAL_REQUIRE(std::isfinite(opt.init_scale) && opt.init_scale > 0.f, kOp,
                 "init_scale must be finite and > 0, got ", opt.init_scale);
  FRUGAL_REQUIRE(std::isfinite(opt.growth_factor) && opt.growth_factor > 1.f, kOp,
                 "growth_factor must be finite and > 1, got ", opt.growth_factor);
  FRUGAL_REQUIRE(opt.backoff_factor > 0.f && opt.backoff_factor < 1.f, kOp,
                 "backoff_factor must be in (0, 1), got ", opt.backoff_factor);
  FRUGAL_REQUIRE(opt.growth_interval >= 1, kOp, "growth_interval must be >= 1, got ",
                 opt.growth_interval);
  FRUGAL_REQUIRE(opt.hysteresis >= 1, kOp, "hysteresis must be >= 1, got ", opt.hysteresis);
  FRUGAL_REQUIRE(
      std::isfinite(opt.min_scale) && opt.min_scale > 0.f && opt.min_scale <= opt.init_scale, kOp,
      "min_scale must be in (0, init_scale], got ", opt.min_scale);
  state_ = {opt.init_scale, 0, opt.hysteresis};
}

UnscaleResult DynamicLossScaler::unscale_and_check(
    const std::vector<std::pair<std::string, TensorView>>& grads, const ExecContext& ctx) const {
  constexpr const char* kOp = "amp::unscale_and_check";
  for (const auto& [name, g] : grads) {
    FRUGAL_REQUIRE(g.dtype == DType::kF32, kOp, "gradient '", name, "' must be f32, got ",
                   dtype_name(g.dtype));
    FRUGAL_REQUIRE(g.is_contiguous(), kOp, "gradient '", name, "' must be contiguous");
    FRUGAL_REQUIRE(g.device == grads.front().second.device, kOp, "gradient '", name,
                   "' is on another device than '", grads.front().first, "'");
  }
  // 1 / scale in double then rounded, as PyTorch does; exact for power-of-two scales.
  const float inv = static_cast<float>(1.0 / static_cast<double>(state_.scale));
  UnscaleResult r;
  if (grads.empty()) return r;
  std::vector<bool> bad(grads.size(), false);
  if (grads.front().second.device.kind == DeviceKind::kCpu) {
    for (size_t i = 0; i < grads.size(); ++i) {
      if (grads[i].second.numel() > 0) bad[i] = cpu::amp_unscale_check(grads[i].second, inv, ctx);
    }
  } else {
    const int64_t n = static_cast<int64_t>(grads.size());
    Tensor flags = Tensor::zeros(Shape{n}, DType::kI32, grads.front().second.device, ctx);
    for (int64_t i = 0; i < n; ++i) {
      if (grads[i].second.numel() > 0) {
        cu::amp_unscale_check(grads[i].second, inv, flags.view(), i, ctx);
      }
    }
    const std::vector<int32_t> host = flags.to(Device::cpu(), ctx).to_vector<int32_t>();
    for (int64_t i = 0; i < n; ++i) bad[i] = host[i] != 0;
  }
  for (size_t i = 0; i < grads.size(); ++i) {
    if (!bad[i]) continue;
    if (!r.found_inf) r.first_nonfinite = grads[i].first;
    r.found_inf = true;
    ++r.num_nonfinite_tensors;
  }
  return r;
}

StepDecision DynamicLossScaler::update(bool found_inf) {
  StepDecision d;
  d.scale_before = state_.scale;
  d.skip_step = found_inf;
  if (found_inf) {
    state_.growth_tracker = 0;
    if (state_.hysteresis_left <= 1) {
      const float next = std::max(state_.scale * opt_.backoff_factor, opt_.min_scale);
      d.backed_off = next != state_.scale;
      state_.scale = next;
    } else {
      --state_.hysteresis_left;
    }
  } else {
    ++state_.growth_tracker;
    if (state_.growth_tracker >= opt_.growth_interval) {
      const float next = state_.scale * opt_.growth_factor;
      if (std::isfinite(next)) {
        state_.scale = next;
        d.grew = true;
      }
      state_.growth_tracker = 0;
      state_.hysteresis_left = opt_.hysteresis;
    }
  }
  d.scale_after = state_.scale;
  return d;
}

void DynamicLossScaler::load_state(const LossScalerState& s) {
  constexpr const char* kOp = "amp::DynamicLossScaler";
  FRUGAL_REQUIRE(std::isfinite(s.scale) && s.scale > 0.f, kOp,
                 "state scale must be finite and > 0, got ", s.scale);
  FRUGAL_REQUIRE(s.growth_tracker >= 0, kOp, "state growth_tracker must be >= 0, got ",
                 s.growth_tracker);
  FRUGAL_REQUIRE(s.hysteresis_left >= 1 && s.hysteresis_left <= opt_.hysteresis, kOp,
                 "state hysteresis_left must be in [1, ", opt_.hysteresis, "], got ",
                 s.hysteresis_left);
  state_ = s;
}

}  // namespace frugal::amp
