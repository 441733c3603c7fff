#pragma once
/// Losses: softmax cross-entropy over class logits and mean squared error. They are not Modules
/// (they have no parameters and end the graph): forward returns the scalar loss as a float on the
/// host (which waits for a CUDA stream to finish the loss) and keeps the gradient; backward returns
/// dL/d(input) of the last forward.
///
/// Loss sums are deterministic: the CPU adds per-row (or per-chunk) values in double in index
/// order, so the loss does not depend on the thread count; CUDA reduces in double with a fixed
/// grid, so it is the same run to run (but not bit-identical to the CPU).
#include <cstdint>

#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"

namespace frugal::nn {

/// torch.nn.CrossEntropyLoss(reduction = "mean", label_smoothing = eps, ignore_index) on logits
/// (N, C) and class indices (N) (i64): with p = softmax(logits[r]) and t = targets[r],
///   loss_r = (1 - eps) * (-log p_t) + eps * mean_c(-log p_c),
///   loss   = sum of loss_r over the rows whose target is not ignore_index, divided by their count,
///   dL/dlogits[r, c] = (p_c - (1 - eps) [c == t] - eps / C) / count   (0 on ignored rows).
/// One fused pass per row (online max and log-sum-exp, then the gradient), stable for logits of
/// any finite size (1e4 included). When every row is ignored the loss and the gradient are 0
/// (PyTorch gives NaN). NaN logits give a NaN loss. Logits f32 or f64 (f16 / bf16 compute in
/// float); CUDA supports the same dtypes.
class SoftmaxCrossEntropy {
 public:
  /// Throws InvalidArgument "[SoftmaxCrossEntropy] ..." unless 0 <= label_smoothing <= 1.
  explicit SoftmaxCrossEntropy(double label_smoothing = 0.0, int64_t ignore_index = -100);

  /// Mean loss of logits (N, C) against targets (N), i64 on the logits' device. Throws
  /// InvalidArgument for a target outside [0, C) other than ignore_index, or bad shapes / dtypes.
  float forward(const Tensor& logits, const Tensor& targets);
  /// dL/dlogits (N, C) of the last forward, logits' dtype and device.
  Tensor backward();

  double label_smoothing() const { return label_smoothing_; }
  int64_t ignore_index() const { return ignore_index_; }
  /// Rows counted by the last forward (targets not equal to ignore_index).
  int64_t num_valid() const { return num_valid_; }
  /// Stream and CPU thread count.
  void set_context(const ExecContext& ctx) { ctx_ = ctx; }
  const ExecContext& context() const { return ctx_; }

 private:
  double label_smoothing_;
  int64_t ignore_index_;
  int64_t num_valid_ = 0;
  ExecContext ctx_;
  Tensor grad_;
};

/// torch.nn.MSELoss(reduction = "mean"): mean over every element of (pred - target)^2, with
/// dL/dpred = 2 (pred - target) / n. pred and target: same shape, floating dtype and device.
class MSELoss {
 public:
  MSELoss() = default;
  /// Mean squared error; throws InvalidArgument "[MSELoss] ..." on mismatched or empty inputs.
  float forward(const Tensor& pred, const Tensor& target);
  /// dL/dpred of the last forward (pred's shape, dtype and device).
  Tensor backward();
  /// Stream and CPU thread count.
  void set_context(const ExecContext& ctx) { ctx_ = ctx; }
  const ExecContext& context() const { return ctx_; }

 private:
  ExecContext ctx_;
  Tensor grad_;
};

}  // namespace frugal::nn
