#pragma once
// Backend contract of the distillation losses (include/frugal/distill/*.hpp). Internal header,
// usable from host code and from .cu files.
//
// The dispatch files src/distill/{response,feature,relation}.cpp validate the arguments and hand
// the backends (cpu:: declared here, cu:: through cu_ops.def) contiguous inputs of one floating
// dtype (f32 or f64) and contiguous outputs. Every backend returns its results on the host.
#include <cstdint>

#include "frugal/core/config.hpp"
#include "frugal/core/error.hpp"
#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"

namespace frugal::distill::detail {

/// Slots of the `out` array of distill_kd_loss (doubles).
enum KdOut : int {
  kKdSum = 0,    ///< sum over rows of KL(q_r || p_r) (without the T^2 factor)
  kCeSum = 1,    ///< sum over rows of -log softmax(s_r)_{y_r} (0 without labels)
  kBadRow = 2,   ///< first row with a problem, -1 when none
  kBadKind = 3,  ///< what: a KdBad value
  kKdOutSize = 4
};

/// Problems a KD row kernel reports (the dispatch turns them into errors).
enum KdBad : int { kKdOk = 0, kKdNonFinite = 1, kKdBadLabel = 2, kKdBadIndex = 3 };

/// Slots of the `out` array of distill_rkd_distance.
enum RkdOut : int { kRkdLoss = 0, kRkdMuStudent = 1, kRkdMuTeacher = 2, kRkdOutSize = 3 };

/// f.template operator()<T>() for T = float or double (the dtypes every distill backend takes).
template <class F>
decltype(auto) visit_real(DType t, const char* op, F&& f) {
  if (t == DType::kF64) return f.template operator()<double>();
  if (t != DType::kF32) {
    ::frugal::detail::fail(ErrorCode::kUnsupported, op, "dtype ", dtype_name(t),
                           " (expected f32 or f64)");
  }
  return f.template operator()<float>();
}

/// Smooth L1 (Huber, delta 1) and its derivative.
template <class A>
FRUGAL_INLINE A huber(A x) {
  const A ax = x < A(0) ? -x : x;
  return ax < A(1) ? A(0.5) * x * x : ax - A(0.5);
}
template <class A>
FRUGAL_INLINE A huber_grad(A x) {
  return x < A(-1) ? A(-1) : (x > A(1) ? A(1) : x);
}

}  // namespace frugal::distill::detail

namespace frugal::distill::cpu {

/// Fused response KD over rows. student (N, C); teacher (N, C) dense when indices has no data,
/// else (N, k) top-k values with indices (N, k) i64; lse (N) of the student's dtype for the
/// uniform-tail top-k teacher (no data: renormalised over the k); labels (N) i64 or no data.
/// Writes grad = kd_scale (p - q) + ce_scale (softmax(s) - onehot) and fills out[kKdOutSize].
void distill_kd_loss(ConstTensorView student, ConstTensorView teacher, ConstTensorView indices,
                     ConstTensorView lse, ConstTensorView labels, double temperature,
                     double kd_scale, double ce_scale, TensorView grad, double* out,
                     const ExecContext& ctx);
/// lse (N) f64 = log sum_c exp(x_rc / temperature) of x (N, C), accumulated in double; NaN or Inf
/// for a row holding NaN or Inf.
void distill_row_lse(ConstTensorView x, double temperature, TensorView lse, const ExecContext& ctx);
/// Mean squared error and its gradient.
double distill_mse(ConstTensorView student, ConstTensorView teacher, TensorView grad,
                   const ExecContext& ctx);
/// Mean cosine distance over rows (shape[0] rows of numel / shape[0]) and its gradient.
double distill_cosine(ConstTensorView student, ConstTensorView teacher, TensorView grad,
                      const ExecContext& ctx);
/// map (N, H W) = sum over channels of features (N, C, H, W) squared.
void distill_attention_map(ConstTensorView features, TensorView map, const ExecContext& ctx);
/// Attention-transfer loss and its gradient with respect to the student features.
double distill_attention_transfer(ConstTensorView student, ConstTensorView teacher, TensorView grad,
                                  const ExecContext& ctx);
/// RKD distance loss and gradient on (B, Ds) / (B, Dt); out[kRkdOutSize].
void distill_rkd_distance(ConstTensorView student, ConstTensorView teacher, TensorView grad,
                          double* out, const ExecContext& ctx);
/// RKD angle loss and gradient on (B, Ds) / (B, Dt).
double distill_rkd_angle(ConstTensorView student, ConstTensorView teacher, TensorView grad,
                         const ExecContext& ctx);
/// Similarity-preserving rows: from the Gram matrices (B, B), the loss
/// (1/B^2) |rownorm(G_s) - rownorm(G_t)|_F^2 and its gradient with respect to G_s.
double distill_sp_rows(ConstTensorView gram_student, ConstTensorView gram_teacher,
                       TensorView grad_gram, const ExecContext& ctx);

}  // namespace frugal::distill::cpu
