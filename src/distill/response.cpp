// Response KD: validation, device dispatch and the top-k helper
// (include/frugal/distill/response.hpp).
#include "frugal/distill/response.hpp"

#include <cmath>
#include <vector>

#include "cu_ops.hpp"
#include "distill/check.hpp"
#include "distill/distill_internal.hpp"
#include "frugal/core/ops.hpp"

namespace frugal::distill {
namespace {

/// A caller's gradient buffer: contiguous, with the student's shape, dtype and device.
void require_grad_buffer(const char* op, TensorView grad_out, ConstTensorView student) {
  FRUGAL_REQUIRE(grad_out.shape == student.shape && grad_out.dtype == student.dtype &&
                     grad_out.device == student.device && grad_out.is_contiguous(),
                 op, "grad must be a contiguous ", dtype_name(student.dtype), " tensor of shape ",
                 student.shape, " on ", student.device.str(), ", got ", dtype_name(grad_out.dtype),
                 " ", grad_out.shape, " on ", grad_out.device.str());
}

/// The shared entry: dense teacher when indices has no data, top-k otherwise; labels optional.
/// `grad_out` with data: the caller's gradient buffer; without: a new tensor in the result.
/// `lse` with data: the uniform-tail top-k teacher (row log-sum-exps at `temperature`).
KdResult kd_real(const char* op, ConstTensorView student, ConstTensorView teacher,
                 ConstTensorView indices, ConstTensorView labels, double temperature, double alpha,
                 const ExecContext& ctx, TensorView grad_out = {}, ConstTensorView lse = {}) {
  const bool dense = indices.data == nullptr && indices.rank() == 0;
  const bool has_labels = labels.rank() != 0 || labels.data != nullptr;
  FRUGAL_REQUIRE(std::isfinite(temperature) && temperature > 0.0, op,
                 "temperature must be finite and > 0, got ", temperature);
  FRUGAL_REQUIRE(alpha >= 0.0 && alpha <= 1.0, op, "alpha must be in [0, 1], got ", alpha);
  FRUGAL_REQUIRE(student.data != nullptr || student.numel() == 0, op, "student is undefined");
  FRUGAL_REQUIRE(student.dtype == DType::kF32 || student.dtype == DType::kF64, op,
                 "student has dtype ", dtype_name(student.dtype),
                 "; expected f32, f64, f16 or bf16");
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
    if (lse.data != nullptr || lse.rank() != 0) {
      FRUGAL_REQUIRE(lse.dtype == student.dtype, op, "teacher lse has dtype ",
                     dtype_name(lse.dtype), " but student has dtype ", dtype_name(student.dtype));
      FRUGAL_REQUIRE(lse.rank() == 1 && lse.shape[0] == n, op, "teacher lse has shape ", lse.shape,
                     "; expected (", n, ")");
      FRUGAL_REQUIRE(lse.device == student.device, op, "teacher lse is on ", lse.device.str(),
                     " but student is on ", student.device.str());
    }
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
    require_grad_buffer(op, grad_out, student);
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
  Tensor hz;
  const ConstTensorView lz =
      lse.data != nullptr ? detail::contiguous(lse, hz, ctx) : ConstTensorView{};
  const double inv_n = 1.0 / static_cast<double>(n);
  const double kd_scale = alpha * temperature * inv_n;
  const double ce_scale = has_labels ? (1.0 - alpha) * inv_n : 0.0;
  double out[detail::kKdOutSize] = {};
  switch (student.device.kind) {
    case DeviceKind::kCpu:
      cpu::distill_kd_loss(s, t, idx, lz, lab, temperature, kd_scale, ce_scale, grad, out, ctx);
      break;
    case DeviceKind::kCuda:
      cu::distill_kd_loss(s, t, idx, lz, lab, temperature, kd_scale, ce_scale, grad, out, ctx);
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
        ::frugal::detail::fail(
            ErrorCode::kInvalidArgument, op, "NaN or Inf in the student or teacher logits",
            lz.data != nullptr ? " (or the teacher lse)" : "", " of row ", bad_row);
    }
  }
  res.kd = temperature * temperature * out[detail::kKdSum] * inv_n;
  res.ce = has_labels ? out[detail::kCeSum] * inv_n : 0.0;
  res.loss = has_labels ? alpha * res.kd + (1.0 - alpha) * res.ce : res.kd;
  return res;
}

/// f16 / bf16 logits: converted to f32 (teacher and lse too), the f32 kernel, and the gradient
/// converted back to the student's dtype. f32 and f64 go straight to kd_real.
KdResult kd_impl(const char* op, ConstTensorView student, ConstTensorView teacher,
                 ConstTensorView indices, ConstTensorView labels, double temperature, double alpha,
                 const ExecContext& ctx, TensorView grad_out = {}, ConstTensorView lse = {}) {
  const DType dt = student.dtype;
  if (dt != DType::kF16 && dt != DType::kBF16) {
    return kd_real(op, student, teacher, indices, labels, temperature, alpha, ctx, grad_out, lse);
  }
  FRUGAL_REQUIRE(student.data != nullptr || student.numel() == 0, op, "student is undefined");
  FRUGAL_REQUIRE(teacher.data != nullptr || teacher.numel() == 0, op, "teacher is undefined");
  detail::require_like(op, student, "student", teacher, "teacher");
  const bool has_lse = lse.data != nullptr || lse.rank() != 0;
  if (has_lse) detail::require_like(op, student, "student", lse, "teacher lse");
  const bool has_grad = grad_out.data != nullptr || grad_out.rank() != 0;
  if (has_grad) require_grad_buffer(op, grad_out, student);
  auto widen = [&](ConstTensorView v) {
    Tensor w = Tensor::empty(v.shape, DType::kF32, v.device, ctx);
    ::frugal::detail::copy(v, w.view(), ctx);
    return w;
  };
  const Tensor s32 = widen(student);
  const Tensor t32 = widen(teacher);
  const Tensor z32 = has_lse ? widen(lse) : Tensor();
  KdResult r = kd_real(op, s32.cview(), t32.cview(), indices, labels, temperature, alpha, ctx, {},
                       has_lse ? z32.cview() : ConstTensorView{});
  if (has_grad) {
    ::frugal::detail::copy(r.grad_student.cview(), grad_out, ctx);
    r.grad_student = Tensor();
  } else {
    r.grad_student = r.grad_student.to(dt, ctx);
  }
  return r;
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
  TopKLogits r;
  r.values = tk.values;
  r.indices = tk.indices;
  return r;
}

namespace {

/// The checks of a top-k teacher's tail fields; returns the lse view to pass (none for
/// kRenormalize).
ConstTensorView topk_lse(const char* op, const TopKLogits& teacher, double temperature) {
  FRUGAL_REQUIRE(teacher.values.defined() && teacher.indices.defined(), op,
                 "teacher values and indices must be defined");
  if (teacher.tail == TopKTail::kRenormalize) return {};
  FRUGAL_REQUIRE(teacher.lse.defined(), op,
                 "a uniform-tail top-k teacher needs its lse (topk_teacher with a temperature)");
  FRUGAL_REQUIRE(teacher.lse_temperature == temperature, op,
                 "the teacher's lse was computed at T = ", teacher.lse_temperature,
                 " but the loss runs at T = ", temperature,
                 " (a uniform-tail top-k teacher is tied to the temperature of its lse)");
  return teacher.lse.cview();
}

}  // namespace

TopKLogits topk_teacher(ConstTensorView teacher, int64_t k, double temperature,
                        const ExecContext& ctx) {
  const char* op = "topk_teacher";
  FRUGAL_REQUIRE(std::isfinite(temperature) && temperature > 0.0, op,
                 "temperature must be finite and > 0, got ", temperature);
  TopKLogits r = topk_teacher(teacher, k, ctx);
  const int64_t n = teacher.shape[0];
  Tensor ht;
  const ConstTensorView t = detail::contiguous(teacher, ht, ctx);
  Tensor lse = Tensor::empty({n}, DType::kF64, teacher.device, ctx);  // (N)
  if (n > 0) {
    switch (teacher.device.kind) {
      case DeviceKind::kCpu:
        cpu::distill_row_lse(t, temperature, lse.view(), ctx);
        break;
      case DeviceKind::kCuda:
        cu::distill_row_lse(t, temperature, lse.view(), ctx);
        break;
    }
    // abs_max is NaN or Inf exactly when some row's lse is (a NaN or Inf logit).
    if (!std::isfinite(abs_max(lse, ctx).to(Device::cpu(), ctx).to_vector<double>()[0])) {
      const std::vector<double> h = lse.to(Device::cpu(), ctx).to_vector<double>();
      int64_t bad = 0;
      while (bad < n && std::isfinite(h[static_cast<std::size_t>(bad)])) ++bad;
      ::frugal::detail::fail(ErrorCode::kInvalidArgument, op,
                             "NaN or Inf in the teacher logits of row ", bad);
    }
  }
  r.tail = TopKTail::kUniform;
  r.lse = teacher.dtype == DType::kF64 ? lse : lse.to(teacher.dtype, ctx);
  r.lse_temperature = temperature;
  return r;
}

KdResult kd_loss_topk(ConstTensorView student, const TopKLogits& teacher, double temperature,
                      const ExecContext& ctx) {
  const char* op = "kd_loss_topk";
  const ConstTensorView lse = topk_lse(op, teacher, temperature);
  return kd_impl(op, student, teacher.values, teacher.indices, {}, temperature, 1.0, ctx, {}, lse);
}

KdResult kd_loss_topk(ConstTensorView student, const TopKLogits& teacher, ConstTensorView labels,
                      double temperature, double alpha, const ExecContext& ctx) {
  const char* op = "kd_loss_topk";
  const ConstTensorView lse = topk_lse(op, teacher, temperature);
  FRUGAL_REQUIRE(labels.data != nullptr || labels.rank() != 0, op, "labels are undefined");
  return kd_impl(op, student, teacher.values, teacher.indices, labels, temperature, alpha, ctx, {},
                 lse);
}

}  // namespace frugal::distill
