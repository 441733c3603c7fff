#pragma once
/// The training substrate's layer interface, in the explicit forward/backward style of llm.c:
/// forward(input) keeps what backward needs; backward(grad_output) returns grad_input and
/// accumulates (+=) the gradients of the layer's parameters. There is no tape.
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "frugal/core/tensor.hpp"

namespace frugal::nn {

/// A trainable tensor and its gradient (same shape, dtype and device; allocated with the value).
struct Parameter {
  Tensor value;
  Tensor grad;
  bool trainable = true;  ///< false freezes it: optimizers skip it, backward may skip its grad
};

/// A named parameter or buffer as the registry lists it: "layers.0.weight".
struct NamedParameter {
  std::string name;
  Parameter* param;
};
struct NamedBuffer {
  std::string name;
  Tensor* tensor;
};

/// Base of every layer. Subclasses register their parameters, buffers (running statistics) and
/// children in the constructor; the registry is what optimizers, checkpoints, pruning,
/// quantization, low-rank rewriting and data-parallel buckets work through.
class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  /// Computes the output and keeps what backward needs.
  virtual Tensor forward(const Tensor& input) = 0;
  /// Returns dL/d(input) for the last forward and accumulates parameter gradients.
  virtual Tensor backward(const Tensor& grad_output) = 0;
  /// Short type name for reports ("Linear", "Conv2d").
  virtual std::string type_name() const = 0;

  /// Every parameter of this module and its children, depth first, in registration order.
  std::vector<NamedParameter> named_parameters(const std::string& prefix = "");
  std::vector<Parameter*> parameters();
  /// Every buffer (non-trainable state such as BatchNorm running statistics).
  std::vector<NamedBuffer> named_buffers(const std::string& prefix = "");
  /// Direct children in registration order.
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const {
    return children_;
  }
  /// Replaces direct child `index` (keeping its name): how model rewrites (low-rank factorization,
  /// structured pruning, quantized layers) swap a layer for its optimized form.
  void replace_child(std::size_t index, std::shared_ptr<Module> module);
  /// Number of parameter elements (trainable or not).
  int64_t num_parameters();

  /// Sets every gradient to zero.
  void zero_grad(const ExecContext& ctx = {});
  /// Training mode (dropout active, batch statistics) or evaluation mode, recursively.
  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  /// Moves every parameter, gradient and buffer to `device`, recursively.
  void to(Device device, const ExecContext& ctx = {});
  /// The device of the first parameter (CPU for a module without parameters).
  Device device();

  /// The execution context (stream, CPU threads) this module's ops run with, recursively.
  void set_context(const ExecContext& ctx);
  const ExecContext& context() const { return ctx_; }

  /// Called once per parameter when its gradient is final during a backward pass (the
  /// data-parallel hook: a bucket's all-reduce starts as soon as its last gradient is ready).
  using GradReadyHook = std::function<void(const std::string& name, Parameter& param)>;
  void set_grad_ready_hook(GradReadyHook hook) { grad_ready_hook_ = std::move(hook); }

 protected:
  /// Registers a parameter; its gradient is allocated as zeros beside it.
  Parameter& register_parameter(const std::string& name, Tensor value, bool trainable = true);
  Tensor& register_buffer(const std::string& name, Tensor value);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    children_.emplace_back(name, module);
    return module;
  }
  /// Calls the grad-ready hook (if any) for every parameter of `child` (named under `prefix`).
  void notify_grads_ready(Module& child, const std::string& prefix);

  bool training_ = true;
  ExecContext ctx_;
  GradReadyHook grad_ready_hook_;

 private:
  std::vector<std::pair<std::string, std::unique_ptr<Parameter>>> params_;
  std::vector<std::pair<std::string, std::unique_ptr<Tensor>>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

/// Check mode: when on, Sequential checks every layer's input and gradient for NaN/Inf and throws
/// InvalidArgument naming the layer ("[Sequential] NaN or Inf in the input of layer 2 (Linear)").
/// Off by default: the check reads every activation once more.
void set_check_finite(bool on);
bool check_finite_enabled();
/// Throws InvalidArgument "[op] NaN or Inf in <what>" when `t` holds a non-finite value.
void require_finite(const Tensor& t, const char* op, const std::string& what);

/// Layers applied in order; backward runs them in reverse and reports each layer's gradients as
/// ready as soon as that layer's backward returns.
class Sequential : public Module {
 public:
  Sequential() = default;
  explicit Sequential(std::vector<std::shared_ptr<Module>> layers);
  /// Appends a layer, named by its index.
  Sequential& add(std::shared_ptr<Module> layer);
  std::size_t size() const { return children().size(); }
  Module& operator[](std::size_t i) const { return *children()[i].second; }

  Tensor forward(const Tensor& input) override;
  Tensor backward(const Tensor& grad_output) override;
  std::string type_name() const override { return "Sequential"; }
};

/// y = x + f(x): the residual connection of ResNet and transformer blocks.
class Residual : public Module {
 public:
  explicit Residual(std::shared_ptr<Module> body);
  Tensor forward(const Tensor& input) override;
  Tensor backward(const Tensor& grad_output) override;
  std::string type_name() const override { return "Residual"; }

 private:
  std::shared_ptr<Module> body_;
};

}  // namespace frugal::nn
