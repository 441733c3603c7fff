// Softmax cross-entropy and MSE: validation, device dispatch and the loss objects
// (include/frugal/nn/loss.hpp).
#include "frugal/nn/loss.hpp"

#include <cmath>
#include <vector>

#include "cu_ops.hpp"
#include "frugal/amp/autocast.hpp"
#include "nn/basic_ops.hpp"

namespace frugal::nn {

SoftmaxCrossEntropy::SoftmaxCrossEntropy(double label_smoothing, int64_t ignore_index)
    : label_smoothing_(label_smoothing), ignore_index_(ignore_index) {
  FRUGAL_REQUIRE(label_smoothing >= 0.0 && label_smoothing <= 1.0, "SoftmaxCrossEntropy",
                 "label_smoothing must be in [0, 1], got ", label_smoothing);
}

float SoftmaxCrossEntropy::forward(const Tensor& logits, const Tensor& targets) {
  const char* op = "SoftmaxCrossEntropy";
  grad_ = Tensor();
  FRUGAL_REQUIRE(logits.defined() && targets.defined(), op, "logits and targets must be defined");
  detail::require_float(op, logits, "logits");
  FRUGAL_REQUIRE(logits.rank() == 2, op, "logits must have shape (N, C), got ", logits.shape());
  FRUGAL_REQUIRE(targets.dtype() == DType::kI64, op, "targets has dtype ",
                 dtype_name(targets.dtype()), "; expected i64");
  FRUGAL_REQUIRE(targets.rank() == 1 && targets.dim(0) == logits.dim(0), op, "targets has shape ",
                 targets.shape(), "; expected (", logits.dim(0), ")");
  FRUGAL_REQUIRE(targets.device() == logits.device(), op, "targets is on ", targets.device().str(),
                 " but logits is on ", logits.device().str());
  const int64_t n = logits.dim(0);
  const int64_t c = logits.dim(1);
  FRUGAL_REQUIRE(c >= 1, op, "logits need at least one class, got shape ", logits.shape());
  Tensor grad = Tensor::empty(logits.shape(), logits.dtype(), logits.device(), ctx_);
  if (n == 0) {
    num_valid_ = 0;
    grad_ = grad;
    return 0.f;
  }
  const Tensor lc = logits.contiguous(ctx_);
  const Tensor tc = targets.contiguous(ctx_);
  double loss = 0.0;
  int64_t num_valid = 0;
  switch (logits.device().kind) {
    case DeviceKind::kCpu: {
      const int64_t* t = tc.data<int64_t>();
      for (int64_t r = 0; r < n; ++r) {
        if (t[r] == ignore_index_) continue;
        FRUGAL_REQUIRE(t[r] >= 0 && t[r] < c, op, "target ", t[r], " of row ", r,
                       " is out of range [0, ", c, ") and not ignore_index ", ignore_index_);
        ++num_valid;
      }
      loss = cpu::softmax_cross_entropy(lc, tc, label_smoothing_, ignore_index_, num_valid, grad,
                                        ctx_);
      break;
    }
    case DeviceKind::kCuda: {
      // The kernels validate the targets on the device and report the first bad row, so the
      // targets never make a round trip to the host.
      int64_t bad_row = -1;
      loss = cu::softmax_cross_entropy(lc, tc, label_smoothing_, ignore_index_, grad, &num_valid,
                                       &bad_row, ctx_);
      if (bad_row >= 0) {
        const int64_t bad = tc.slice(0, bad_row, bad_row + 1).to_vector<int64_t>()[0];
        ::frugal::detail::fail(ErrorCode::kInvalidArgument, op, "target ", bad, " of row ", bad_row,
                               " is out of range [0, ", c, ") and not ignore_index ",
                               ignore_index_);
      }
      break;
    }
  }
  num_valid_ = num_valid;
  grad_ = grad;
  return static_cast<float>(loss);
}

Tensor SoftmaxCrossEntropy::backward() {
  FRUGAL_REQUIRE(grad_.defined(), "SoftmaxCrossEntropy::backward",
                 "called without a successful forward");
  return grad_;
}

float MSELoss::forward(const Tensor& pred_in, const Tensor& target_in) {
  const char* op = "MSELoss";
  grad_ = Tensor();
  FRUGAL_REQUIRE(pred_in.defined() && target_in.defined(), op, "pred and target must be defined");
  // A loss is an f32 op under autocast (low-precision predictions are compared in f32).
  const Tensor pred = amp::autocast_fp32(pred_in, ctx_);
  const Tensor target = amp::autocast_fp32(target_in, ctx_);
  detail::require_float(op, pred, "pred");
  detail::require_same(op, pred, "pred", target, "target");
  FRUGAL_REQUIRE(pred.numel() > 0, op, "pred is empty (shape ", pred.shape(), ")");
  const Tensor pc = pred.contiguous(ctx_);
  const Tensor tc = target.contiguous(ctx_);
  Tensor grad = Tensor::empty(pred.shape(), pred.dtype(), pred.device(), ctx_);
  double loss = 0.0;
  switch (pred.device().kind) {
    case DeviceKind::kCpu:
      loss = cpu::mse_loss(pc, tc, grad, ctx_);
      break;
    case DeviceKind::kCuda:
      loss = cu::mse_loss(pc, tc, grad, ctx_);
      break;
  }
  grad_ = grad;
  return static_cast<float>(loss);
}

Tensor MSELoss::backward() {
  FRUGAL_REQUIRE(grad_.defined(), "MSELoss::backward", "called without a successful forward");
  return grad_;
}

}  // namespace frugal::nn
