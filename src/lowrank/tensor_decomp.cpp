// Tucker-2 (device-generic, through gemm and svd) and CP-ALS (host, Eigen, double) for 4-way
// convolution kernels (include/frugal/lowrank/tensor_decomp.hpp).
#include "frugal/lowrank/tensor_decomp.hpp"

#include <Eigen/Core>
#include <Eigen/QR>
#include <Eigen/SVD>
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "frugal/core/ops.hpp"
#include "frugal/lowrank/svd.hpp"
#include "lowrank/lowrank_internal.hpp"

namespace frugal::lowrank {
namespace {

void check_kernel(const char* op, ConstTensorView w) {
  FRUGAL_REQUIRE(w.rank() == 4, op, "kernel must have rank 4 (C_out, C_in, kh, kw), got shape ",
                 w.shape);
  // check_matrix's dtype / empty / finite checks on the (C_out, rest) view of a contiguous copy.
  FRUGAL_REQUIRE(w.dtype == DType::kF32 || w.dtype == DType::kF64, op, "kernel has dtype ",
                 dtype_name(w.dtype), "; expected f32 or f64");
  FRUGAL_REQUIRE(w.numel() > 0, op, "kernel is empty (shape ", w.shape, ")");
  const double m = abs_max(w).to_vector<double>()[0];
  FRUGAL_REQUIRE(std::isfinite(m), op, "kernel contains NaN or Inf");
}

/// Mode-0 unfolding (C_out, C_in kh kw) and mode-1 unfolding (C_in, C_out kh kw) of a contiguous
/// kernel.
Tensor unfold0(const Tensor& w) { return w.reshape({w.dim(0), -1}); }
Tensor unfold1(const Tensor& w, const ExecContext& ctx) {
  return w.transpose(0, 1).contiguous(ctx).reshape({w.dim(1), -1});
}

double residual_ratio(const Tensor& w, const Tensor& rec, const ExecContext& ctx) {
  const double norm = frobenius_norm_sq(w, ctx);
  const double res = frobenius_norm_sq(sub(w, rec, ctx), ctx);
  return norm == 0.0 ? 0.0 : std::sqrt(res / norm);
}

// ---- CP-ALS on the host ------------------------------------------------------------------

using Mat = Eigen::MatrixXd;

/// Khatri-Rao product of the factors of every mode but `skip`, in increasing mode order: row
/// ((i_a * I_b + i_b) * I_c + i_c) holds F_a[i_a] * F_b[i_b] * F_c[i_c] (columnwise), matching the
/// column order of the row-major mode-`skip` unfolding below.
Mat khatri_rao(const std::array<Mat, 4>& f, int skip) {
  const Eigen::Index r = f[0].cols();
  Mat kr = Mat::Ones(1, r);
  for (int d = 0; d < 4; ++d) {
    if (d == skip) continue;
    Mat next(kr.rows() * f[d].rows(), r);
    for (Eigen::Index i = 0; i < kr.rows(); ++i) {
      for (Eigen::Index j = 0; j < f[d].rows(); ++j) {
        next.row(i * f[d].rows() + j) = kr.row(i).cwiseProduct(f[d].row(j));
      }
    }
    kr = std::move(next);
  }
  return kr;
}

/// Mode-d unfolding (I_d, prod of the other extents in increasing mode order) of x (row-major).
Mat unfold(const std::vector<double>& x, const std::array<int64_t, 4>& dims, int d) {
  std::array<int64_t, 4> stride{};
  stride[3] = 1;
  for (int k = 2; k >= 0; --k) stride[k] = stride[k + 1] * dims[k + 1];
  int64_t cols = 1;
  for (int k = 0; k < 4; ++k) {
    if (k != d) cols *= dims[k];
  }
  Mat u(dims[d], cols);
  std::array<int64_t, 3> other{};
  int o = 0;
  for (int k = 0; k < 4; ++k) {
    if (k != d) other[o++] = k;
  }
  for (int64_t i = 0; i < dims[d]; ++i) {
    int64_t c = 0;
    for (int64_t a = 0; a < dims[other[0]]; ++a)
      for (int64_t b = 0; b < dims[other[1]]; ++b)
        for (int64_t e = 0; e < dims[other[2]]; ++e, ++c) {
          u(i, c) = x[static_cast<std::size_t>(i * stride[d] + a * stride[other[0]] +
                                               b * stride[other[1]] + e * stride[other[2]])];
        }
  }
  return u;
}

}  // namespace

Tucker2Result tucker2(ConstTensorView w, int64_t rank_out, int64_t rank_in,
                      const ExecContext& ctx) {
  const char* op = "tucker2";
  check_kernel(op, w);
  const int64_t co = w.shape[0], ci = w.shape[1], kh = w.shape[2], kw = w.shape[3];
  const int64_t max_out = std::min(co, ci * kh * kw);
  const int64_t max_in = std::min(ci, co * kh * kw);
  FRUGAL_REQUIRE(rank_out >= 1 && rank_out <= max_out, op, "rank_out ", rank_out, " outside [1, ",
                 max_out, "] for kernel shape ", w.shape);
  FRUGAL_REQUIRE(rank_in >= 1 && rank_in <= max_in, op, "rank_in ", rank_in, " outside [1, ",
                 max_in, "] for kernel shape ", w.shape);
  const Tensor wc = detail::contiguous_of(w, ctx);
  const SvdResult s0 = detail::svd_impl(unfold0(wc), false, true, ctx);
  const SvdResult s1 = detail::svd_impl(unfold1(wc, ctx), false, true, ctx);
  Tucker2Result res;
  res.u_out = s0.u.slice(1, 0, rank_out).contiguous(ctx);  // (co, r1)
  res.u_in = s1.u.slice(1, 0, rank_in).contiguous(ctx);    // (ci, r2)
  res.converged = s0.converged && s1.converged;
  // core = W x_0 U_out^T x_1 U_in^T.
  const int64_t hw = kh * kw;
  const Tensor t1 = gemm(res.u_out, unfold0(wc), GemmOptions{.trans_a = true}, ctx);  // (r1, ci hw)
  const Tensor t1p =
      t1.reshape({rank_out, ci, hw}).transpose(0, 1).contiguous(ctx);  // (ci, r1, hw)
  const Tensor t2 = gemm(res.u_in, t1p.reshape({ci, rank_out * hw}), GemmOptions{.trans_a = true},
                         ctx);  // (r2, r1 hw)
  res.core = t2.reshape({rank_in, rank_out, kh, kw}).transpose(0, 1).contiguous(ctx);
  res.relative_error = residual_ratio(wc, tucker2_reconstruct(res, ctx), ctx);
  return res;
}

Tucker2Spectra tucker2_spectra(ConstTensorView w, const ExecContext& ctx) {
  check_kernel("tucker2_spectra", w);
  const Tensor wc = detail::contiguous_of(w, ctx);
  return {detail::svd_impl(unfold0(wc), false, false, ctx).s,
          detail::svd_impl(unfold1(wc, ctx), false, false, ctx).s};
}

Tensor tucker2_reconstruct(const Tucker2Result& t, const ExecContext& ctx) {
  const char* op = "tucker2_reconstruct";
  FRUGAL_REQUIRE(t.core.defined() && t.u_out.defined() && t.u_in.defined() && t.core.rank() == 4 &&
                     t.u_out.rank() == 2 && t.u_in.rank() == 2 && t.u_out.dim(1) == t.core.dim(0) &&
                     t.u_in.dim(1) == t.core.dim(1),
                 op,
                 "factors do not chain as core (r_out, r_in, kh, kw), U_out (C_out, r_out), "
                 "U_in (C_in, r_in)");
  const int64_t r1 = t.core.dim(0), r2 = t.core.dim(1), kh = t.core.dim(2), kw = t.core.dim(3);
  const int64_t co = t.u_out.dim(0), ci = t.u_in.dim(0), hw = kh * kw;
  const Tensor core = t.core.contiguous(ctx);
  const Tensor c1 = gemm(t.u_out, core.reshape({r1, r2 * hw}), {}, ctx);        // (co, r2 hw)
  const Tensor c1p = c1.reshape({co, r2, hw}).transpose(0, 1).contiguous(ctx);  // (r2, co, hw)
  const Tensor c2 = gemm(t.u_in, c1p.reshape({r2, co * hw}), {}, ctx);          // (ci, co hw)
  return c2.reshape({ci, co, kh, kw}).transpose(0, 1).contiguous(ctx);
}

CpResult cp_als(ConstTensorView w, int64_t rank, const CpOptions& opt, const ExecContext& ctx) {
  const char* op = "cp_als";
  check_kernel(op, w);
  FRUGAL_REQUIRE(rank >= 1, op, "rank ", rank, " must be >= 1");
  FRUGAL_REQUIRE(opt.max_iters >= 1, op, "max_iters ", opt.max_iters, " must be >= 1");
  FRUGAL_REQUIRE(opt.tol >= 0.0, op, "tol ", opt.tol, " must be >= 0");
  const std::array<int64_t, 4> dims{w.shape[0], w.shape[1], w.shape[2], w.shape[3]};
  const Tensor host = detail::contiguous_of(w, ctx).to(Device::cpu(), ctx);
  const std::vector<double> x = host.to_vector<double>();
  std::array<Mat, 4> xu;
  for (int d = 0; d < 4; ++d) xu[d] = unfold(x, dims, d);
  double norm = 0.0;
  for (double v : x) norm += v * v;
  norm = std::sqrt(norm);

  // HOSVD initialisation: leading left singular vectors of each unfolding; Gaussian columns where
  // the mode has fewer than `rank` directions.
  std::mt19937_64 gen(opt.seed);
  std::normal_distribution<double> gauss(0.0, 1.0);
  std::array<Mat, 4> f;
  for (int d = 0; d < 4; ++d) {
    f[d] = Mat(dims[d], rank);
    Eigen::BDCSVD<Mat> dec(xu[d], Eigen::ComputeThinU);
    const Eigen::Index have = std::min<Eigen::Index>(dec.matrixU().cols(), rank);
    f[d].leftCols(have) = dec.matrixU().leftCols(have);
    for (Eigen::Index c = have; c < rank; ++c)
      for (Eigen::Index i = 0; i < dims[d]; ++i) f[d](i, c) = gauss(gen);
  }

  CpResult res;
  double prev = std::numeric_limits<double>::infinity();
  double err = prev;
  Eigen::VectorXd lambda = Eigen::VectorXd::Ones(rank);
  for (int64_t it = 0; it < opt.max_iters; ++it) {
    for (int d = 0; d < 4; ++d) {
      Mat v = Mat::Ones(rank, rank);
      for (int e = 0; e < 4; ++e) {
        if (e != d) v = v.cwiseProduct(f[e].transpose() * f[e]);
      }
      const Mat mttkrp = xu[d] * khatri_rao(f, d);  // (I_d, R)
      // F_d = MTTKRP V^+ (V symmetric PSD; the pseudo-inverse handles rank-deficient V).
      const Mat sol = v.completeOrthogonalDecomposition().solve(mttkrp.transpose());  // (R, I_d)
      f[d] = sol.transpose();
      lambda = f[d].colwise().norm().transpose();
      for (Eigen::Index c = 0; c < rank; ++c) {
        if (lambda(c) > 0) f[d].col(c) /= lambda(c);
      }
    }
    // Residual of the reconstruction lambda-scaled F_0 KR(F_1, F_2, F_3)^T, from the residual
    // itself (the Gram-based shortcut cancels near an exact fit).
    const Mat rec = (f[0] * lambda.asDiagonal()) * khatri_rao(f, 0).transpose();
    err = norm == 0.0 ? 0.0 : (xu[0] - rec).norm() / norm;
    res.iterations = it + 1;
    if (std::fabs(prev - err) < opt.tol || err < opt.tol) {
      res.converged = true;
      break;
    }
    prev = err;
  }
  f[0] = f[0] * lambda.asDiagonal();
  res.relative_error = err;
  auto to_tensor = [&](const Mat& m) {
    std::vector<double> v(static_cast<std::size_t>(m.size()));
    Eigen::Map<Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
        v.data(), m.rows(), m.cols()) = m;
    return Tensor::from_vector(v, {m.rows(), m.cols()}).to(w.dtype, ctx).to(w.device, ctx);
  };
  res.out = to_tensor(f[0]);
  res.in = to_tensor(f[1]);
  res.h = to_tensor(f[2]);
  res.w = to_tensor(f[3]);
  return res;
}

Tensor cp_reconstruct(const CpResult& cp, const ExecContext& ctx) {
  const char* op = "cp_reconstruct";
  FRUGAL_REQUIRE(cp.out.defined() && cp.in.defined() && cp.h.defined() && cp.w.defined() &&
                     cp.out.rank() == 2 && cp.in.rank() == 2 && cp.h.rank() == 2 &&
                     cp.w.rank() == 2 && cp.in.dim(1) == cp.out.dim(1) &&
                     cp.h.dim(1) == cp.out.dim(1) && cp.w.dim(1) == cp.out.dim(1),
                 op, "factors must be (extent, R) matrices with one R");
  const int64_t r = cp.out.dim(1);
  // Khatri-Rao of (in, h, w) on the host (small), then one GEMM on the factors' device.
  const std::vector<double> b = cp.in.to_vector<double>();
  const std::vector<double> c = cp.h.to_vector<double>();
  const std::vector<double> d = cp.w.to_vector<double>();
  const int64_t ci = cp.in.dim(0), kh = cp.h.dim(0), kw = cp.w.dim(0);
  std::vector<double> kr(static_cast<std::size_t>(ci * kh * kw * r));
  for (int64_t i = 0; i < ci; ++i)
    for (int64_t h = 0; h < kh; ++h)
      for (int64_t x = 0; x < kw; ++x)
        for (int64_t q = 0; q < r; ++q) {
          kr[static_cast<std::size_t>(((i * kh + h) * kw + x) * r + q)] =
              b[static_cast<std::size_t>(i * r + q)] * c[static_cast<std::size_t>(h * r + q)] *
              d[static_cast<std::size_t>(x * r + q)];
        }
  const Tensor krt =
      Tensor::from_vector(kr, {ci * kh * kw, r}).to(cp.out.dtype(), ctx).to(cp.out.device(), ctx);
  return gemm(cp.out, krt, GemmOptions{.trans_b = true}, ctx).reshape({cp.out.dim(0), ci, kh, kw});
}

Tensor tucker2_core_energy(ConstTensorView w, const ExecContext& ctx) {
  check_kernel("tucker2_core_energy", w);
  const int64_t co = w.shape[0], ci = w.shape[1], hw = w.shape[2] * w.shape[3];
  const Tucker2Result t = tucker2(w, std::min(co, ci * hw), std::min(ci, co * hw), ctx);
  const int64_t ro = t.core.dim(0), ri = t.core.dim(1);
  const std::vector<double> core = t.core.to_vector<double>();  // (ro, ri, kh, kw)
  std::vector<double> e(static_cast<std::size_t>(ro * ri), 0.0);
  for (int64_t ab = 0; ab < ro * ri; ++ab) {
    double acc = 0.0;
    for (int64_t k = 0; k < hw; ++k) {
      const double v = core[static_cast<std::size_t>(ab * hw + k)];
      acc += v * v;
    }
    e[static_cast<std::size_t>(ab)] = acc;
  }
  return Tensor::from_vector(e, {ro, ri});
}

Tensor channel_unfold(ConstTensorView w, const ExecContext& ctx) {
  check_kernel("channel_unfold", w);
  return detail::contiguous_of(w, ctx).reshape({w.shape[0], -1}).contiguous(ctx);
}

Tensor spatial_unfold(ConstTensorView w, const ExecContext& ctx) {
  check_kernel("spatial_unfold", w);
  const int64_t co = w.shape[0], ci = w.shape[1], kh = w.shape[2], kw = w.shape[3];
  // (C_out, C_in, kh, kw) -> (C_in, kh, C_out, kw) -> (C_in kh, C_out kw).
  return detail::contiguous_of(w, ctx).transpose(0, 1).transpose(1, 2).contiguous(ctx).reshape(
      {ci * kh, co * kw});
}

namespace {

/// x (rows, r) with column j scaled by d[j], or (r, cols) with row i scaled by d[i].
Tensor scale_by(const Tensor& x, const std::vector<double>& d, bool columns,
                const ExecContext& ctx) {
  const auto r = static_cast<int64_t>(d.size());
  std::vector<double> diag(static_cast<std::size_t>(r * r), 0.0);
  for (int64_t i = 0; i < r; ++i) diag[static_cast<std::size_t>(i * r + i)] = d[i];
  const Tensor dt = Tensor::from_vector(diag, {r, r}).to(x.dtype(), ctx).to(x.device(), ctx);
  return columns ? gemm(x, dt, {}, ctx) : gemm(dt, x, {}, ctx);
}

/// SVD of `m` and its rank-r split U S^1/2 (rows, r), S^1/2 V^T (r, cols).
struct Split {
  Tensor left, right, s;
  double relative_error = 0.0;
  bool converged = true;
};
Split split_svd(const Tensor& m, int64_t rank, const ExecContext& ctx) {
  const SvdResult f = detail::svd_impl(m, false, true, ctx);
  Split out;
  out.s = f.s;
  out.converged = f.converged;
  std::vector<double> s = f.s.to_vector<double>();
  double total = 0.0, tail = 0.0;
  for (std::size_t i = s.size(); i-- > 0;) {
    total += s[i] * s[i];
    if (static_cast<int64_t>(i) >= rank) tail += s[i] * s[i];
  }
  out.relative_error = total == 0.0 ? 0.0 : std::sqrt(tail / total);
  std::vector<double> root(s.begin(), s.begin() + rank);
  for (double& v : root) v = std::sqrt(v);
  out.left = scale_by(f.u.slice(1, 0, rank), root, true, ctx);
  out.right = scale_by(f.vt.slice(0, 0, rank), root, false, ctx);
  return out;
}

}  // namespace

ConvSvdResult channel_svd(ConstTensorView w, int64_t rank, const ExecContext& ctx) {
  const char* op = "channel_svd";
  check_kernel(op, w);
  const int64_t co = w.shape[0], ci = w.shape[1], kh = w.shape[2], kw = w.shape[3];
  const int64_t kmax = std::min(co, ci * kh * kw);
  FRUGAL_REQUIRE(rank >= 1 && rank <= kmax, op, "rank ", rank, " outside [1, ", kmax,
                 "] for kernel shape ", w.shape);
  const Split sp = split_svd(channel_unfold(w, ctx), rank, ctx);
  ConvSvdResult r;
  r.first = sp.right.reshape({rank, ci, kh, kw});                // S^1/2 V^T
  r.second = sp.left.contiguous(ctx).reshape({co, rank, 1, 1});  // U S^1/2
  r.s = sp.s;
  r.relative_error = sp.relative_error;
  r.converged = sp.converged;
  return r;
}

ConvSvdResult spatial_svd(ConstTensorView w, int64_t rank, const ExecContext& ctx) {
  const char* op = "spatial_svd";
  check_kernel(op, w);
  const int64_t co = w.shape[0], ci = w.shape[1], kh = w.shape[2], kw = w.shape[3];
  const int64_t kmax = std::min(ci * kh, co * kw);
  FRUGAL_REQUIRE(rank >= 1 && rank <= kmax, op, "rank ", rank, " outside [1, ", kmax,
                 "] for kernel shape ", w.shape);
  const Split sp = split_svd(spatial_unfold(w, ctx), rank, ctx);
  ConvSvdResult r;
  // Vertical weight V[r, c, h, 0] = (U S^1/2)[(c, h), r]: transpose to (r, C_in kh).
  r.first = sp.left.t().contiguous(ctx).reshape({rank, ci, kh, 1});
  // Horizontal weight H[o, r, 0, x] = (S^1/2 V^T)[r, (o, x)]: (r, C_out, kw) -> (C_out, r, kw).
  r.second =
      sp.right.reshape({rank, co, kw}).transpose(0, 1).contiguous(ctx).reshape({co, rank, 1, kw});
  r.s = sp.s;
  r.relative_error = sp.relative_error;
  r.converged = sp.converged;
  return r;
}

}  // namespace frugal::lowrank
