// DynamicLossScaler: PyTorch GradScaler's update (torch/amp/grad_scaler.py, _amp_update_scale)
// with DeepSpeed's hysteresis and min_scale (deepspeed/runtime/fp16/loss_scaler.py).
#include "frugal/amp/loss_scaler.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

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
  std::vector<TensorView> views;
  views.reserve(grads.size());
  for (const auto& [name, g] : grads) views.push_back(g);
  const std::vector<detail::UnscaleChunk> chunks = detail::unscale_chunks(views);
  const auto num_tensors = static_cast<int64_t>(views.size());
  std::vector<uint8_t> bad;
  if (grads.front().second.device.kind == DeviceKind::kCpu) {
    bad = cpu::amp_unscale_check_multi(chunks, num_tensors, inv, ctx);
  } else {
    // One launch: the chunk table ({address, length, tensor}) goes to the device with the flags.
    std::vector<int64_t> table;
    table.reserve(3 * chunks.size());
    for (const detail::UnscaleChunk& c : chunks) {
      table.push_back(static_cast<int64_t>(reinterpret_cast<std::uintptr_t>(c.data)));
      table.push_back(c.n);
      table.push_back(c.tensor);
    }
    const Device dev = grads.front().second.device;
    const Tensor device_table =
        Tensor::from_vector(table, Shape{static_cast<int64_t>(chunks.size()), 3}).to(dev, ctx);
    Tensor flags = Tensor::zeros(Shape{num_tensors}, DType::kI32, dev, ctx);
    cu::amp_unscale_check_multi(device_table.cview(), inv, flags.view(), ctx);
    const std::vector<int32_t> host = flags.to(Device::cpu(), ctx).to_vector<int32_t>();
    bad.assign(host.begin(), host.end());
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
