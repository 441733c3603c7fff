#pragma once
/// Response (logit) distillation: Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural
/// Network" (2015). The student matches the teacher's softened class distribution; the loss can be
/// mixed with the hard-label cross-entropy, and the teacher may be given as its top-k logits only
/// (the cheap way to cache a large teacher on disk).
///
/// With p = softmax(s / T) (student) and q = softmax(t / T) (teacher), per row r:
///   kd_r = T^2 KL(q || p) = T^2 sum_c q_c (log q_c - log p_c),
///   ce_r = -log softmax(s)_{y_r}                       (hard labels y, temperature 1),
///   loss = alpha * (1/N) sum_r kd_r + (1 - alpha) * (1/N) sum_r ce_r           ("batchmean"),
///   dloss/ds = alpha * T (p - q) / N + (1 - alpha) (softmax(s) - onehot(y)) / N.
/// The T^2 factor keeps the gradient's scale independent of T (Hinton et al., section 2).
///
/// One fused pass per row: row maxima and log-sum-exps of both rows, the loss terms and the
/// gradient, stable for logits of any finite size (1e4 included: every exponent is <= 0).
/// CPU: oneTBB over rows; the f32 row kernel uses 16-float SIMD vectors (lowered to the build's
/// -march: AVX-512, AVX2 or SSE) and evaluates exp with a polynomial (relative error <= 1.2e-7,
/// about 1 ulp; exponents below -87 give 0). Lane sums are added in double per row and row losses
/// in row order, so the loss does not depend on the thread count. CUDA: one block per
/// row, fixed-order tree reductions (deterministic run to run, not bit-identical to the CPU).
/// Logits f32 or f64 on both; f16 and bf16 logits are accepted by kd_loss, kd_loss_into and
/// kd_loss_topk (widened to f32 before the f32 kernel, the gradient narrowed back to the
/// student's dtype: one extra pass over the data, not fused into the kernel). See docs/distill.md.
/// The loss is returned on the host: on CUDA the call waits for the stream.
#include <cstdint>

#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"

namespace frugal::distill {

/// Loss value(s) and the gradient with respect to the student logits.
struct KdResult {
  double loss = 0.0;    ///< alpha * kd + (1 - alpha) * ce
  double kd = 0.0;      ///< (1/N) sum_r T^2 KL(q_r || p_r)
  double ce = 0.0;      ///< (1/N) sum_r -log softmax(s_r)_{y_r}; 0 when no labels were given
  Tensor grad_student;  ///< dloss / dstudent (N, C), student's dtype and device, contiguous
};

/// What a top-k teacher assumes about the C - k classes it does not store.
enum class TopKTail {
  /// q is renormalised over the k stored classes: q_c = softmax(values / T) at the stored indices,
  /// 0 elsewhere (the dropped mass is ignored, which sharpens q slightly). Works at any T.
  kRenormalize,
  /// q_c = exp(t_c / T - lse) at the stored indices, with lse the log-sum-exp of the whole teacher
  /// row at T (stored per row), and the missing mass m = 1 - sum of those spread uniformly over
  /// the other C - k classes (m / (C - k) each). Exact when the teacher's tail logits are equal;
  /// tied to the T of lse.
  kUniform,
};

/// Teacher logits kept as their k largest values per row with their class indices: what
/// topk_teacher returns and what a teacher cache stores.
struct TopKLogits {
  Tensor values;   ///< (N, k) logits, float dtype, largest first
  Tensor indices;  ///< (N, k) i64 class indices in [0, C), distinct within a row
  TopKTail tail = TopKTail::kRenormalize;  ///< how the loss treats the other C - k classes
  /// kUniform: (N) log(sum_c exp(t_c / lse_temperature)) over the full teacher row, the values'
  /// dtype and device; undefined for kRenormalize.
  Tensor lse;
  double lse_temperature = 0.0;  ///< kUniform: the T of lse (> 0); 0 for kRenormalize
};

/// T^2 KL(softmax(teacher / T) || softmax(student / T)), batchmean, and its gradient
/// T (softmax(s / T) - softmax(t / T)) / N. student and teacher (N, C), same float dtype (f32 or
/// f64, or f16 / bf16 through f32) and device; strided views are copied. N = 0 gives loss 0 and
/// an empty gradient.
/// Throws InvalidArgument "[kd_loss] ..." for T <= 0 (or not finite), shapes that differ, a rank
/// other than 2, C = 0, mixed dtypes or devices, and NaN / Inf logits (named by row).
KdResult kd_loss(ConstTensorView student, ConstTensorView teacher, double temperature,
                 const ExecContext& ctx = {});

/// alpha * KD + (1 - alpha) * CE(student, labels): labels (N) i64 in [0, C) on the student's
/// device. alpha in [0, 1]. Throws as above, and for labels out of range, of the wrong shape,
/// dtype or device, or alpha outside [0, 1].
KdResult kd_loss(ConstTensorView student, ConstTensorView teacher, ConstTensorView labels,
                 double temperature, double alpha, const ExecContext& ctx = {});

/// kd_loss writing the gradient into `grad` (N, C: contiguous, the student's dtype and device)
/// instead of a new tensor, for training loops that keep one buffer (a fresh 16 MB host buffer
/// costs page faults on every call, about a fifth of the time at 4096 x 1000). `labels` may be an
/// empty view ({}) for no cross-entropy. The returned grad_student is left undefined.
/// Throws as kd_loss, and for a `grad` of the wrong shape, dtype, device or layout.
KdResult kd_loss_into(ConstTensorView student, ConstTensorView teacher, ConstTensorView labels,
                      double temperature, double alpha, TensorView grad,
                      const ExecContext& ctx = {});

/// The k largest logits of each row of teacher (N, C) with their indices (core topk; ties by lower
/// index), tail kRenormalize. 1 <= k <= C. Throws InvalidArgument "[topk_teacher] ..." otherwise.
TopKLogits topk_teacher(ConstTensorView teacher, int64_t k, const ExecContext& ctx = {});

/// topk_teacher with tail kUniform: also stores each row's log-sum-exp of teacher / temperature
/// (lse, computed in double, kept in the teacher's dtype), so the loss can spread the missing mass
/// over the other C - k classes. The result can only be used at this temperature. Throws
/// InvalidArgument "[topk_teacher] ..." as above, for temperature <= 0 or not finite, and for NaN
/// or Inf logits (named by row).
TopKLogits topk_teacher(ConstTensorView teacher, int64_t k, double temperature,
                        const ExecContext& ctx = {});

/// kd_loss against a top-k teacher, with q as teacher.tail says. kRenormalize: q_c =
/// softmax(values / T) at the stored indices and q_c = 0 elsewhere (the mass of the other C - k
/// classes is dropped, which sharpens q slightly); KL(q || p) sums over the k stored classes.
/// kUniform: q_c = exp(values / T - lse) at the stored indices and (1 - sum of those) / (C - k)
/// elsewhere (a negative remainder, from an lse that is not the row's, is taken as 0); KL sums over
/// all C classes. Either way dloss/ds = T (p - q) / N is dense, and with k = C the loss is kd_loss.
/// values (N, k) of the student's dtype, indices (N, k) i64 with distinct entries in [0, C)
/// (checked for range, not for distinctness), 1 <= k <= C; kUniform: lse (N) of the student's
/// dtype and device, and temperature == teacher.lse_temperature (the lse was computed at that T;
/// another T throws). Throws "[kd_loss_topk] ...".
KdResult kd_loss_topk(ConstTensorView student, const TopKLogits& teacher, double temperature,
                      const ExecContext& ctx = {});

/// kd_loss_topk mixed with the hard-label cross-entropy: alpha * KD + (1 - alpha) * CE.
KdResult kd_loss_topk(ConstTensorView student, const TopKLogits& teacher, ConstTensorView labels,
                      double temperature, double alpha, const ExecContext& ctx = {});

}  // namespace frugal::distill
