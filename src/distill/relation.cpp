// Relation losses: validation and device dispatch (include/frugal/distill/relation.hpp).
// Similarity-preserving KD composes core gemm (Gram matrices and the gradient's products) with
// the row step distill_sp_rows.
#include "frugal/distill/relation.hpp"

#include "cu_ops.hpp"
#include "distill/check.hpp"
#include "distill/distill_internal.hpp"
#include "frugal/core/ops.hpp"

namespace frugal::distill {
namespace {

/// Checks a (student, teacher) pair of embeddings (B, ...) and returns them as contiguous rows.
void check_pair(const char* op, ConstTensorView student, ConstTensorView teacher,
                int64_t min_batch) {
  detail::require_real(op, student, "student");
  detail::require_like(op, student, "student", teacher, "teacher");
  FRUGAL_REQUIRE(student.rank() >= 1 && teacher.rank() >= 1, op,
                 "student and teacher must have shape (B, ...), got ", student.shape, " and ",
                 teacher.shape);
  FRUGAL_REQUIRE(student.shape[0] == teacher.shape[0], op, "student has batch ", student.shape[0],
                 " but teacher has batch ", teacher.shape[0]);
  FRUGAL_REQUIRE(student.shape[0] >= min_batch, op, "needs a batch of at least ", min_batch,
                 ", got ", student.shape[0]);
  FRUGAL_REQUIRE(student.numel() > 0 && teacher.numel() > 0, op,
                 "student and teacher must not be empty, got ", student.shape, " and ",
                 teacher.shape);
}

/// x (B, ...) as contiguous rows (B, D).
ConstTensorView as_rows(ConstTensorView x, Tensor& holder, const ExecContext& ctx) {
  ConstTensorView c = detail::contiguous(x, holder, ctx);
  const int64_t b = x.shape[0];
  c.shape = Shape{b, x.numel() / b};
  c.strides = contiguous_strides(c.shape);
  return c;
}

}  // namespace

LossResult rkd_distance(ConstTensorView student, ConstTensorView teacher, const ExecContext& ctx) {
  const char* op = "rkd_distance";
  check_pair(op, student, teacher, 2);
  Tensor hs, ht;
  const ConstTensorView s = as_rows(student, hs, ctx);
  const ConstTensorView t = as_rows(teacher, ht, ctx);
  LossResult res;
  res.grad_student = Tensor::empty(student.shape, student.dtype, student.device, ctx);
  TensorView g = res.grad_student.view();
  g.shape = s.shape;
  g.strides = s.strides;
  double out[detail::kRkdOutSize] = {};
  switch (student.device.kind) {
    case DeviceKind::kCpu:
      cpu::distill_rkd_distance(s, t, g, out, ctx);
      break;
    case DeviceKind::kCuda:
      cu::distill_rkd_distance(s, t, g, out, ctx);
      break;
  }
  FRUGAL_REQUIRE(
      std::isfinite(out[detail::kRkdMuStudent]) && std::isfinite(out[detail::kRkdMuTeacher]), op,
      "NaN or Inf in the student or teacher embeddings");
  FRUGAL_REQUIRE(out[detail::kRkdMuStudent] > 0.0, op,
                 "every student embedding is the same point (mean distance 0)");
  FRUGAL_REQUIRE(out[detail::kRkdMuTeacher] > 0.0, op,
                 "every teacher embedding is the same point (mean distance 0)");
  res.loss = out[detail::kRkdLoss];
  detail::require_finite_loss(op, res.loss);
  return res;
}

LossResult rkd_angle(ConstTensorView student, ConstTensorView teacher, const ExecContext& ctx) {
  const char* op = "rkd_angle";
  check_pair(op, student, teacher, 3);
  Tensor hs, ht;
  const ConstTensorView s = as_rows(student, hs, ctx);
  const ConstTensorView t = as_rows(teacher, ht, ctx);
  LossResult res;
  res.grad_student = Tensor::empty(student.shape, student.dtype, student.device, ctx);
  TensorView g = res.grad_student.view();
  g.shape = s.shape;
  g.strides = s.strides;
  switch (student.device.kind) {
    case DeviceKind::kCpu:
      res.loss = cpu::distill_rkd_angle(s, t, g, ctx);
      break;
    case DeviceKind::kCuda:
      res.loss = cu::distill_rkd_angle(s, t, g, ctx);
      break;
  }
  detail::require_finite_loss(op, res.loss);
  return res;
}

LossResult sp_loss(ConstTensorView student, ConstTensorView teacher, const ExecContext& ctx) {
  const char* op = "sp_loss";
  check_pair(op, student, teacher, 1);
  Tensor hs, ht;
  const ConstTensorView s = as_rows(student, hs, ctx);
  const ConstTensorView t = as_rows(teacher, ht, ctx);
  const GemmOptions abt{.trans_a = false, .trans_b = true};
  const Tensor gs = gemm(s, s, abt, ctx);  // (B, B)
  const Tensor gt = gemm(t, t, abt, ctx);
  Tensor dg = Tensor::empty(gs.shape(), gs.dtype(), gs.device(), ctx);
  LossResult res;
  switch (student.device.kind) {
    case DeviceKind::kCpu:
      res.loss = cpu::distill_sp_rows(gs, gt, dg.view(), ctx);
      break;
    case DeviceKind::kCuda:
      res.loss = cu::distill_sp_rows(gs, gt, dg.view(), ctx);
      break;
  }
  detail::require_finite_loss(op, res.loss);
  // G = E E^T: dL/dE = (dG + dG^T) E.
  res.grad_student = Tensor::empty(s.shape, student.dtype, student.device, ctx);
  gemm_into(dg, s, res.grad_student.view(), {}, ctx);
  gemm_into(dg, s, res.grad_student.view(), {.trans_a = true, .beta = 1.0}, ctx);
  res.grad_student = res.grad_student.reshape(student.shape);
  return res;
}

}  // namespace frugal::distill
