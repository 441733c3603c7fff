// Response (data-aware) bases and projections (include/frugal/lowrank/response.hpp).
#include "frugal/lowrank/response.hpp"

#include <cmath>

#include "frugal/core/error.hpp"
#include "frugal/core/ops.hpp"
#include "frugal/lowrank/svd.hpp"
#include "lowrank/lowrank_internal.hpp"

namespace frugal::lowrank {
namespace {

ResponseBasis from_svd(const SvdResult& f, Tensor mean, const ExecContext& ctx) {
  return {f.vt.t().contiguous(ctx), f.s, std::move(mean), f.converged};
}

/// Column means (1, cols) of a matrix as a tensor of its dtype and device.
Tensor column_means(const Tensor& a, const ExecContext& ctx) { return mean(a, 0, true, ctx); }

/// a - 1 mu^T for a (rows, cols) and mu (1, cols): a rank-1 update through gemm (no broadcast op).
Tensor center(const Tensor& a, const Tensor& mu, const ExecContext& ctx) {
  Tensor out = a.clone(ctx);
  const Tensor ones = Tensor::full({a.dim(0), 1}, 1.0, a.dtype(), a.device());
  gemm_into(ones, mu, out, GemmOptions{.alpha = -1.0, .beta = 1.0}, ctx);
  return out;
}

}  // namespace

ResponseBasis response_basis(ConstTensorView y, bool centered, const ExecContext& ctx) {
  detail::check_matrix("response_basis", y, "responses");
  const Tensor yc = detail::contiguous_of(y, ctx);
  if (!centered) {
    return from_svd(detail::svd_impl(yc, false, true, ctx),
                    Tensor::zeros({y.shape[1]}, y.dtype, y.device), ctx);
  }
  const Tensor mu = column_means(yc, ctx);  // (1, m)
  const Tensor d = center(yc, mu, ctx);
  return from_svd(detail::svd_impl(d, false, true, ctx), mu.reshape({y.shape[1]}), ctx);
}

ResponseBasis linear_response_basis(ConstTensorView x, ConstTensorView w, bool centered,
                                    const ExecContext& ctx) {
  const char* op = "linear_response_basis";
  detail::check_matrix(op, x, "inputs");
  detail::check_matrix(op, w, "weight");
  FRUGAL_REQUIRE(x.dtype == w.dtype, op, "inputs have dtype ", dtype_name(x.dtype), ", weight has ",
                 dtype_name(w.dtype));
  FRUGAL_REQUIRE(x.device == w.device, op, "inputs and weight are on different devices");
  FRUGAL_REQUIRE(x.shape[1] == w.shape[1], op, "inputs (N, ", x.shape[1],
                 ") do not match the weight's input width ", w.shape[1]);
  Tensor xc = detail::contiguous_of(x, ctx);
  Tensor mu_y = Tensor::zeros({w.shape[0]}, w.dtype, w.device);
  if (centered) {
    const Tensor mu_x = column_means(xc, ctx);  // (1, n)
    xc = center(xc, mu_x, ctx);
    mu_y = gemm(mu_x, w, GemmOptions{.trans_b = true}, ctx).reshape({w.shape[0]});  // W mean_x
  }
  const QrResult q = detail::qr_impl(xc, ctx);                       // R (k, n)
  const Tensor z = gemm(q.r, w, GemmOptions{.trans_b = true}, ctx);  // (k, m)
  return from_svd(detail::svd_impl(z, false, true, ctx), mu_y, ctx);
}

ProjectedFactors project_output(ConstTensorView w, ConstTensorView u, const Tensor& mean,
                                const ExecContext& ctx) {
  const char* op = "project_output";
  FRUGAL_REQUIRE(w.rank() == 2 || w.rank() == 4, op, "weight must have rank 2 or 4, got shape ",
                 w.shape);
  detail::check_matrix(op, u, "basis");
  FRUGAL_REQUIRE(w.dtype == u.dtype, op, "weight has dtype ", dtype_name(w.dtype), ", basis has ",
                 dtype_name(u.dtype));
  FRUGAL_REQUIRE(w.device == u.device, op, "weight and basis are on different devices");
  const int64_t m = w.shape[0], r = u.shape[1];
  FRUGAL_REQUIRE(u.shape[0] == m && r >= 1 && r <= m, op, "basis shape ", u.shape,
                 " does not fit the weight's ", m, " outputs");
  const Tensor wm = detail::contiguous_of(w, ctx).reshape({m, -1});
  detail::check_matrix(op, wm, "weight");
  FRUGAL_REQUIRE(!mean.defined() ||
                     (mean.numel() == m && mean.dtype() == w.dtype && mean.device() == w.device),
                 op, "mean must have the weight's ", m, " outputs, dtype and device");
  ProjectedFactors f;
  f.second = detail::contiguous_of(u, ctx);
  if (mean.defined()) {
    const Tensor mu = mean.contiguous(ctx).reshape({m, 1});
    const Tensor proj =
        gemm(f.second, gemm(f.second, mu, GemmOptions{.trans_a = true}, ctx), {}, ctx);
    f.bias_shift = sub(mu, proj, ctx).reshape({m});
  } else {
    f.bias_shift = Tensor::zeros({m}, w.dtype, w.device);
  }
  const Tensor first = gemm(f.second, wm, GemmOptions{.trans_a = true}, ctx);  // (r, rest)
  const Tensor rec = gemm(f.second, first, {}, ctx);
  const double norm = frobenius_norm_sq(wm, ctx);
  const double res = frobenius_norm_sq(sub(wm, rec, ctx), ctx);
  f.relative_error = norm == 0.0 ? 0.0 : std::sqrt(res / norm);
  Dims shape = w.shape;
  shape[0] = r;
  f.first = first.reshape(shape);
  return f;
}

}  // namespace frugal::lowrank
