// Randomized SVD (include/frugal/lowrank/randomized_svd.hpp): device-generic, built from
// rand_normal, frugal::gemm and the QR / SVD backends, so the CPU and CUDA paths run the same
// algorithm on the same Gaussian sketch.
#include "frugal/lowrank/randomized_svd.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "frugal/core/ops.hpp"
#include "frugal/core/random.hpp"
#include "lowrank/lowrank_internal.hpp"

namespace frugal::lowrank {

RsvdResult randomized_svd(ConstTensorView a, int64_t rank, const RsvdOptions& opt,
                          const ExecContext& ctx) {
  const char* op = "randomized_svd";
  detail::check_matrix(op, a);
  const int64_t m = a.shape[0];
  const int64_t n = a.shape[1];
  const int64_t kmin = std::min(m, n);
  FRUGAL_REQUIRE(rank >= 1 && rank <= kmin, op, "rank ", rank, " outside [1, min(m, n) = ", kmin,
                 "] for shape ", a.shape);
  FRUGAL_REQUIRE(opt.oversampling >= 0, op, "oversampling ", opt.oversampling, " is negative");
  FRUGAL_REQUIRE(opt.power_iters >= 0, op, "power_iters ", opt.power_iters, " is negative");
  const int64_t k = std::min(rank + opt.oversampling, kmin);

  // Stage A (HMT Algorithm 4.4): an orthonormal basis Q (m, k) of the range of (A A^T)^q A Omega,
  // re-orthonormalised after every product so the columns do not collapse onto the top singular
  // vector in floating point.
  ExecContext draw = ctx;
  draw.seed = opt.seed;
  draw.offset = 0;
  const Tensor omega = rand_normal({n, k}, a.dtype, a.device, draw);  // (n, k)
  Tensor q = detail::qr_impl(gemm(a, omega, {}, ctx), ctx).q;         // (m, k)
  for (int64_t it = 0; it < opt.power_iters; ++it) {
    const Tensor z =
        detail::qr_impl(gemm(a, q, GemmOptions{.trans_a = true}, ctx), ctx).q;  // (n, k)
    q = detail::qr_impl(gemm(a, z, {}, ctx), ctx).q;                            // (m, k)
  }

  // Stage B (HMT Algorithm 5.1): B = Q^T A (k, n), held as B^T = A^T Q (n, k) so the product has
  // the same shape as the power-iteration ones. B^T = U_b S V_b^T gives A ~ Q B = (Q V_b) S U_b^T.
  const Tensor bt = gemm(a, q, GemmOptions{.trans_a = true}, ctx);  // (n, k)
  const SvdResult sb = detail::svd_impl(bt, false, true, ctx);      // U_b (n, k), V_b^T (k, k)
  RsvdResult res;
  res.u = gemm(q, sb.vt.slice(0, 0, rank), GemmOptions{.trans_b = true}, ctx);  // (m, rank)
  res.s = sb.s.slice(0, 0, rank).contiguous(ctx);                               // (rank)
  res.vt = sb.u.slice(1, 0, rank).t().contiguous(ctx);                          // (rank, n)

  const std::vector<double> s = res.s.to_vector<double>();
  bool finite = true;
  double captured = 0.0;
  for (double v : s) {
    finite = finite && std::isfinite(v);
    captured += v * v;
  }
  res.converged = sb.converged && finite;

  switch (opt.error) {
    case RsvdError::kNone:
      res.relative_error = std::numeric_limits<double>::quiet_NaN();
      return res;
    case RsvdError::kExact:
      res.relative_error = relative_error(a, res.u, res.s, res.vt, ctx);
      res.error_exact = true;
      return res;
    case RsvdError::kEstimate:
    case RsvdError::kAuto:
      break;
  }
  // ||A - Q B_r||^2 = ||A - Q B||^2 + ||B - B_r||^2 = ||A||^2 - sum_{i <= rank} S_i^2 for
  // orthonormal Q (Pythagoras twice).
  const double norm_sq = frobenius_norm_sq(a, ctx);
  const double est_sq = norm_sq == 0.0 ? 0.0 : std::max(0.0, norm_sq - captured) / norm_sq;
  res.relative_error = std::sqrt(est_sq);
  const double eps = a.dtype == DType::kF64 ? std::numeric_limits<double>::epsilon()
                                            : std::numeric_limits<float>::epsilon();
  if (opt.error == RsvdError::kAuto && est_sq < 1000.0 * eps) {
    res.relative_error = relative_error(a, res.u, res.s, res.vt, ctx);
    res.error_exact = true;
  }
  return res;
}

}  // namespace frugal::lowrank
