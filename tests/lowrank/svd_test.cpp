// SVD, truncated SVD and QR on the CPU against matrices with known singular values
// (frugal/ref/lowrank.hpp builds A = Q1 diag(s) Q2^T by Gram-Schmidt, independent of Eigen).
#include "frugal/lowrank/svd.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "frugal/core/ops.hpp"
#include "frugal/ref/lowrank.hpp"
#include "support/check.hpp"
#include "support/tolerance.hpp"

namespace frugal {
namespace {

using frugal::testing::expect_error;

using lowrank::SvdMode;

Tensor make(const std::vector<double>& v, Shape shape, DType dtype = DType::kF64) {
  return Tensor::from_vector(v, shape).to(dtype);
}

std::vector<double> decaying(int64_t k, double base) {
  std::vector<double> s(static_cast<std::size_t>(k));
  for (int64_t i = 0; i < k; ++i)
    s[static_cast<std::size_t>(i)] = std::pow(base, static_cast<double>(i));
  return s;
}

/// max |X^T X - I| for X (rows, cols) with orthonormal columns.
double orthogonality_defect(const Tensor& x) {
  const Tensor g = gemm(x, x, GemmOptions{.trans_a = true});
  const std::vector<double> v = g.to_vector<double>();
  const int64_t c = x.dim(1);
  double worst = 0.0;
  for (int64_t i = 0; i < c; ++i)
    for (int64_t j = 0; j < c; ++j)
      worst =
          std::max(worst, std::fabs(v[static_cast<std::size_t>(i * c + j)] - (i == j ? 1.0 : 0.0)));
  return worst;
}

struct Shape2 {
  int64_t m, n;
};

class SvdShapes : public ::testing::TestWithParam<Shape2> {};

TEST_P(SvdShapes, ThinSvdRecoversKnownSingularValuesF64) {
  const auto [m, n] = GetParam();
  const int64_t k = std::min(m, n);
  const std::vector<double> s = decaying(k, 0.8);
  const Tensor a = make(ref::matrix_with_singular_values(m, n, s, 7), {m, n});
  const lowrank::SvdResult r = lowrank::svd(a);
  ASSERT_TRUE(r.converged);
  EXPECT_EQ(r.u.shape(), (Shape{m, k}));
  EXPECT_EQ(r.vt.shape(), (Shape{k, n}));
  // Backward-stable SVD: singular values to a few ulps of ||A|| = 1.
  EXPECT_TRUE(testing::all_close(r.s, make(s, {k}), 0.0, 1e-13));
  EXPECT_LT(orthogonality_defect(r.u), 1e-13);       // orthonormal to rounding
  EXPECT_LT(orthogonality_defect(r.vt.t()), 1e-13);  // orthonormal to rounding
  // U S V^T reproduces A to rounding (||A||_2 = 1).
  EXPECT_TRUE(testing::all_close(lowrank::reconstruct(r.u, r.s, r.vt), a, 0.0, 1e-13));
  EXPECT_TRUE(testing::all_close(lowrank::singular_values(a), make(s, {k}), 0.0, 1e-13));
}

TEST_P(SvdShapes, FullSvdHasSquareOrthogonalFactors) {
  const auto [m, n] = GetParam();
  const int64_t k = std::min(m, n);
  const Tensor a = make(ref::matrix_with_singular_values(m, n, decaying(k, 0.9), 3), {m, n});
  const lowrank::SvdResult r = lowrank::svd(a, SvdMode::kFull);
  ASSERT_TRUE(r.converged);
  EXPECT_EQ(r.u.shape(), (Shape{m, m}));
  EXPECT_EQ(r.vt.shape(), (Shape{n, n}));
  EXPECT_LT(orthogonality_defect(r.u), 1e-13);       // orthonormal to rounding
  EXPECT_LT(orthogonality_defect(r.vt.t()), 1e-13);  // orthonormal to rounding
  // The first k columns / rows with S give A back.
  const Tensor rec =
      lowrank::reconstruct(r.u.slice(1, 0, k).contiguous(), r.s, r.vt.slice(0, 0, k).contiguous());
  EXPECT_TRUE(testing::all_close(rec, a, 0.0, 1e-13));  // rounding of an O(1) matrix
}

TEST_P(SvdShapes, TruncatedErrorIsEckartYoungOptimum) {
  const auto [m, n] = GetParam();
  const int64_t k = std::min(m, n);
  const std::vector<double> s = decaying(k, 0.85);
  const Tensor a = make(ref::matrix_with_singular_values(m, n, s, 11), {m, n});
  double total = 0.0;
  for (double v : s) total += v * v;
  for (int64_t r : {int64_t{1}, std::max<int64_t>(1, k / 3), std::max<int64_t>(1, k - 1)}) {
    double tail = 0.0;
    for (int64_t i = r; i < k; ++i)
      tail += s[static_cast<std::size_t>(i)] * s[static_cast<std::size_t>(i)];
    const double optimum = std::sqrt(tail / total);
    const lowrank::SvdResult t = lowrank::svd_truncated(a, r);
    EXPECT_EQ(t.u.shape(), (Shape{m, r}));
    EXPECT_EQ(t.s.shape(), (Shape{r}));
    EXPECT_EQ(t.vt.shape(), (Shape{r, n}));
    // The residual is computed in f64 from an O(1) matrix: absolute error ~1e-15.
    EXPECT_NEAR(lowrank::relative_error(a, t.u, t.s, t.vt), optimum, 1e-12) << "rank " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(Lowrank, SvdShapes,
                         ::testing::Values(Shape2{48, 32}, Shape2{32, 48}, Shape2{40, 40},
                                           Shape2{70, 5}, Shape2{1, 9}));

// Ten equal singular values: Eigen 3.4.0's BDCSVD returns non-orthogonal vectors for such
// clusters (reconstruction error 0.3 measured). The small path (QR + Jacobi) must be exact; the
// BDCSVD path (min(m, n) > 256) must either be right or say converged = false.
TEST(LowrankSvd, ClusteredSingularValues) {
  for (int64_t n : {int64_t{40}, int64_t{300}}) {
    for (DType dt : {DType::kF64, DType::kF32}) {
      const std::vector<double> s(10, 1.0);
      const Tensor a = make(ref::matrix_with_singular_values(n, n, s, 8), {n, n}, dt);
      const lowrank::SvdResult r = lowrank::svd(a);
      const double err = lowrank::relative_error(a, r.u, r.s, r.vt);
      const double tol = dt == DType::kF64 ? 1e-12 : 1e-5;  // rounding of a rank-10 matrix
      if (n <= 256) {
        EXPECT_TRUE(r.converged);
      }
      if (r.converged) {
        EXPECT_LT(err, tol) << "n " << n << " " << dtype_name(dt);
      } else {
        EXPECT_EQ(r.info, -1);
      }
      std::printf("[cluster] n %lld %s converged %d info %lld reconstruction error %.3g\n",
                  static_cast<long long>(n), std::string(dtype_name(dt)).c_str(), r.converged,
                  static_cast<long long>(r.info), err);
    }
  }
}

TEST(LowrankSvd, F32MatchesKnownValues) {
  const int64_t m = 90, n = 60;
  const std::vector<double> s = decaying(n, 0.9);
  const Tensor a = make(ref::matrix_with_singular_values(m, n, s, 5), {m, n}, DType::kF32);
  const lowrank::SvdResult r = lowrank::svd(a);
  ASSERT_TRUE(r.converged);
  EXPECT_EQ(r.s.dtype(), DType::kF32);
  // f32 input rounding (2^-24 relative) perturbs singular values by ~1e-7 ||A||; 1e-5 is slack.
  EXPECT_TRUE(testing::all_close(r.s, make(s, {n}), 0.0, 1e-5));
  EXPECT_LT(orthogonality_defect(r.u), 1e-5);  // f32 rounding
}

TEST(LowrankSvd, StridedInputIsAccepted) {
  const int64_t m = 30, n = 20;
  const std::vector<double> s = decaying(n, 0.7);
  const Tensor a = make(ref::matrix_with_singular_values(n, m, s, 9), {n, m});
  const lowrank::SvdResult r = lowrank::svd(a.t());                // (m, n) transposed view
  EXPECT_TRUE(testing::all_close(r.s, make(s, {n}), 0.0, 1e-13));  // rounding
}

TEST(LowrankQr, ThinQrFactorsTallAndWide) {
  for (const Shape2 sh : {Shape2{50, 20}, Shape2{20, 50}, Shape2{25, 25}}) {
    const Tensor a = make(ref::gaussian(sh.m, sh.n, 21), {sh.m, sh.n});
    const lowrank::QrResult f = lowrank::qr(a);
    const int64_t k = std::min(sh.m, sh.n);
    ASSERT_EQ(f.q.shape(), (Shape{sh.m, k}));
    ASSERT_EQ(f.r.shape(), (Shape{k, sh.n}));
    EXPECT_LT(orthogonality_defect(f.q), 1e-13);  // Householder: orthonormal to rounding
    const std::vector<double> r = f.r.to_vector<double>();
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < std::min(i, sh.n); ++j)
        EXPECT_EQ(r[static_cast<std::size_t>(i * sh.n + j)], 0.0);
    // Q R = A to rounding of O(sqrt(n)) entries.
    EXPECT_TRUE(testing::all_close(matmul(f.q, f.r), a, 0.0, 1e-12));
  }
}

TEST(LowrankSvd, BadInput) {
  const Tensor a = make(ref::gaussian(6, 4, 1), {6, 4});
  expect_error([&] { lowrank::svd_truncated(a, 0); }, ErrorCode::kInvalidArgument, "svd_truncated");
  expect_error([&] { lowrank::svd_truncated(a, 5); }, ErrorCode::kInvalidArgument, "svd_truncated");
  std::vector<double> nan = ref::gaussian(6, 4, 1);
  nan[7] = std::numeric_limits<double>::quiet_NaN();
  expect_error([&] { lowrank::svd(make(nan, {6, 4})); }, ErrorCode::kInvalidArgument, "svd");
  nan[7] = std::numeric_limits<double>::infinity();
  expect_error([&] { lowrank::qr(make(nan, {6, 4})); }, ErrorCode::kInvalidArgument, "qr");
  expect_error(
      [&] {
        lowrank::svd(Tensor::zeros({0, 4}, DType::kF64));
      },
      ErrorCode::kInvalidArgument, "svd");
  expect_error(
      [&] {
        lowrank::svd(Tensor::zeros({2, 3, 4}, DType::kF64));
      },
      ErrorCode::kInvalidArgument, "svd");
  expect_error(
      [&] {
        lowrank::singular_values(Tensor::zeros({3, 4}, DType::kI32));
      },
      ErrorCode::kInvalidArgument, "singular_values");
  expect_error(
      [&] {
        lowrank::svd(Tensor::zeros({3, 4}, DType::kF16));
      },
      ErrorCode::kInvalidArgument, "svd");
  const lowrank::SvdResult r = lowrank::svd(a);
  expect_error([&] { lowrank::reconstruct(r.u, r.s.slice(0, 0, 2).contiguous(), r.vt); },
               ErrorCode::kInvalidArgument, "reconstruct");
  expect_error([&] { lowrank::relative_error(a.t(), r.u, r.s, r.vt); }, ErrorCode::kInvalidArgument,
               "relative_error");
}

TEST(LowrankSvd, ZeroMatrixHasZeroSingularValues) {
  const Tensor a = Tensor::zeros({5, 3}, DType::kF64);
  const lowrank::SvdResult r = lowrank::svd(a);
  EXPECT_TRUE(r.converged);
  EXPECT_TRUE(testing::all_equal(r.s, Tensor::zeros({3}, DType::kF64)));
  EXPECT_EQ(lowrank::relative_error(a, r.u, r.s, r.vt), 0.0);
}

}  // namespace
}  // namespace frugal
