// Dispatch of the matrix decompositions (include/frugal/lowrank/svd.hpp): validation, output
// allocation and the one switch on the device per op.
#include "frugal/lowrank/svd.hpp"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <vector>

#include "cu_ops.hpp"
#include "frugal/core/ops.hpp"
#include "lowrank/lowrank_internal.hpp"

namespace frugal::lowrank {
namespace detail {

void check_matrix(const char* op, ConstTensorView a, const char* what) {
  FRUGAL_REQUIRE(a.rank() == 2, op, what, " must be a matrix (rank 2), got shape ", a.shape);
  FRUGAL_REQUIRE(a.dtype == DType::kF32 || a.dtype == DType::kF64, op, what, " has dtype ",
                 dtype_name(a.dtype), "; expected f32 or f64");
  FRUGAL_REQUIRE(a.numel() > 0, op, what, " is empty (shape ", a.shape, ")");
  FRUGAL_REQUIRE(a.data != nullptr, op, what, " has no data");
  // abs_max propagates NaN, so one reduction finds NaN and Inf alike.
  const double m = abs_max(a).to_vector<double>()[0];
  FRUGAL_REQUIRE(std::isfinite(m), op, what, " contains NaN or Inf");
}

Tensor contiguous_of(ConstTensorView v, const ExecContext& ctx) {
  Tensor t = Tensor::wrap_strided(const_cast<void*>(v.data), v.shape, v.strides, v.dtype, v.device);
  t.set_read_only(true);
  return v.is_contiguous() ? t : t.contiguous(ctx);
}

SvdResult svd_impl(ConstTensorView a, bool full, bool vectors, const ExecContext& ctx) {
  const Tensor ac = contiguous_of(a, ctx);
  const int64_t m = a.shape[0];
  const int64_t n = a.shape[1];
  const int64_t k = std::min(m, n);
  SvdResult res;
  res.s = Tensor::empty({k}, a.dtype, a.device, ctx);
  TensorView uv{}, vtv{};
  if (vectors) {
    res.u = Tensor::empty({m, full ? m : k}, a.dtype, a.device, ctx);
    res.vt = Tensor::empty({full ? n : k, n}, a.dtype, a.device, ctx);
    uv = res.u.view();
    vtv = res.vt.view();
  }
  int64_t info = 0;
  switch (a.device.kind) {
    case DeviceKind::kCpu:
      info = cpu::lowrank_svd(ac.cview(), full, vectors, uv, res.s.view(), vtv, ctx);
      break;
    case DeviceKind::kCuda:
      info = cu::lowrank_svd(ac.cview(), full, vectors, uv, res.s.view(), vtv, ctx);
      break;
  }
  res.info = info;
  res.converged = info == 0;
  return res;
}

QrResult qr_impl(ConstTensorView a, const ExecContext& ctx) {
  const Tensor ac = contiguous_of(a, ctx);
  const int64_t m = a.shape[0];
  const int64_t n = a.shape[1];
  const int64_t k = std::min(m, n);
  QrResult res{Tensor::empty({m, k}, a.dtype, a.device, ctx),
               Tensor::empty({k, n}, a.dtype, a.device, ctx)};
  switch (a.device.kind) {
    case DeviceKind::kCpu:
      cpu::lowrank_qr(ac.cview(), res.q.view(), res.r.view(), ctx);
      break;
    case DeviceKind::kCuda:
      cu::lowrank_qr(ac.cview(), res.q.view(), res.r.view(), ctx);
      break;
  }
  return res;
}

}  // namespace detail

namespace {

/// diag(s) (r, r) as a tensor of s's dtype on s's device.
Tensor diag_of(const Tensor& s, const ExecContext& ctx) {
  const std::vector<double> v = s.to_vector<double>();
  const auto r = static_cast<int64_t>(v.size());
  std::vector<double> d(static_cast<std::size_t>(r * r), 0.0);
  for (int64_t i = 0; i < r; ++i)
    d[static_cast<std::size_t>(i * r + i)] = v[static_cast<std::size_t>(i)];
  return Tensor::from_vector(d, {r, r}).to(s.dtype(), ctx).to(s.device(), ctx);
}

/// U diag(S) (m, r).
Tensor scale_columns(const Tensor& u, const Tensor& s, const ExecContext& ctx) {
  return gemm(u, diag_of(s, ctx), {}, ctx);
}

void check_factors(const char* op, const Tensor& u, const Tensor& s, const Tensor& vt) {
  FRUGAL_REQUIRE(u.defined() && s.defined() && vt.defined(), op, "U, S and V^T must be defined");
  FRUGAL_REQUIRE(u.rank() == 2 && s.rank() == 1 && vt.rank() == 2 && u.dim(1) == s.dim(0) &&
                     vt.dim(0) == s.dim(0),
                 op, "factor shapes ", u.shape(), ", ", s.shape(), ", ", vt.shape(),
                 " do not chain as U (m, r), S (r), V^T (r, n)");
  FRUGAL_REQUIRE(u.dtype() == s.dtype() && u.dtype() == vt.dtype(), op,
                 "factors have different dtypes");
  FRUGAL_REQUIRE(u.device() == s.device() && u.device() == vt.device(), op,
                 "factors are on different devices");
}

}  // namespace

SvdResult svd(ConstTensorView a, SvdMode mode, const ExecContext& ctx) {
  detail::check_matrix("svd", a);
  return detail::svd_impl(a, mode == SvdMode::kFull, true, ctx);
}

Tensor singular_values(ConstTensorView a, const ExecContext& ctx) {
  detail::check_matrix("singular_values", a);
  return detail::svd_impl(a, false, false, ctx).s;
}

SvdResult svd_truncated(ConstTensorView a, int64_t rank, const ExecContext& ctx) {
  const char* op = "svd_truncated";
  detail::check_matrix(op, a);
  const int64_t k = std::min(a.shape[0], a.shape[1]);
  FRUGAL_REQUIRE(rank >= 1 && rank <= k, op, "rank ", rank, " outside [1, min(m, n) = ", k,
                 "] for shape ", a.shape);
  SvdResult full = detail::svd_impl(a, false, true, ctx);
  if (rank == k) return full;
  SvdResult res;
  res.u = full.u.slice(1, 0, rank).contiguous(ctx);
  res.s = full.s.slice(0, 0, rank).contiguous(ctx);
  res.vt = full.vt.slice(0, 0, rank).contiguous(ctx);
  res.converged = full.converged;
  res.info = full.info;
  return res;
}

QrResult qr(ConstTensorView a, const ExecContext& ctx) {
  detail::check_matrix("qr", a);
  return detail::qr_impl(a, ctx);
}

Tensor reconstruct(const Tensor& u, const Tensor& s, const Tensor& vt, const ExecContext& ctx) {
  check_factors("reconstruct", u, s, vt);
  return gemm(scale_columns(u, s, ctx), vt, {}, ctx);
}

double frobenius_norm_sq(ConstTensorView x, const ExecContext& ctx) {
  const char* op = "frobenius_norm_sq";
  FRUGAL_REQUIRE(x.dtype == DType::kF32 || x.dtype == DType::kF64, op, "dtype ",
                 dtype_name(x.dtype), " is not f32 or f64");
  if (x.numel() == 0) return 0.0;
  const Tensor c = detail::contiguous_of(x, ctx);
  if (x.device.kind == DeviceKind::kCpu) {
    // Eigen's vectorized squared norm in double over fixed 64 Ki-element chunks.
    double acc = 0.0;
    const int64_t n = c.numel();
    constexpr int64_t kChunk = 1 << 16;
    for (int64_t i = 0; i < n; i += kChunk) {
      const int64_t len = std::min(kChunk, n - i);
      if (x.dtype == DType::kF64) {
        acc += Eigen::Map<const Eigen::VectorXd>(c.data<double>() + i, len).squaredNorm();
      } else {
        acc += Eigen::Map<const Eigen::VectorXf>(c.data<float>() + i, len)
                   .cast<double>()
                   .squaredNorm();
      }
    }
    return acc;
  }
  return sum(mul(c, c, ctx), ctx).to_vector<double>()[0];
}

double relative_error(ConstTensorView a, const Tensor& u, const Tensor& s, const Tensor& vt,
                      const ExecContext& ctx) {
  const char* op = "relative_error";
  detail::check_matrix(op, a);
  check_factors(op, u, s, vt);
  FRUGAL_REQUIRE(u.dim(0) == a.shape[0] && vt.dim(1) == a.shape[1], op, "factors give shape (",
                 u.dim(0), ", ", vt.dim(1), ") but A has shape ", a.shape);
  FRUGAL_REQUIRE(u.dtype() == a.dtype && u.device() == a.device, op,
                 "factors must have A's dtype and device");
  const Tensor ac = detail::contiguous_of(a, ctx);
  const Tensor us = scale_columns(u, s, ctx);  // (m, r)
  const int64_t m = a.shape[0];
  const int64_t n = a.shape[1];
  // Residual in row blocks of about 4 Mi elements, so the temporary stays small.
  const int64_t rows = std::max<int64_t>(1, (int64_t{1} << 22) / n);
  double res = 0.0;
  for (int64_t r0 = 0; r0 < m; r0 += rows) {
    const int64_t r1 = std::min(m, r0 + rows);
    Tensor blk = ac.slice(0, r0, r1).clone(ctx);
    gemm_into(us.slice(0, r0, r1), vt, blk, GemmOptions{.alpha = -1.0, .beta = 1.0}, ctx);
    res += frobenius_norm_sq(blk, ctx);
  }
  const double norm = frobenius_norm_sq(ac, ctx);
  return norm == 0.0 ? 0.0 : std::sqrt(res / norm);
}

}  // namespace frugal::lowrank
