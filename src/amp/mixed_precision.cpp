// MixedPrecision (frugal/amp/mixed_precision.hpp): loss scaling and master-weight upkeep as
// training-loop hooks.
#include "frugal/amp/mixed_precision.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "frugal/amp/autocast.hpp"
#include "frugal/core/error.hpp"
#include "frugal/core/ops.hpp"

namespace frugal::amp {
namespace {

constexpr const char* kOp = "amp::MixedPrecision";

const MixedPrecisionOptions& checked(const MixedPrecisionOptions& o) {
  FRUGAL_REQUIRE(o.dtype == DType::kBF16 || o.dtype == DType::kF16, kOp,
                 "dtype must be bf16 or f16, got ", dtype_name(o.dtype));
  return o;
}

bool scaling_on(const MixedPrecisionOptions& o) {
  switch (o.loss_scaling) {
    case MixedPrecisionOptions::LossScaling::kOn:
      return true;
    case MixedPrecisionOptions::LossScaling::kOff:
      return false;
    case MixedPrecisionOptions::LossScaling::kAuto:
      break;
  }
  return o.dtype == DType::kF16;
}

double parse_number(const std::string& key, const std::string& text) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  FRUGAL_REQUIRE(end != text.c_str() && *end == '\0', kOp, "checkpoint value '", key, "' = '", text,
                 "' is not a number");
  return v;
}

}  // namespace

MixedPrecision::MixedPrecision(nn::Optimizer& optimizer, const MixedPrecisionOptions& options)
    : optimizer_(&optimizer),
      options_(checked(options)),
      scaling_(scaling_on(options)),
      scaler_(options.scaler) {
  for (const nn::NamedParameter& np : optimizer.params()) {
    FRUGAL_REQUIRE(np.param->value.dtype() == DType::kF32, kOp, "master weight '", np.name,
                   "' has dtype ", dtype_name(np.param->value.dtype()), "; expected f32");
  }
}

bool MixedPrecision::unscale_and_update(int64_t step, const ExecContext& ctx) {
  if (!scaling_) return true;
  std::vector<std::pair<std::string, TensorView>> grads;
  grads.reserve(optimizer_->params().size());
  for (const nn::NamedParameter& np : optimizer_->params()) {
    if (np.param->grad.numel() > 0) grads.emplace_back(np.name, np.param->grad.view());
  }
  last_unscale_ = grads.empty() ? UnscaleResult{} : scaler_.unscale_and_check(grads, ctx);
  last_decision_ = scaler_.update(last_unscale_.found_inf);
  if (last_decision_.skip_step) {
    skipped_.push_back({step, last_unscale_.first_nonfinite, last_unscale_.num_nonfinite_tensors,
                        last_decision_.scale_before, last_decision_.scale_after});
  }
  return !last_decision_.skip_step;
}

void MixedPrecision::after_step(int64_t step, const ExecContext& ctx) {
  invalidate_weight_copies();
  if (!options_.check_master_weights) return;
  for (const nn::NamedParameter& np : optimizer_->params()) {
    const Tensor& v = np.param->value;
    if (v.numel() == 0) continue;
    const float m = abs_max(v.cview(), ctx).to(Device::cpu()).to_vector<float>()[0];
    FRUGAL_REQUIRE(std::isfinite(m), kOp, "Inf or NaN in master weights '", np.name,
                   "' after step ", step, " (a diverged update: lower the learning rate, or ",
                   "check the gradients; loss scaling skips only non-finite gradients)");
  }
}

nn::StepHooks MixedPrecision::hooks() {
  nn::StepHooks h;
  if (scaling_) h.loss_scale = [this] { return scaler_.scale(); };
  h.before_step = [this](int64_t step) { return unscale_and_update(step); };
  h.after_step = [this](int64_t step) { after_step(step); };
  return h;
}

void MixedPrecision::save_state(nn::TrainState& state) const {
  const LossScalerState s = scaler_.state();
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.9g", static_cast<double>(s.scale));
  state.extra["amp.loss_scale"] = buf;
  state.extra["amp.growth_tracker"] = std::to_string(s.growth_tracker);
  state.extra["amp.hysteresis_left"] = std::to_string(s.hysteresis_left);
}

void MixedPrecision::load_state(const nn::TrainState& state) {
  auto it = state.extra.find("amp.loss_scale");
  if (it == state.extra.end()) return;
  LossScalerState s;
  s.scale = static_cast<float>(parse_number(it->first, it->second));
  for (const char* key : {"amp.growth_tracker", "amp.hysteresis_left"}) {
    auto jt = state.extra.find(key);
    FRUGAL_REQUIRE(jt != state.extra.end(), kOp, "checkpoint has amp.loss_scale but no ", key);
    const double v = parse_number(key, jt->second);
    FRUGAL_REQUIRE(v == std::floor(v) && std::fabs(v) < 9e15, kOp, "checkpoint value '", key,
                   "' = ", jt->second, " is not an integer");
    if (std::string(key) == "amp.growth_tracker") {
      s.growth_tracker = static_cast<int64_t>(v);
    } else {
      s.hysteresis_left = static_cast<int>(v);
    }
  }
  scaler_.load_state(s);
}

}  // namespace frugal::amp
