#pragma once
/// Data-aware ("response") low-rank approximation of a layer: the principal directions of its
/// OUTPUTS on calibration data rather than of its weights (Zhang et al., "Accelerating very deep
/// convolutional networks for classification and detection", TPAMI 2015, channel decomposition
/// with response reconstruction; for Linear layers the output-space form of ASVD / SVD-LLM).
///
/// For responses Y (N, m) = X W^T (rows = samples; for a convolution, one row per output
/// position and image, m = C_out), Y = P S Q^T and U_r = Q[:, :r] spans the top-r principal
/// directions of the output's (uncentered) second moment Y^T Y. The rank-r approximation
/// W ~ U_r U_r^T W (a layer to r outputs then a layer r -> m) keeps the fraction
/// sum_{i < r} s_i^2 / sum s_i^2 of the output's second moment on the calibration data, the
/// smallest output error ||Y - Y_r||_F of any rank-r map of the outputs. Inputs of trained
/// networks are correlated, so these spectra usually decay faster than the weights'.
/// Device-generic (gemm, qr, svd): CPU or CUDA.
#include <cstdint>

#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"

namespace frugal::lowrank {

/// Principal output directions of a layer, by decreasing second moment (centered: variance).
struct ResponseBasis {
  Tensor u;               ///< (m, k): orthonormal columns, k = min(N, m) (or min(N, n, m))
  Tensor s;               ///< (k): singular values of Y (centered), descending (energy = s_i^2)
  Tensor mean;            ///< (m): the column means of Y when centered, else zeros
  bool converged = true;  ///< the SVD converged
};

/// The basis of explicit responses y (N, m), f32 / f64, finite, non-empty: the right singular
/// vectors of y, or of y minus its column means when `centered` (Zhang et al. 2015 use the
/// centered responses and move the mean into the bias: see project_output). Throws
/// InvalidArgument "[response_basis] ..." otherwise.
ResponseBasis response_basis(ConstTensorView y, bool centered = false, const ExecContext& ctx = {});

/// The basis of Y = X W^T for a linear map w (m, n) on inputs x (N, n), without forming Y:
/// X = Q R (thin QR; centered: of X minus its column means, so Y - mean = (X - mean) W^T),
/// Y = Q (R W^T), so Y's singular values and right singular vectors are those of R W^T
/// (min(N, n) x m). Same dtype and device; finite, non-empty. Throws InvalidArgument
/// "[linear_response_basis] ..." otherwise.
ResponseBasis linear_response_basis(ConstTensorView x, ConstTensorView w, bool centered = false,
                                    const ExecContext& ctx = {});

/// The two factors of W ~ U U^T W for a basis u (m, r) with orthonormal columns.
struct ProjectedFactors {
  Tensor first;                 ///< U^T W: (r, n) for a matrix, (r, C_in, kh, kw) for a kernel
  Tensor second;                ///< U: (m, r)
  Tensor bias_shift;            ///< (I - U U^T) mean, (m): add to the bias (zeros without mean)
  double relative_error = 0.0;  ///< ||W - U U^T W||_F / ||W||_F (weight space)
};

/// W (m, n) or a kernel (m = C_out, C_in, kh, kw) projected onto the span of u's columns (m, r),
/// 1 <= r <= m; same dtype and device, finite. With a response mean (m) (ResponseBasis::mean),
/// the outputs y = W x + b become U U^T (W x - mean) + mean + b = U (U^T W) x + b + bias_shift:
/// exact on the mean response, the centered part projected. Throws InvalidArgument
/// "[project_output] ...".
ProjectedFactors project_output(ConstTensorView w, ConstTensorView u, const Tensor& mean = Tensor(),
                                const ExecContext& ctx = {});

}  // namespace frugal::lowrank
