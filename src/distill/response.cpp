// Response KD: validation, device dispatch and the top-k helper
// (include/frugal/distill/response.hpp).
#include "frugal/distill/response.hpp"

#include <cmath>

#include "cu_ops.hpp"
#include "distill/check.hpp"
#include "distill/distill_internal.hpp"
#include "frugal/core/ops.hpp"

namespace frugal::distill {
namespace {

/// The shared entry: dense teacher when indices has no data, top-k otherwise; labels optional.
/// `grad_out` with data: the caller's gradient buffer; without: a new tensor in the result.
KdResult kd_impl(const char* op, ConstTensorView student, ConstTensorView teacher,
                 ConstTensorView indices, ConstTensorView labels, double temperature, double alpha,
                 const ExecContext& ctx, TensorView grad_out = {}) {
  const bool dense = indices.data == nullptr && indices.rank() == 0;
  const bool has_labels = labels.rank() != 0 || labels.data != nullptr;
  FRUGAL_REQUIRE(std::isfinite(temperature) && temperature > 0.0, op,
                 "temperature must be finite and > 0, got ", temperature);
  FRUGAL_REQUIRE(alpha >= 0.0 && alpha <= 1.0, op, "alpha must be in [0, 1], got ", alpha);
  detail::require_real(op, student, "student");
  FRUGAL_REQUIRE(student.rank() == 2, op, "student must have shape (N, C), got ", student.shape);
  detail::require_like(op, student, "student", teacher, "teacher");
  const int64_t n = student.shape[0];
  const int64_t c = student.shape[1];
  FRUGAL_REQUIRE(c >= 1, op, "student needs at least one class, got shape ", student.shape);
  if (dense) {
    FRUGAL_REQUIRE(teacher.shape == student.shape, op, "teacher has shape ", teacher.shape,
                   " but student has shape ", student.shape);
  } else {
    FRUGAL_REQUIRE(teacher.rank() == 2 && teacher.shape[0] == n && teacher.shape[1] >= 1 &&
                       teacher.shape[1] <= c,
                   op, "teacher values have shape ", teacher.shape, "; expected (", n,
                   ", k) with 1 <= k <= ", c);
    FRUGAL_REQUIRE(indices.dtype == DType::kI64, op, "teacher indices have dtype ",
                   dtype_name(indices.dtype), "; expected i64");
    FRUGAL_REQUIRE(indices.shape == teacher.shape, op, "teacher indices have shape ", indices.shape,
                   " but the values have shape ", teacher.shape);
    FRUGAL_REQUIRE(indices.device == student.device, op, "teacher indices are on ",
                   indices.device.str(), " but student is on ", student.device.str());
  }
  if (has_labels) {
    FRUGAL_REQUIRE(labels.dtype == DType::kI64, op, "labels have dtype ", dtype_name(labels.dtype),
                   "; expected i64");
    FRUGAL_REQUIRE(labels.rank() == 1 && labels.shape[0] == n, op, "labels have shape ",
                   labels.shape, "; expected (", n, ")");
    FRUGAL_REQUIRE(labels.device == student.device, op, "labels are on ", labels.device.str(),
                   " but student is on ", student.device.str());
  }
  KdResult res;
  TensorView grad = grad_out;
  if (grad_out.data != nullptr || grad_out.rank() != 0) {
    FRUGAL_REQUIRE(grad_out.shape == student.shape && grad_out.dtype == student.dtype &&
                       grad_out.device == student.device && grad_out.is_contiguous(),
                   op, "grad must be a contiguous ", dtype_name(student.dtype), " tensor of shape ",
                   student.shape, " on ", student.device.str(), ", got ",
                   dtype_name(grad_out.dtype), " ", grad_out.shape, " on ", grad_out.device.str());
  } else {
    res.grad_student = Tensor::empty(student.shape, student.dtype, student.device, ctx);
    grad = res.grad_student.view();
  }
  if (n == 0) return res;
  Tensor hs, ht, hi, hl;
  const ConstTensorView s = detail::contiguous(student, hs, ctx);
  const ConstTensorView t = detail::contiguous(teacher, ht, ctx);
  const ConstTensorView idx = dense ? ConstTensorView{} : detail::contiguous(indices, hi, ctx);
  const ConstTensorView lab = has_labels ? detail::contiguous(labels, hl, ctx) : ConstTensorView{};
  const double inv_n = 1.0 / static_cast<double>(n);
  const double kd_scale = alpha * temperature * inv_n;
  const double ce_scale = has_labels ? (1.0 - alpha) * inv_n : 0.0;
  double out[detail::kKdOutSize] = {};
  switch (student.device.kind) {
    case DeviceKind::kCpu:
      cpu::distill_kd_loss(s, t, idx, lab, temperature, kd_scale, ce_scale, grad, out, ctx);
      break;
    case DeviceKind::kCuda:
      cu::distill_kd_loss(s, t, idx, lab, temperature, kd_scale, ce_scale, grad, out, ctx);
      break;
  }
  const auto bad_row = static_cast<int64_t>(out[detail::kBadRow]);
  if (bad_row >= 0) {
    switch (static_cast<int>(out[detail::kBadKind])) {
      case detail::kKdBadLabel: {
        const Tensor row =
            Tensor::wrap(const_cast<void*>(lab.data), lab.shape, DType::kI64, lab.device)
                .slice(0, bad_row, bad_row + 1);
        ::frugal::detail::fail(ErrorCode::kInvalidArgument, op, "label ",
                               row.to_vector<int64_t>()[0], " of row ", bad_row,
                               " is out of range [0, ", c, ")");
      }
      case detail::kKdBadIndex:
        ::frugal::detail::fail(ErrorCode::kInvalidArgument, op, "teacher index out of range [0, ",
                               c, ") in row ", bad_row);
      default:
        ::frugal::detail::fail(ErrorCode::kInvalidArgument, op,
                               "NaN or Inf in the student or teacher logits of row ", bad_row);
    }
  }
  res.kd = temperature * temperature * out[detail::kKdSum] * inv_n;
  res.ce = has_labels ? out[detail::kCeSum] * inv_n : 0.0;
  res.loss = has_labels ? alpha * res.kd + (1.0 - alpha) * res.ce : res.kd;
  return res;
}

}  // namespace

KdResult kd_loss(ConstTensorView student, ConstTensorView teacher, double temperature,
                 const ExecContext& ctx) {
  return kd_impl("kd_loss", student, teacher, {}, {}, temperature, 1.0, ctx);
}

KdResult kd_loss(ConstTensorView student, ConstTensorView teacher, ConstTensorView labels,
                 double temperature, double alpha, const ExecContext& ctx) {
  FRUGAL_REQUIRE(labels.data != nullptr || labels.rank() != 0, "kd_loss", "labels are undefined");
  return kd_impl("kd_loss", student, teacher, {}, labels, temperature, alpha, ctx);
}

KdResult kd_loss_into(ConstTensorView student, ConstTensorView teacher, ConstTensorView labels,
                      double temperature, double alpha, TensorView grad, const ExecContext& ctx) {
  FRUGAL_REQUIRE(grad.data != nullptr || grad.rank() != 0, "kd_loss_into", "grad is undefined");
  return kd_impl("kd_loss_into", student, teacher, {}, labels, temperature, alpha, ctx, grad);
}

TopKLogits topk_teacher(ConstTensorView teacher, int64_t k, const ExecContext& ctx) {
  const char* op = "topk_teacher";
  detail::require_real(op, teacher, "teacher");
  FRUGAL_REQUIRE(teacher.rank() == 2, op, "teacher must have shape (N, C), got ", teacher.shape);
  FRUGAL_REQUIRE(k >= 1 && k <= teacher.shape[1], op, "k = ", k, " must be in [1, ",
                 teacher.shape[1], "]");
  TopK tk = topk(teacher, k, -1, true, ctx);
  return {tk.values, tk.indices};
}

KdResult kd_loss_topk(ConstTensorView student, const TopKLogits& teacher, double temperature,
                      const ExecContext& ctx) {
  const char* op = "kd_loss_topk";
  FRUGAL_REQUIRE(teacher.values.defined() && teacher.indices.defined(), op,
                 "teacher values and indices must be defined");
  return kd_impl(op, student, teacher.values, teacher.indices, {}, temperature, 1.0, ctx);
}

KdResult kd_loss_topk(ConstTensorView student, const TopKLogits& teacher, ConstTensorView labels,
                      double temperature, double alpha, const ExecContext& ctx) {
  const char* op = "kd_loss_topk";
  FRUGAL_REQUIRE(teacher.values.defined() && teacher.indices.defined(), op,
                 "teacher values and indices must be defined");
  FRUGAL_REQUIRE(labels.data != nullptr || labels.rank() != 0, op, "labels are undefined");
  return kd_impl(op, student, teacher.values, teacher.indices, labels, temperature, alpha, ctx);
}

}  // namespace frugal::distill
