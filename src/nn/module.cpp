#include "frugal/nn/module.hpp"

#include <atomic>
#include <cmath>

#include "frugal/amp/autocast.hpp"
#include "frugal/core/ops.hpp"

namespace frugal::nn {
namespace {
std::atomic<bool> g_check_finite{false};
}  // namespace

void set_check_finite(bool on) { g_check_finite.store(on); }
bool check_finite_enabled() { return g_check_finite.load(); }

void require_finite(const Tensor& t, const char* op, const std::string& what) {
  if (!t.defined() || t.numel() == 0 || !is_float(t.dtype())) return;
  // abs_max propagates NaN, so one reduction finds NaN and Inf alike.
  const double m = abs_max(t).to_vector<double>()[0];
  if (!std::isfinite(m)) {
    detail::fail(ErrorCode::kInvalidArgument, op, "NaN or Inf in ", what);
  }
}

void Module::set_context(const ExecContext& ctx) {
  ctx_ = ctx;
  for (auto& [name, child] : children_) child->set_context(ctx);
}

Parameter& Module::register_parameter(const std::string& name, Tensor value, bool trainable) {
  FRUGAL_REQUIRE(value.defined(), "Module::register_parameter", "parameter '", name,
                 "' is undefined");
  auto p = std::make_unique<Parameter>();
  p->grad = Tensor::zeros(value.shape(), value.dtype(), value.device());
  p->value = std::move(value);
  p->trainable = trainable;
  params_.emplace_back(name, std::move(p));
  return *params_.back().second;
}

Tensor& Module::register_buffer(const std::string& name, Tensor value) {
  buffers_.emplace_back(name, std::make_unique<Tensor>(std::move(value)));
  return *buffers_.back().second;
}

std::vector<NamedParameter> Module::named_parameters(const std::string& prefix) {
  std::vector<NamedParameter> out;
  for (auto& [name, p] : params_) out.push_back({prefix + name, p.get()});
  for (auto& [name, child] : children_) {
    for (auto& np : child->named_parameters(prefix + name + ".")) out.push_back(np);
  }
  return out;
}

std::vector<Parameter*> Module::parameters() {
  std::vector<Parameter*> out;
  for (auto& np : named_parameters()) out.push_back(np.param);
  return out;
}

std::vector<NamedBuffer> Module::named_buffers(const std::string& prefix) {
  std::vector<NamedBuffer> out;
  for (auto& [name, b] : buffers_) out.push_back({prefix + name, b.get()});
  for (auto& [name, child] : children_) {
    for (auto& nb : child->named_buffers(prefix + name + ".")) out.push_back(nb);
  }
  return out;
}

void Module::replace_child(std::size_t index, std::shared_ptr<Module> module) {
  FRUGAL_REQUIRE(index < children_.size(), "Module::replace_child", "index ", index,
                 " out of range for ", children_.size(), " children");
  FRUGAL_REQUIRE(module != nullptr, "Module::replace_child", "null module");
  module->set_context(ctx_);
  module->train(training_);
  children_[index].second = std::move(module);
}

int64_t Module::num_parameters() {
  int64_t n = 0;
  for (Parameter* p : parameters()) n += p->value.numel();
  return n;
}

void Module::zero_grad(const ExecContext& ctx) {
  for (Parameter* p : parameters()) p->grad.fill(0.0, ctx);
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

void Module::to(Device device, const ExecContext& ctx) {
  for (auto& [name, p] : params_) {
    p->value = p->value.to(device, ctx);
    p->grad = p->grad.to(device, ctx);
  }
  for (auto& [name, b] : buffers_) *b = b->to(device, ctx);
  for (auto& [name, child] : children_) child->to(device, ctx);
}

Device Module::device() {
  auto params = parameters();
  return params.empty() ? Device::cpu() : params.front()->value.device();
}

void Module::notify_grads_ready(Module& child, const std::string& prefix) {
  if (!grad_ready_hook_) return;
  for (auto& np : child.named_parameters(prefix)) grad_ready_hook_(np.name, *np.param);
}

Sequential::Sequential(std::vector<std::shared_ptr<Module>> layers) {
  for (auto& l : layers) add(std::move(l));
}

Sequential& Sequential::add(std::shared_ptr<Module> layer) {
  FRUGAL_REQUIRE(layer != nullptr, "Sequential::add", "null layer");
  register_module(std::to_string(children().size()), std::move(layer));
  return *this;
}

Tensor Sequential::forward(const Tensor& input) {
  Tensor x = input;
  const bool check = check_finite_enabled();
  for (auto& [name, layer] : children()) {
    if (check) {
      require_finite(x, "Sequential",
                     "the input of layer " + name + " (" + layer->type_name() + ")");
    }
    x = layer->forward(x);
  }
  if (check) require_finite(x, "Sequential", "the output");
  return x;
}

Tensor Sequential::backward(const Tensor& grad_output) {
  Tensor g = grad_output;
  const auto& layers = children();
  const bool check = check_finite_enabled();
  for (auto it = layers.rbegin(); it != layers.rend(); ++it) {
    if (check) {
      require_finite(g, "Sequential",
                     "the output gradient of layer " + it->first + " (" + it->second->type_name() + ")");
    }
    g = it->second->backward(g);
    notify_grads_ready(*it->second, it->first + ".");
  }
  return g;
}

Residual::Residual(std::shared_ptr<Module> body) : body_(std::move(body)) {
  FRUGAL_REQUIRE(body_ != nullptr, "Residual", "null body");
  register_module("body", body_);
}

Tensor Residual::forward(const Tensor& input) {
  Tensor y = body_->forward(input);
  FRUGAL_REQUIRE(y.shape() == input.shape(), "Residual::forward", "body output shape ", y.shape(),
                 " differs from input shape ", input.shape());
  // Under autocast the skip path may carry a low-precision tensor (a GELU's output): the sum is
  // an f32 op.
  return add(amp::autocast_fp32(input, ctx_), amp::autocast_fp32(y, ctx_), ctx_);
}

Tensor Residual::backward(const Tensor& grad_output) {
  // d(x + f(x))/dx = I + f'(x): the body's input gradient plus the skip path.
  Tensor g = body_->backward(grad_output);
  return add(amp::autocast_fp32(g, ctx_), amp::autocast_fp32(grad_output, ctx_), ctx_);
}

}  // namespace frugal::nn
