// Feature losses: validation and device dispatch (include/frugal/distill/feature.hpp).
#include "frugal/distill/feature.hpp"

#include "cu_ops.hpp"
#include "distill/check.hpp"
#include "distill/distill_internal.hpp"

namespace frugal::distill {
namespace {

/// Common checks of a (student, teacher) pair with identical shapes.
void check_same(const char* op, ConstTensorView student, ConstTensorView teacher) {
  detail::require_real(op, student, "student");
  detail::require_like(op, student, "student", teacher, "teacher");
  FRUGAL_REQUIRE(teacher.shape == student.shape, op, "teacher has shape ", teacher.shape,
                 " but student has shape ", student.shape);
  FRUGAL_REQUIRE(student.numel() > 0, op, "student is empty (shape ", student.shape, ")");
}

void check_conv(const char* op, ConstTensorView x, const char* name) {
  FRUGAL_REQUIRE(x.rank() == 4, op, name, " must have shape (N, C, H, W), got ", x.shape);
  FRUGAL_REQUIRE(x.numel() > 0, op, name, " is empty (shape ", x.shape, ")");
}

}  // namespace

LossResult feature_mse(ConstTensorView student, ConstTensorView teacher, const ExecContext& ctx) {
  const char* op = "feature_mse";
  check_same(op, student, teacher);
  Tensor hs, ht;
  const ConstTensorView s = detail::contiguous(student, hs, ctx);
  const ConstTensorView t = detail::contiguous(teacher, ht, ctx);
  LossResult res;
  res.grad_student = Tensor::empty(student.shape, student.dtype, student.device, ctx);
  switch (student.device.kind) {
    case DeviceKind::kCpu:
      res.loss = cpu::distill_mse(s, t, res.grad_student.view(), ctx);
      break;
    case DeviceKind::kCuda:
      res.loss = cu::distill_mse(s, t, res.grad_student.view(), ctx);
      break;
  }
  detail::require_finite_loss(op, res.loss);
  return res;
}

LossResult feature_cosine(ConstTensorView student, ConstTensorView teacher,
                          const ExecContext& ctx) {
  const char* op = "feature_cosine";
  check_same(op, student, teacher);
  Tensor hs, ht;
  const ConstTensorView s = detail::contiguous(student, hs, ctx);
  const ConstTensorView t = detail::contiguous(teacher, ht, ctx);
  LossResult res;
  res.grad_student = Tensor::empty(student.shape, student.dtype, student.device, ctx);
  switch (student.device.kind) {
    case DeviceKind::kCpu:
      res.loss = cpu::distill_cosine(s, t, res.grad_student.view(), ctx);
      break;
    case DeviceKind::kCuda:
      res.loss = cu::distill_cosine(s, t, res.grad_student.view(), ctx);
      break;
  }
  detail::require_finite_loss(op, res.loss);
  return res;
}

Tensor attention_map(ConstTensorView features, const ExecContext& ctx) {
  const char* op = "attention_map";
  detail::require_real(op, features, "features");
  check_conv(op, features, "features");
  Tensor hf;
  const ConstTensorView f = detail::contiguous(features, hf, ctx);
  Tensor map = Tensor::empty({features.shape[0], features.shape[2] * features.shape[3]},
                             features.dtype, features.device, ctx);
  switch (features.device.kind) {
    case DeviceKind::kCpu:
      cpu::distill_attention_map(f, map.view(), ctx);
      break;
    case DeviceKind::kCuda:
      cu::distill_attention_map(f, map.view(), ctx);
      break;
  }
  return map;
}

LossResult attention_transfer(ConstTensorView student, ConstTensorView teacher,
                              const ExecContext& ctx) {
  const char* op = "attention_transfer";
  detail::require_real(op, student, "student");
  detail::require_like(op, student, "student", teacher, "teacher");
  check_conv(op, student, "student");
  check_conv(op, teacher, "teacher");
  FRUGAL_REQUIRE(student.shape[0] == teacher.shape[0] && student.shape[2] == teacher.shape[2] &&
                     student.shape[3] == teacher.shape[3],
                 op, "student ", student.shape, " and teacher ", teacher.shape,
                 " must agree in N, H and W");
  Tensor hs, ht;
  const ConstTensorView s = detail::contiguous(student, hs, ctx);
  const ConstTensorView t = detail::contiguous(teacher, ht, ctx);
  LossResult res;
  res.grad_student = Tensor::empty(student.shape, student.dtype, student.device, ctx);
  switch (student.device.kind) {
    case DeviceKind::kCpu:
      res.loss = cpu::distill_attention_transfer(s, t, res.grad_student.view(), ctx);
      break;
    case DeviceKind::kCuda:
      res.loss = cu::distill_attention_transfer(s, t, res.grad_student.view(), ctx);
      break;
  }
  detail::require_finite_loss(op, res.loss);
  return res;
}

}  // namespace frugal::distill
