#pragma once
/// Batch normalisation over the channels of NCHW tensors (Ioffe & Szegedy 2015; PyTorch's
/// nn.BatchNorm2d semantics): y = (x - mean) / sqrt(var + eps) * gamma + beta per channel.
/// Training uses the batch statistics (biased variance) and updates the running statistics
/// (running = (1 - momentum) running + momentum batch, with the unbiased variance); evaluation
/// uses the running statistics. Statistics accumulate in double in a fixed order (CPU: one task
/// per channel; CUDA: one block per channel), so results do not depend on the thread count and
/// repeat run to run. f32 and f64 on both devices.
#include <cstdint>

#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"
#include "frugal/nn/module.hpp"

namespace frugal::nn {

/// Output of batch_norm2d and the per-channel statistics it used (what backward needs).
struct BatchNorm2dResult {
  Tensor output;  ///< (N, C, H, W)
  Tensor mean;    ///< (C) batch mean (training) or running mean (evaluation)
  Tensor invstd;  ///< (C) 1 / sqrt(var + eps) of the batch (biased) or running variance
};

/// Normalises x (N, C, H, W). weight / bias (C) may be empty views ({}) for gamma = 1, beta = 0.
/// training: batch statistics (needs N H W > 1); running_mean / running_var (C), if not empty,
/// are updated in place. Evaluation: running_mean and running_var are required and read.
/// Every tensor has x's dtype (f32 or f64) and device.
BatchNorm2dResult batch_norm2d(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                               TensorView running_mean, TensorView running_var, bool training,
                               double momentum = 0.1, double eps = 1e-5,
                               const ExecContext& ctx = {});

/// dL/dx of batch_norm2d from grad_out, the forward's input x and its result's mean / invstd.
/// training = true differentiates through the batch statistics (the closed form
/// dx = gamma invstd / M (M dy - sum dy - xhat sum(dy xhat)), M = N H W); false treats them as
/// constants (evaluation). grad_weight / grad_bias (C), if not empty, are accumulated (+=):
/// sum(dy xhat) and sum(dy).
Tensor batch_norm2d_backward(ConstTensorView grad_out, ConstTensorView x, ConstTensorView weight,
                             ConstTensorView mean, ConstTensorView invstd, bool training,
                             TensorView grad_weight, TensorView grad_bias,
                             const ExecContext& ctx = {});

/// nn.BatchNorm2d: parameters weight (ones) and bias (zeros) when affine, buffers running_mean
/// (zeros) and running_var (ones). forward keeps its input and statistics for backward, which
/// follows the mode of that forward (training or evaluation).
class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t num_features, double eps = 1e-5, double momentum = 0.1,
                       bool affine = true, DType dtype = DType::kF32);

  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& grad_out) override;
  std::string type_name() const override { return "BatchNorm2d"; }

  /// nullptr without affine.
  Parameter* weight() { return weight_; }
  Parameter* bias() { return bias_; }
  Tensor& running_mean() { return *running_mean_; }
  Tensor& running_var() { return *running_var_; }
  int64_t num_features() const { return num_features_; }
  double eps() const { return eps_; }
  double momentum() const { return momentum_; }

 private:
  int64_t num_features_;
  double eps_;
  double momentum_;
  Parameter* weight_ = nullptr;
  Parameter* bias_ = nullptr;
  Tensor* running_mean_ = nullptr;
  Tensor* running_var_ = nullptr;
  // Saved by forward for backward.
  Tensor input_;
  Tensor mean_;
  Tensor invstd_;
  bool saved_training_ = true;
};

}  // namespace frugal::nn
