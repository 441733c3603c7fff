#pragma once
/// Randomized truncated SVD: Halko, Martinsson and Tropp, "Finding structure with randomness"
/// (SIAM Review 2011), Algorithm 4.4 (randomized subspace iteration) followed by Algorithm 5.1
/// (direct SVD of the projected matrix).
///
///   Omega (n, k) Gaussian from Philox (seed; the same numbers on CPU and CUDA), k = rank + p
///   Q = qr(A Omega)
///   q times:  Q~ = qr(A^T Q);  Q = qr(A Q~)          (re-orthonormalised after every product)
///   B^T = A^T Q (n, k);  B^T = U_b S V_b^T (thin SVD);  U = Q V_b, V^T = U_b^T;  keep `rank`.
///
/// That is 2q + 2 products of A (or A^T) with an (n or m, k) panel (six for q = 2), all through
/// frugal::gemm, 2q + 1 thin QRs of tall (., k) panels and one thin SVD of an (n, k) panel.
/// Defaults follow torch.svd_lowrank (niter = 2) and scikit-learn (n_oversamples = 10).
#include <cstdint>

#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"

namespace frugal::lowrank {

/// How randomized_svd reports ||A - U S V^T||_F / ||A||_F.
enum class RsvdError {
  kNone,  ///< not computed (relative_error is NaN)
  /// From the identity ||A - Q B_r||^2 = ||A||^2 - sum_{i<=rank} S_i^2 (Q orthonormal): one pass
  /// over A. It cancels when the error is small: its absolute error is a modest multiple of
  /// eps * ||A||^2, so a relative error below ~sqrt(1000 eps) (0.011 in f32, 4.7e-7 in f64) is
  /// mostly rounding noise.
  kEstimate,
  kExact,  ///< from the residual A - U S V^T itself (one more product of A's size; blocks)
  kAuto,   ///< kEstimate, recomputed with kExact when the estimate is below sqrt(1000 eps)
};

/// Options of randomized_svd.
struct RsvdOptions {
  int64_t oversampling = 10;  ///< p: extra sketch columns (k = min(rank + p, min(m, n)))
  int64_t power_iters = 2;    ///< q: subspace iterations (torch.svd_lowrank's niter = 2)
  uint64_t seed = 0;          ///< Philox key of the Gaussian sketch (counter offset 0)
  RsvdError error = RsvdError::kAuto;
};

/// Result of randomized_svd: A ~ U diag(S) V^T.
struct RsvdResult {
  Tensor u;   ///< (m, rank)
  Tensor s;   ///< (rank), descending
  Tensor vt;  ///< (rank, n)
  /// ||A - U S V^T||_F / ||A||_F (NaN with RsvdError::kNone; 0 when A = 0).
  double relative_error = 0.0;
  bool error_exact = false;  ///< relative_error came from the residual (kExact, or kAuto fallback)
  bool converged = true;     ///< the inner SVD converged and every singular value is finite
};

/// Rank-`rank` randomized SVD of a (m, n), f32 or f64, CPU or CUDA. Needs 1 <= rank <= min(m, n),
/// oversampling >= 0, power_iters >= 0, finite non-empty input.
RsvdResult randomized_svd(ConstTensorView a, int64_t rank, const RsvdOptions& opt = {},
                          const ExecContext& ctx = {});

}  // namespace frugal::lowrank
