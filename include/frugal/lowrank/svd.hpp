#pragma once
/// Singular value and QR decompositions of one matrix (tensor level: knows nothing of nn).
///
/// CPU: Eigen's divide-and-conquer BDCSVD (never JacobiSVD on a large matrix: over a minute at
/// 1024 x 1024); for min(m, n) <= 256, Householder QR then Jacobi SVD of the small R factor
/// (robust to clustered singular values, where Eigen 3.4.0's BDCSVD is not); HouseholderQR. CUDA:
/// cuSOLVER (cusolverDnXgesvd; geqrf + orgqr). Inputs are rank-2 (m, n) f32 or f64 tensors, any
/// strides, finite and non-empty; results are new contiguous tensors of the input's dtype on the
/// input's device. Every op here waits for the device (the convergence flag is a host value).
/// Non-convergence is reported in the result, never thrown; misuse (wrong rank, dtype, NaN, empty,
/// rank out of range) throws InvalidArgument with a message starting "[op]".
#include <cstdint>

#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"

namespace frugal::lowrank {

/// A = U diag(S) V^T for A (m, n); k = min(m, n).
struct SvdResult {
  Tensor u;   ///< (m, k) thin or truncated, (m, m) full: left singular vectors (columns)
  Tensor s;   ///< (k) (or (rank) when truncated): singular values, descending, >= 0
  Tensor vt;  ///< (k, n) thin or truncated, (n, n) full: right singular vectors (rows)
  bool converged = true;  ///< false when the backend reported non-convergence
  /// Backend status: 0 on success. CPU: Eigen's ComputationInfo value, or -1 when BDCSVD's
  /// singular vectors came back non-orthogonal (a cluster of nearly equal singular values, see
  /// docs/lowrank.md); CUDA: cuSOLVER's devInfo (> 0: superdiagonals that did not converge).
  int64_t info = 0;
};

/// Which singular vectors svd() returns.
enum class SvdMode {
  kThin,  ///< U (m, k), V^T (k, n)
  kFull,  ///< U (m, m), V^T (n, n)
};

/// Full or thin SVD of a (m, n).
SvdResult svd(ConstTensorView a, SvdMode mode = SvdMode::kThin, const ExecContext& ctx = {});

/// The k = min(m, n) singular values of a, descending, without vectors (cheaper than svd()).
/// Non-convergence throws nothing: check the values (NaN) or call svd() for the flag.
Tensor singular_values(ConstTensorView a, const ExecContext& ctx = {});

/// The best rank-`rank` approximation (Eckart-Young): the thin SVD truncated to its first `rank`
/// triplets, U (m, rank), S (rank), V^T (rank, n). Needs 1 <= rank <= min(m, n).
SvdResult svd_truncated(ConstTensorView a, int64_t rank, const ExecContext& ctx = {});

/// Thin QR: A (m, n) = Q R with Q (m, k) orthonormal columns and R (k, n) upper triangular
/// (trapezoidal when n > m), k = min(m, n). Householder (Eigen HouseholderQR; cuSOLVER geqrf +
/// orgqr); R's diagonal may be negative (LAPACK convention, no sign normalisation).
struct QrResult {
  Tensor q;  ///< (m, k)
  Tensor r;  ///< (k, n)
};

/// Thin Householder QR of a (m, n), f32 or f64.
QrResult qr(ConstTensorView a, const ExecContext& ctx = {});

/// U diag(S) V^T as a new (m, n) tensor (U, S, V^T of any rank r, as svd / svd_truncated /
/// randomized_svd return them).
Tensor reconstruct(const Tensor& u, const Tensor& s, const Tensor& vt, const ExecContext& ctx = {});

/// ||A - U diag(S) V^T||_F / ||A||_F, computed from the residual itself (in row blocks of A, sums
/// of squares accumulated in double), not from ||A||^2 - sum S^2, which cancels catastrophically
/// when the error is small. 0 / 0 (A = 0) gives 0.
double relative_error(ConstTensorView a, const Tensor& u, const Tensor& s, const Tensor& vt,
                      const ExecContext& ctx = {});

/// ||x||_F^2 accumulated in double (any rank, f32 / f64).
double frobenius_norm_sq(ConstTensorView x, const ExecContext& ctx = {});

}  // namespace frugal::lowrank
