// Validation, state handling and device dispatch of the optimizers and gradient clipping
// (include/frugal/nn/optim.hpp). Backends: src/nn/cpu/optim.cpp and kernels/nn/optim.cu.
#include "frugal/nn/optim.hpp"

#include <cmath>
#include <set>
#include <utility>

#include "cu_ops.hpp"
#include "frugal/amp/autocast.hpp"
#include "frugal/core/philox.hpp"
#include "nn/optim_bf16.hpp"
#include "nn/optim_internal.hpp"

namespace frugal::nn {
namespace {

bool finite_nonneg(double x) { return std::isfinite(x) && x >= 0; }

/// The parameter's gradient is still usable by a kernel: same shape, dtype, device, contiguous.
void check_grad(const std::string& op, const std::string& name, const Parameter& p) {
  FRUGAL_REQUIRE(p.grad.defined(), op, "parameter '", name, "' has no gradient");
  FRUGAL_REQUIRE(p.grad.shape() == p.value.shape(), op, "gradient of '", name, "' has shape ",
                 p.grad.shape(), " but the parameter has shape ", p.value.shape());
  FRUGAL_REQUIRE(p.grad.dtype() == p.value.dtype(), op, "gradient of '", name, "' has dtype ",
                 dtype_name(p.grad.dtype()), " but the parameter has dtype ",
                 dtype_name(p.value.dtype()));
  FRUGAL_REQUIRE(p.grad.device() == p.value.device(), op, "gradient of '", name, "' is on ",
                 p.grad.device().str(), " but the parameter is on ", p.value.device().str());
  FRUGAL_REQUIRE(p.grad.is_contiguous() && p.value.is_contiguous(), op, "parameter '", name,
                 "' or its gradient is not contiguous");
}

double get_scalar(const std::map<std::string, double>& h, const std::string& key,
                  const std::string& op) {
  auto it = h.find(key);
  FRUGAL_REQUIRE(it != h.end(), op, "state has no scalar '", key, "'");
  return it->second;
}

/// The parameter still lives where its optimizer state was allocated.
void check_slots(const std::string& op, const std::string& name, const Parameter& p,
                 const std::vector<Tensor>& slots) {
  for (const Tensor& s : slots) {
    FRUGAL_REQUIRE(s.device() == p.value.device(), op, "parameter '", name, "' is on ",
                   p.value.device().str(), " but its optimizer state is on ", s.device().str(),
                   " (build the optimizer after moving the model)");
  }
}

}  // namespace

// ---- Optimizer ---------------------------------------------------------------------------------

Optimizer::Optimizer(const std::vector<NamedParameter>& params, double lr,
                     std::vector<std::string> slot_names, const char* op)
    : slot_names_(std::move(slot_names)), lr_(lr) {
  FRUGAL_REQUIRE(finite_nonneg(lr), op, "learning rate ", lr, " must be finite and >= 0");
  std::set<const Parameter*> seen;
  for (const NamedParameter& np : params) {
    FRUGAL_REQUIRE(np.param != nullptr, op, "parameter '", np.name, "' is null");
    if (!np.param->trainable) continue;
    FRUGAL_REQUIRE(seen.insert(np.param).second, op, "parameter '", np.name, "' is listed twice");
    const Tensor& v = np.param->value;
    FRUGAL_REQUIRE(v.defined(), op, "parameter '", np.name, "' is undefined");
    FRUGAL_REQUIRE(v.dtype() == DType::kF32 || v.dtype() == DType::kF64, op, "parameter '", np.name,
                   "' has dtype ", dtype_name(v.dtype()), "; expected f32 or f64");
    check_grad(op, np.name, *np.param);
    params_.push_back(np);
    std::vector<Tensor> s;
    for (std::size_t k = 0; k < slot_names_.size(); ++k) {
      s.push_back(Tensor::zeros(v.shape(), v.dtype(), v.device()));
    }
    slots_.push_back(std::move(s));
  }
}

void Optimizer::zero_grad(const ExecContext& ctx) {
  for (const NamedParameter& np : params_) np.param->grad.fill(0.0, ctx);
}

void Optimizer::set_lr(double lr) {
  FRUGAL_REQUIRE(finite_nonneg(lr), type_name() + "::set_lr", "learning rate ", lr,
                 " must be finite and >= 0");
  lr_ = lr;
}

OptimizerState Optimizer::state() const {
  OptimizerState s;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    for (std::size_t k = 0; k < slot_names_.size(); ++k) {
      s.tensors[params_[i].name + "." + slot_names_[k]] = slots_[i][k];
    }
  }
  s.scalars = hyperparameters();
  s.scalars["lr"] = lr_;
  s.scalars["step"] = static_cast<double>(step_);
  return s;
}

void Optimizer::check_state(const OptimizerState& s) const {
  const std::string op = type_name() + "::load_state";
  std::set<std::string> expected;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const Tensor& v = params_[i].param->value;
    for (const std::string& slot : slot_names_) {
      const std::string key = params_[i].name + "." + slot;
      expected.insert(key);
      auto it = s.tensors.find(key);
      FRUGAL_REQUIRE(it != s.tensors.end(), op, "state has no tensor '", key, "'");
      FRUGAL_REQUIRE(it->second.defined(), op, "state tensor '", key, "' is undefined");
      FRUGAL_REQUIRE(it->second.shape() == v.shape(), op, "state tensor '", key, "' has shape ",
                     it->second.shape(), " but the parameter has shape ", v.shape());
      const DType want = slots_[i][&slot - slot_names_.data()].dtype();
      FRUGAL_REQUIRE(it->second.dtype() == want, op, "state tensor '", key, "' has dtype ",
                     dtype_name(it->second.dtype()), "; expected ", dtype_name(want));
    }
  }
  for (const auto& [key, t] : s.tensors) {
    FRUGAL_REQUIRE(expected.count(key) == 1, op, "unexpected state tensor '", key, "'");
  }
  const double lr = get_scalar(s.scalars, "lr", op);
  FRUGAL_REQUIRE(finite_nonneg(lr), op, "learning rate ", lr, " must be finite and >= 0");
  const double step = get_scalar(s.scalars, "step", op);
  FRUGAL_REQUIRE(step >= 0 && step <= 9.007199254740992e15 && step == std::floor(step), op, "step ",
                 step, " is not a non-negative integer");
  check_hyperparameters(s.scalars, op);
}

void Optimizer::load_state(const OptimizerState& s, const ExecContext& ctx) {
  check_state(s);
  for (std::size_t i = 0; i < params_.size(); ++i) {
    for (std::size_t k = 0; k < slot_names_.size(); ++k) {
      slots_[i][k].copy_from(s.tensors.at(params_[i].name + "." + slot_names_[k]), ctx);
    }
  }
  lr_ = s.scalars.at("lr");
  step_ = static_cast<int64_t>(s.scalars.at("step"));
  set_hyperparameters(s.scalars);
}

// ---- SGD ---------------------------------------------------------------------------------------

namespace {

void check_sgd(const SgdOptions& o, const std::string& op) {
  FRUGAL_REQUIRE(finite_nonneg(o.lr), op, "learning rate ", o.lr, " must be finite and >= 0");
  FRUGAL_REQUIRE(finite_nonneg(o.momentum), op, "momentum ", o.momentum,
                 " must be finite and >= 0");
  FRUGAL_REQUIRE(std::isfinite(o.dampening), op, "dampening ", o.dampening, " must be finite");
  FRUGAL_REQUIRE(finite_nonneg(o.weight_decay), op, "weight decay ", o.weight_decay,
                 " must be finite and >= 0");
  FRUGAL_REQUIRE(!o.nesterov || (o.momentum > 0 && o.dampening == 0), op,
                 "nesterov momentum requires momentum > 0 and dampening == 0 (momentum ",
                 o.momentum, ", dampening ", o.dampening, ")");
}

SgdOptions sgd_from(const std::map<std::string, double>& h, const std::string& op) {
  SgdOptions o;
  o.lr = get_scalar(h, "lr", op);
  o.momentum = get_scalar(h, "momentum", op);
  o.dampening = get_scalar(h, "dampening", op);
  o.nesterov = get_scalar(h, "nesterov", op) != 0;
  o.weight_decay = get_scalar(h, "weight_decay", op);
  return o;
}

std::vector<std::string> sgd_slots(const SgdOptions& o) {
  // Like torch, no momentum buffer exists without momentum.
  return o.momentum != 0 ? std::vector<std::string>{"momentum_buffer"} : std::vector<std::string>{};
}

const SgdOptions& checked(const SgdOptions& o) {
  check_sgd(o, "SGD");
  return o;
}

}  // namespace

SGD::SGD(const std::vector<NamedParameter>& params, const SgdOptions& options)
    : Optimizer(params, checked(options).lr, sgd_slots(options), "SGD"), options_(options) {}

void SGD::step(const ExecContext& ctx) {
  const bool first = step_ == 0;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    Parameter& p = *params_[i].param;
    check_grad("SGD::step", params_[i].name, p);
    check_slots("SGD::step", params_[i].name, p, slots_[i]);
    if (p.value.numel() == 0) continue;
    TensorView buf = options_.momentum != 0 ? slots_[i][0].view() : TensorView{};
    switch (p.value.device().kind) {
      case DeviceKind::kCpu:
        cpu::optim_sgd_update(p.value.view(), p.grad.cview(), buf, lr_, options_.momentum,
                              options_.dampening, options_.weight_decay, options_.nesterov, first,
                              ctx);
        break;
      case DeviceKind::kCuda:
        cu::optim_sgd_update(p.value.view(), p.grad.cview(), buf, lr_, options_.momentum,
                             options_.dampening, options_.weight_decay, options_.nesterov, first,
                             ctx);
        break;
    }
  }
  ++step_;
  amp::invalidate_weight_copies();
}

std::map<std::string, double> SGD::hyperparameters() const {
  return {{"momentum", options_.momentum},
          {"dampening", options_.dampening},
          {"nesterov", options_.nesterov ? 1.0 : 0.0},
          {"weight_decay", options_.weight_decay}};
}

void SGD::check_hyperparameters(const std::map<std::string, double>& h,
                                const std::string& op) const {
  const SgdOptions o = sgd_from(h, op);
  check_sgd(o, op);
  FRUGAL_REQUIRE((o.momentum != 0) == (options_.momentum != 0), op, "state has momentum ",
                 o.momentum, " but this optimizer has momentum ", options_.momentum,
                 " (a momentum buffer cannot appear or disappear)");
}

void SGD::set_hyperparameters(const std::map<std::string, double>& h) {
  options_ = sgd_from(h, "SGD::load_state");
  options_.lr = lr_;
}

// ---- AdamW -------------------------------------------------------------------------------------

namespace {

void check_adamw(const AdamWOptions& o, const std::string& op) {
  FRUGAL_REQUIRE(finite_nonneg(o.lr), op, "learning rate ", o.lr, " must be finite and >= 0");
  FRUGAL_REQUIRE(o.beta1 >= 0 && o.beta1 < 1, op, "beta1 ", o.beta1, " is outside [0, 1)");
  FRUGAL_REQUIRE(o.beta2 >= 0 && o.beta2 < 1, op, "beta2 ", o.beta2, " is outside [0, 1)");
  FRUGAL_REQUIRE(finite_nonneg(o.eps), op, "eps ", o.eps, " must be finite and >= 0");
  FRUGAL_REQUIRE(finite_nonneg(o.weight_decay), op, "weight decay ", o.weight_decay,
                 " must be finite and >= 0");
  FRUGAL_REQUIRE(o.moments_dtype == DType::kF32 || o.moments_dtype == DType::kBF16, op,
                 "moments_dtype must be f32 or bf16, got ", dtype_name(o.moments_dtype));
}

AdamWOptions adamw_from(const std::map<std::string, double>& h, const std::string& op) {
  AdamWOptions o;
  o.lr = get_scalar(h, "lr", op);
  o.beta1 = get_scalar(h, "beta1", op);
  o.beta2 = get_scalar(h, "beta2", op);
  o.eps = get_scalar(h, "eps", op);
  o.weight_decay = get_scalar(h, "weight_decay", op);
  return o;
}

const AdamWOptions& checked(const AdamWOptions& o) {
  check_adamw(o, "AdamW");
  return o;
}

}  // namespace

AdamW::AdamW(const std::vector<NamedParameter>& params, const AdamWOptions& options)
    : Optimizer(params, checked(options).lr, {"exp_avg", "exp_avg_sq"}, "AdamW"),
      options_(options) {
  if (options_.moments_dtype == DType::kF32) return;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const Tensor& v = params_[i].param->value;
    FRUGAL_REQUIRE(v.dtype() == DType::kF32, "AdamW", "bf16 moments need f32 parameters; '",
                   params_[i].name, "' is ", dtype_name(v.dtype()));
    for (Tensor& s : slots_[i]) s = Tensor::zeros(v.shape(), DType::kBF16, v.device());
  }
}

void AdamW::step(const ExecContext& ctx) {
  const int64_t t = step_ + 1;
  // The step's scalars in double, as torch computes them from Python floats.
  const double decay = 1.0 - lr_ * options_.weight_decay;
  const double bc1 = 1.0 - std::pow(options_.beta1, static_cast<double>(t));
  const double bc2 = 1.0 - std::pow(options_.beta2, static_cast<double>(t));
  const double step_size = lr_ / bc1;
  const double bc2_sqrt = std::sqrt(bc2);
  for (std::size_t i = 0; i < params_.size(); ++i) {
    Parameter& p = *params_[i].param;
    check_grad("AdamW::step", params_[i].name, p);
    check_slots("AdamW::step", params_[i].name, p, slots_[i]);
    if (p.value.numel() == 0) continue;
    if (options_.moments_dtype == DType::kBF16) {
      // A counter range per step and parameter (nn/optim_bf16.hpp): the same stream on both
      // devices, so a CPU and a CUDA run of one seed round alike.
      const auto n = static_cast<uint64_t>(p.value.numel());
      switch (p.value.device().kind) {
        case DeviceKind::kCpu:
          cpu::optim_adamw_update_bf16(
              p.value.view(), p.grad.cview(), slots_[i][0].view(), slots_[i][1].view(), decay,
              options_.beta1, options_.beta2, step_size, bc2_sqrt, options_.eps,
              options_.stochastic_rounding, options_.seed, rounding_offset_, ctx);
          break;
        case DeviceKind::kCuda:
          cu::optim_adamw_update_bf16(
              p.value.view(), p.grad.cview(), slots_[i][0].view(), slots_[i][1].view(), decay,
              options_.beta1, options_.beta2, step_size, bc2_sqrt, options_.eps,
              options_.stochastic_rounding, options_.seed, rounding_offset_, ctx);
          break;
      }
      rounding_offset_ += detail::adamw_bf16_counters(n);
      continue;
    }
    switch (p.value.device().kind) {
      case DeviceKind::kCpu:
        cpu::optim_adamw_update(p.value.view(), p.grad.cview(), slots_[i][0].view(),
                                slots_[i][1].view(), decay, options_.beta1, options_.beta2,
                                step_size, bc2_sqrt, options_.eps, ctx);
        break;
      case DeviceKind::kCuda:
        cu::optim_adamw_update(p.value.view(), p.grad.cview(), slots_[i][0].view(),
                               slots_[i][1].view(), decay, options_.beta1, options_.beta2,
                               step_size, bc2_sqrt, options_.eps, ctx);
        break;
    }
  }
  step_ = t;
  amp::invalidate_weight_copies();
}

std::map<std::string, double> AdamW::hyperparameters() const {
  return {{"beta1", options_.beta1},
          {"beta2", options_.beta2},
          {"eps", options_.eps},
          {"weight_decay", options_.weight_decay}};
}

void AdamW::check_hyperparameters(const std::map<std::string, double>& h,
                                  const std::string& op) const {
  check_adamw(adamw_from(h, op), op);
}

void AdamW::set_hyperparameters(const std::map<std::string, double>& h) {
  const AdamWOptions kept = options_;
  options_ = adamw_from(h, "AdamW::load_state");
  // Storage and rounding are properties of this optimizer's slots, not of the saved scalars.
  options_.moments_dtype = kept.moments_dtype;
  options_.stochastic_rounding = kept.stochastic_rounding;
  options_.seed = kept.seed;
}

// ---- clip_grad_norm ----------------------------------------------------------------------------

double clip_grad_norm(const std::vector<Parameter*>& params, double max_norm,
                      const ExecContext& ctx) {
  const char* op = "clip_grad_norm";
  FRUGAL_REQUIRE(max_norm >= 0, op, "max_norm ", max_norm, " must be >= 0 (and not NaN)");
  std::vector<Parameter*> ps;
  for (std::size_t i = 0; i < params.size(); ++i) {
    Parameter* p = params[i];
    FRUGAL_REQUIRE(p != nullptr, op, "parameter ", i, " is null");
    if (!p->trainable) continue;
    FRUGAL_REQUIRE(p->grad.defined(), op, "parameter ", i, " has no gradient");
    FRUGAL_REQUIRE(p->grad.dtype() == DType::kF32 || p->grad.dtype() == DType::kF64, op,
                   "gradient ", i, " has dtype ", dtype_name(p->grad.dtype()),
                   "; expected f32 or f64");
    FRUGAL_REQUIRE(p->grad.is_contiguous(), op, "gradient ", i, " is not contiguous");
    ps.push_back(p);
  }
  // Enqueue every device reduction first, then read them back in list order.
  std::vector<double> host(ps.size(), 0.0);
  std::vector<Tensor> device_sums(ps.size());
  for (std::size_t i = 0; i < ps.size(); ++i) {
    const Tensor& g = ps[i]->grad;
    if (g.numel() == 0) continue;
    switch (g.device().kind) {
      case DeviceKind::kCpu:
        host[i] = cpu::optim_sum_squares(g.cview(), ctx);
        break;
      case DeviceKind::kCuda:
        device_sums[i] = Tensor::empty(Shape{}, DType::kF64, g.device(), ctx);
        cu::optim_sum_squares(g.cview(), device_sums[i].view(), ctx);
        break;
    }
  }
  double total_sq = 0;
  for (std::size_t i = 0; i < ps.size(); ++i) {
    if (device_sums[i].defined()) host[i] = device_sums[i].to_vector<double>()[0];
    total_sq += host[i];
  }
  const double total = std::sqrt(total_sq);
  // torch: clip_coef = max_norm / (total + 1e-6), clamped to at most 1; a NaN stays NaN.
  const double coef = max_norm / (total + 1e-6);
  if (!(coef >= 1.0)) {
    for (Parameter* p : ps) {
      if (p->grad.numel() == 0) continue;
      switch (p->grad.device().kind) {
        case DeviceKind::kCpu:
          cpu::optim_scale_inplace(p->grad.view(), coef, ctx);
          break;
        case DeviceKind::kCuda:
          cu::optim_scale_inplace(p->grad.view(), coef, ctx);
          break;
      }
    }
  }
  return total;
}

double clip_grad_norm(const std::vector<NamedParameter>& params, double max_norm,
                      const ExecContext& ctx) {
  std::vector<Parameter*> ps;
  ps.reserve(params.size());
  for (const NamedParameter& np : params) ps.push_back(np.param);
  return clip_grad_norm(ps, max_norm, ctx);
}

}  // namespace frugal::nn
