#pragma once
/// Relation distillation: the student's embeddings of a batch should relate to each other as the
/// teacher's do. The embedding widths of student and teacher may differ (only relations between
/// samples are compared). Inputs are (B, ...) and flattened to rows (B, D); f32 or f64, one
/// device; strided views are copied. The loss is a double on the host (CUDA waits for the stream);
/// the gradient is with respect to the student embeddings, in their shape, dtype and device.
/// Sums run in double in a fixed order.
///
/// h below is the smooth L1 (Huber, delta 1) penalty: h(x) = x^2 / 2 for |x| < 1, |x| - 1/2
/// otherwise, as PyTorch's smooth_l1_loss.
#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"
#include "frugal/distill/feature.hpp"

namespace frugal::distill {

/// RKD distance loss (Park, Kim, Lu and Cho, "Relational Knowledge Distillation", CVPR 2019):
/// d_ij = |e_i - e_j|_2, mu = mean of d_ij over the B (B - 1) pairs i != j, psi = d / mu, and
///   loss = (1/B^2) sum_{i != j} h(psi_s(i, j) - psi_t(i, j))
/// (the mean over the whole B x B matrix, whose diagonal is 0, as the authors' code does).
/// Needs B >= 2 and mu > 0 for both (not all embeddings equal). Coincident pairs (d_ij = 0) add no
/// gradient. Throws InvalidArgument "[rkd_distance] ...".
LossResult rkd_distance(ConstTensorView student, ConstTensorView teacher,
                        const ExecContext& ctx = {});

/// RKD angle loss (Park et al. 2019): for each anchor a and pair (b, c), the cosine of the angle
/// at a, cos_abc = <n(e_b - e_a), n(e_c - e_a)> with n(v) = v / |v| (and n(0) = 0, so terms
/// with b = a or c = a are 0), and
///   loss = (1/B^3) sum_{a, b, c} h(cos_s(a, b, c) - cos_t(a, b, c)),
/// the mean over the B^3 tensor as in the authors' code. Cost O(B^3 D): meant for batches of a few
/// hundred. Needs B >= 3. Throws InvalidArgument "[rkd_angle] ...".
LossResult rkd_angle(ConstTensorView student, ConstTensorView teacher, const ExecContext& ctx = {});

/// Similarity-preserving KD (Tung and Mori, ICCV 2019): G = E E^T (B x B), each row divided by its
/// L2 norm (a zero row stays 0), and
///   loss = (1/B^2) | G_s_normalised - G_t_normalised |_F^2.
/// Needs B >= 1. The Gram matrices and the gradient's products go through core gemm (Eigen /
/// cuBLAS). Throws InvalidArgument "[sp_loss] ...".
LossResult sp_loss(ConstTensorView student, ConstTensorView teacher, const ExecContext& ctx = {});

}  // namespace frugal::distill
