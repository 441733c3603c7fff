#pragma once
/// Optimizers (SGD with momentum, AdamW) and gradient clipping, with the semantics of
/// torch.optim.SGD, torch.optim.AdamW and torch.nn.utils.clip_grad_norm_.
///
/// An optimizer works on the parameters a Module lists (Module::named_parameters()); frozen ones
/// (trainable == false) are skipped. Each step updates every parameter with one fused
/// elementwise kernel on the parameter's device (CPU: oneTBB; CUDA: one launch per parameter on
/// ctx.stream, no host synchronisation). Parameters may be f32 or f64; the optimizer state
/// (momentum buffer, Adam moments) is allocated at construction with each parameter's dtype and
/// device, so build the optimizer after moving the model (Module::to); step() refuses a parameter
/// that has since moved. The optimizer keeps Parameter pointers: the module must outlive it.
///
/// Every step() bumps amp::master_weights_version(), so low-precision weight copies made for
/// autocast (frugal/amp/autocast.hpp) are refreshed from the updated fp32 master.
///
/// Per-element arithmetic runs in the parameter's dtype (float for f32, double for f64), with the
/// step's scalars (bias corrections, 1 - lr * weight_decay) computed once in double on the host.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"
#include "frugal/nn/module.hpp"

namespace frugal::nn {

/// An optimizer's state as named tensors and scalars, for checkpoints. Tensor names are
/// "<parameter name>.<slot>" (slots: "momentum_buffer" for SGD, "exp_avg" / "exp_avg_sq" for
/// AdamW, as PyTorch names them); scalars hold "lr", "step" and the hyperparameters.
struct OptimizerState {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, double> scalars;
};

/// Base of the optimizers: the parameter list, the learning rate, the step counter and the
/// per-parameter state slots. Subclasses implement step().
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  /// Applies one update to every parameter from its current gradient and increments step_count().
  virtual void step(const ExecContext& ctx = {}) = 0;
  /// Short type name ("SGD", "AdamW"); checkpoints check it on load.
  virtual std::string type_name() const = 0;

  /// Sets the gradient of every parameter this optimizer updates to zero.
  void zero_grad(const ExecContext& ctx = {});
  /// The learning rate the next step() uses.
  double lr() const { return lr_; }
  /// Sets the learning rate (finite, >= 0), e.g. from an LR schedule before each step.
  void set_lr(double lr);
  /// Number of step() calls so far (restored by load_state).
  int64_t step_count() const { return step_; }
  /// The parameters this optimizer updates (the trainable ones it was given), in order.
  const std::vector<NamedParameter>& params() const { return params_; }

  /// The state (slots share storage with the optimizer: copy them if you keep them across steps).
  OptimizerState state() const;
  /// Throws InvalidArgument ("[<type>::load_state] ...") unless `s` has every slot tensor of every
  /// parameter with the right shape and dtype, no unknown tensor, and the scalars "lr" and "step".
  /// Changes nothing.
  void check_state(const OptimizerState& s) const;
  /// Restores a state saved by state() (after check_state; nothing changes when it throws). Slot
  /// tensors are copied into the optimizer's own (on the parameters' device); the learning rate,
  /// step count and hyperparameters are taken from the scalars, as torch's load_state_dict does.
  void load_state(const OptimizerState& s, const ExecContext& ctx = {});

 protected:
  /// Takes the trainable parameters of `params`, validates them (defined, f32 or f64, grad of the
  /// same shape, dtype and device) and allocates zeroed slots named `slot_names` for each.
  Optimizer(const std::vector<NamedParameter>& params, double lr,
            std::vector<std::string> slot_names, const char* op);

  /// The hyperparameters (besides "lr" and "step") as named scalars, and their restore.
  virtual std::map<std::string, double> hyperparameters() const = 0;
  virtual void set_hyperparameters(const std::map<std::string, double>& h) = 0;
  /// Throws InvalidArgument when the hyperparameters in `h` are not acceptable.
  virtual void check_hyperparameters(const std::map<std::string, double>& h,
                                     const std::string& op) const = 0;

  std::vector<NamedParameter> params_;
  std::vector<std::string> slot_names_;
  std::vector<std::vector<Tensor>> slots_;  ///< slots_[parameter][slot], parameter's shape
  double lr_ = 0;
  int64_t step_ = 0;
};

/// Options of SGD, with torch.optim.SGD's meaning and defaults (lr has no default there).
struct SgdOptions {
  double lr = 0.01;         ///< learning rate, >= 0
  double momentum = 0;      ///< momentum factor, >= 0 (0: plain SGD, no buffer used)
  double dampening = 0;     ///< dampening of the momentum (the gradient's weight is 1 - d)
  bool nesterov = false;    ///< Nesterov momentum (needs momentum > 0 and dampening == 0)
  double weight_decay = 0;  ///< L2 penalty added to the gradient: g + weight_decay * p, >= 0
};

/// Stochastic gradient descent exactly as torch.optim.SGD (maximize = false):
///   g <- grad + wd * p
///   if momentum != 0: b <- g on the first step, else b <- momentum * b + (1 - dampening) * g;
///                     g <- g + momentum * b if nesterov, else g <- b
///   p <- p - lr * g
/// Throws InvalidArgument ("[SGD] ...") for a negative or non-finite lr, momentum or weight
/// decay, or nesterov without momentum > 0 and dampening == 0.
class SGD : public Optimizer {
 public:
  SGD(const std::vector<NamedParameter>& params, const SgdOptions& options);
  void step(const ExecContext& ctx = {}) override;
  std::string type_name() const override { return "SGD"; }
  const SgdOptions& options() const { return options_; }

 protected:
  std::map<std::string, double> hyperparameters() const override;
  void set_hyperparameters(const std::map<std::string, double>& h) override;
  void check_hyperparameters(const std::map<std::string, double>& h,
                             const std::string& op) const override;

 private:
  SgdOptions options_;
};

/// Options of AdamW, with torch.optim.AdamW's meaning and defaults.
struct AdamWOptions {
  double lr = 1e-3;            ///< learning rate, >= 0
  double beta1 = 0.9;          ///< decay of the first moment, in [0, 1)
  double beta2 = 0.999;        ///< decay of the second moment, in [0, 1)
  double eps = 1e-8;           ///< added to the denominator, >= 0
  double weight_decay = 0.01;  ///< decoupled weight decay, >= 0
  /// Storage of exp_avg / exp_avg_sq: kF32, or kBF16 (f32 parameters, CPU or CUDA): each step
  /// reads the moments to fp32 registers, updates them and the parameter in fp32 and stores the
  /// moments rounded to bf16 (half the optimizer memory). Checkpoints keep the bf16 slots.
  DType moments_dtype = DType::kF32;
  /// bf16 moments: stochastic rounding (Philox, key seed, a fresh counter range per step; the
  /// same bits on CPU and CUDA, see docs/amp.md) instead of round-to-nearest-even, so small
  /// updates are not lost on average.
  bool stochastic_rounding = false;
  uint64_t seed = 0;  ///< Philox seed of the stochastic rounding
};

/// Adam with decoupled weight decay (Loshchilov & Hutter, ICLR 2019) exactly as torch.optim.AdamW
/// (amsgrad = false, maximize = false); with t the step number from 1:
///   p <- p * (1 - lr * wd)
///   m <- m + (1 - beta1) * (g - m)            (torch's lerp, = beta1 m + (1 - beta1) g)
///   v <- beta2 * v + (1 - beta2) * g * g
///   p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
/// Throws InvalidArgument ("[AdamW] ...") for lr, eps or weight decay negative or non-finite, or
/// a beta outside [0, 1), or moments_dtype other than f32 / bf16 (bf16 needs f32 parameters).
class AdamW : public Optimizer {
 public:
  AdamW(const std::vector<NamedParameter>& params, const AdamWOptions& options);
  void step(const ExecContext& ctx = {}) override;
  std::string type_name() const override { return "AdamW"; }
  const AdamWOptions& options() const { return options_; }

 protected:
  std::map<std::string, double> hyperparameters() const override;
  void set_hyperparameters(const std::map<std::string, double>& h) override;
  void check_hyperparameters(const std::map<std::string, double>& h,
                             const std::string& op) const override;

 private:
  AdamWOptions options_;
  uint64_t rounding_offset_ = 0;  // Philox counter of the next bf16 stochastic rounding
};

/// Clips gradients by their global L2 norm as torch.nn.utils.clip_grad_norm_(norm_type=2,
/// error_if_nonfinite=False): total = sqrt(sum over every gradient element of g^2), accumulated
/// in double in a fixed order (parameters in list order, elements in fixed chunks), then every
/// gradient is multiplied by min(1, max_norm / (total + 1e-6)). Returns `total` (before clipping).
/// A non-finite total is returned as is and, as in torch, the gradients are still scaled by
/// max_norm / (total + 1e-6): by 0 for +inf (so infinite elements become NaN) and by NaN for NaN.
/// Frozen parameters (trainable == false) are skipped. Reads the norm back to the host, so on
/// CUDA it synchronises ctx.stream. Gradients must be f32 or f64. Throws InvalidArgument
/// ("[clip_grad_norm] ...") for a negative or NaN max_norm or an undefined gradient.
double clip_grad_norm(const std::vector<Parameter*>& params, double max_norm,
                      const ExecContext& ctx = {});
/// Same, over named parameters (as Module::named_parameters() lists them).
double clip_grad_norm(const std::vector<NamedParameter>& params, double max_norm,
                      const ExecContext& ctx = {});

}  // namespace frugal::nn
