#pragma once
/// Feature (hint) distillation: the student's intermediate features are pulled toward the
/// teacher's. FitNets (Romero et al. 2015) match features through a learned adapter when the widths
/// differ: these functions take the ADAPTED student features (the adapter is the caller's layer,
/// e.g. nn::Linear or a 1x1 nn::Conv2d; nn::FeatureAdapter in frugal/nn/distiller.hpp), and return
/// the loss and its gradient with respect to them, which the caller passes back through the
/// adapter. Attention transfer (Zagoruyko and Komodakis 2017) compares spatial attention maps, so
/// the channel counts may differ.
///
/// Every function: student and teacher of one float dtype (f32 or f64) and device; strided views
/// are copied; the loss is a double on the host (CUDA waits for the stream); the gradient is a new
/// contiguous tensor of the student's shape, dtype and device. Sums run in double in a fixed
/// order (CPU: independent of the thread count; CUDA: deterministic run to run).
#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"

namespace frugal::distill {

/// A scalar loss and its gradient with respect to the student input.
struct LossResult {
  double loss = 0.0;    ///< the loss value
  Tensor grad_student;  ///< dloss / dstudent, the student's shape, dtype and device
};

/// Mean squared error over every element: loss = (1/n) sum (s - t)^2, grad = 2 (s - t) / n.
/// Same shape (any rank, non-empty). Throws InvalidArgument "[feature_mse] ..." otherwise.
LossResult feature_mse(ConstTensorView student, ConstTensorView teacher,
                       const ExecContext& ctx = {});

/// Cosine distance per sample: the features are (N, ...) flattened to rows of D; with
/// cos_r = <s_r, t_r> / (max(|s_r|, eps) max(|t_r|, eps)), eps = 1e-8,
///   loss = (1/N) sum_r (1 - cos_r),
///   grad_r = -(1/N) (t_r / (|s_r| |t_r|) - cos_r s_r / |s_r|^2)   (|s_r| > eps; the clamped
///   norm is treated as a constant below it). Same shape, rank >= 2 (or 1: one sample), N > 0.
/// Throws InvalidArgument "[feature_cosine] ...".
LossResult feature_cosine(ConstTensorView student, ConstTensorView teacher,
                          const ExecContext& ctx = {});

/// Spatial attention map of conv features (N, C, H, W): a = sum_c F_c^2 (p = 2), flattened to
/// (N, H * W), not normalised. Throws InvalidArgument "[attention_map] ..." for rank != 4.
Tensor attention_map(ConstTensorView features, const ExecContext& ctx = {});

/// Attention transfer (Zagoruyko and Komodakis 2017, p = 2): with a = attention_map(F) per sample
/// and u = a / max(|a|_2, eps) (eps = 1e-12),
///   loss = (1/N) sum_n | u_s(n) - u_t(n) |_2        (the L2 norm, not squared, per sample),
/// and its gradient with respect to the student features (0 for a sample whose maps agree
/// exactly, where the norm is not differentiable). student (N, Cs, H, W) and teacher
/// (N, Ct, H, W): channel counts may differ, N, H and W must agree.
/// Throws InvalidArgument "[attention_transfer] ...".
LossResult attention_transfer(ConstTensorView student, ConstTensorView teacher,
                              const ExecContext& ctx = {});

}  // namespace frugal::distill
