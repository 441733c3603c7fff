// Tucker-2 and CP-ALS recover random low-rank kernels exactly; reconstructions against the scalar
// references of frugal/ref/lowrank.hpp.
#include "frugal/lowrank/tensor_decomp.hpp"

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

Tensor make(const std::vector<double>& v, Shape shape, DType dtype = DType::kF64) {
  return Tensor::from_vector(v, shape).to(dtype);
}

TEST(Tucker2, RecoversExactMultilinearRank) {
  const int64_t co = 12, ci = 10, kh = 3, kw = 3, r1 = 4, r2 = 5;
  // Random factors (not orthonormal) and core: multilinear rank exactly (4, 5) in the channel
  // modes.
  const std::vector<double> w =
      ref::tucker2_reconstruct(ref::gaussian(r1 * r2 * kh * kw, 1, 1), ref::gaussian(co, r1, 2),
                               ref::gaussian(ci, r2, 3), co, ci, r1, r2, kh, kw);
  const Tensor wt = make(w, {co, ci, kh, kw});
  const lowrank::Tucker2Result t = lowrank::tucker2(wt, r1, r2);
  ASSERT_TRUE(t.converged);
  EXPECT_EQ(t.core.shape(), (Shape{r1, r2, kh, kw}));
  EXPECT_EQ(t.u_out.shape(), (Shape{co, r1}));
  EXPECT_EQ(t.u_in.shape(), (Shape{ci, r2}));
  const std::vector<double> rec =
      ref::tucker2_reconstruct(t.core.to_vector<double>(), t.u_out.to_vector<double>(),
                               t.u_in.to_vector<double>(), co, ci, r1, r2, kh, kw);
  // Exact in exact arithmetic; f64 rounding of O(1) values.
  EXPECT_LT(ref::relative_distance(rec, w), 1e-12);
  EXPECT_LT(t.relative_error, 1e-12);
  EXPECT_TRUE(testing::all_close(lowrank::tucker2_reconstruct(t), make(rec, {co, ci, kh, kw}), 0.0,
                                 1e-12));  // two f64 evaluations of one sum
}

TEST(Tucker2, TruncationErrorMatchesReference) {
  const int64_t co = 8, ci = 6, kh = 3, kw = 2;
  const std::vector<double> w = ref::gaussian(co * ci * kh * kw, 1, 9);
  for (DType dt : {DType::kF64, DType::kF32}) {
    const lowrank::Tucker2Result t = lowrank::tucker2(make(w, {co, ci, kh, kw}, dt), 3, 2);
    const std::vector<double> rec =
        ref::tucker2_reconstruct(t.core.to_vector<double>(), t.u_out.to_vector<double>(),
                                 t.u_in.to_vector<double>(), co, ci, 3, 2, kh, kw);
    // f32: the factors are rounded to 24 bits; f64: rounding.
    EXPECT_NEAR(t.relative_error, ref::relative_distance(rec, w), dt == DType::kF64 ? 1e-12 : 1e-5);
    EXPECT_GT(t.relative_error, 0.1);  // a Gaussian tensor is far from multilinear rank (3, 2)
  }
  const lowrank::Tucker2Spectra s = lowrank::tucker2_spectra(make(w, {co, ci, kh, kw}));
  EXPECT_EQ(s.s_out.shape(), (Shape{co}));
  EXPECT_EQ(s.s_in.shape(), (Shape{ci}));
}

TEST(CpAls, RecoversRandomRankRTensor) {
  struct Case {
    int64_t co, ci, kh, kw, r;
  };
  for (const Case c : {Case{8, 6, 3, 3, 4}, Case{10, 7, 3, 3, 3}, Case{6, 5, 3, 1, 2}}) {
    const std::vector<double> a = ref::gaussian(c.co, c.r, 11), b = ref::gaussian(c.ci, c.r, 12),
                              h = ref::gaussian(c.kh, c.r, 13), x = ref::gaussian(c.kw, c.r, 14);
    const std::vector<double> w = ref::cp_reconstruct(a, b, h, x, c.co, c.ci, c.kh, c.kw, c.r);
    const lowrank::CpResult cp = lowrank::cp_als(make(w, {c.co, c.ci, c.kh, c.kw}), c.r);
    EXPECT_EQ(cp.out.shape(), (Shape{c.co, c.r}));
    EXPECT_EQ(cp.w.shape(), (Shape{c.kw, c.r}));
    const std::vector<double> rec = ref::cp_reconstruct(
        cp.out.to_vector<double>(), cp.in.to_vector<double>(), cp.h.to_vector<double>(),
        cp.w.to_vector<double>(), c.co, c.ci, c.kh, c.kw, c.r);
    // The bound for exact recovery in f64.
    EXPECT_LT(ref::relative_distance(rec, w), 1e-5) << "iterations " << cp.iterations;
    EXPECT_NEAR(cp.relative_error, ref::relative_distance(rec, w), 1e-9);  // same residual
    EXPECT_TRUE(testing::all_close(lowrank::cp_reconstruct(cp), make(rec, {c.co, c.ci, c.kh, c.kw}),
                                   0.0,
                                   1e-12));  // two f64 evaluations of one sum
  }
}

TEST(CpAls, F32KernelGivesF32Factors) {
  const std::vector<double> w =
      ref::cp_reconstruct(ref::gaussian(5, 2, 1), ref::gaussian(4, 2, 2), ref::gaussian(3, 2, 3),
                          ref::gaussian(3, 2, 4), 5, 4, 3, 3, 2);
  const lowrank::CpResult cp = lowrank::cp_als(make(w, {5, 4, 3, 3}, DType::kF32), 2);
  EXPECT_EQ(cp.out.dtype(), DType::kF32);
  EXPECT_LT(cp.relative_error, 1e-5);  // computed in double from f32 data of an exact rank-2 tensor
}

TEST(TensorDecomp, BadInput) {
  const Tensor w = make(ref::gaussian(4 * 3 * 3 * 3, 1, 1), {4, 3, 3, 3});
  expect_error(
      [&] {
        lowrank::tucker2(w.reshape({4, 27}), 1, 1);
      },
      ErrorCode::kInvalidArgument, "tucker2");
  expect_error([&] { lowrank::tucker2(w, 0, 1); }, ErrorCode::kInvalidArgument, "tucker2");
  expect_error([&] { lowrank::tucker2(w, 5, 1); }, ErrorCode::kInvalidArgument, "tucker2");
  expect_error([&] { lowrank::tucker2(w, 2, 4); }, ErrorCode::kInvalidArgument, "tucker2");
  expect_error(
      [&] {
        lowrank::tucker2(Tensor::zeros({0, 3, 3, 3}, DType::kF64), 1, 1);
      },
      ErrorCode::kInvalidArgument, "tucker2");
  std::vector<double> nan = ref::gaussian(4 * 3 * 3 * 3, 1, 1);
  nan[5] = std::numeric_limits<double>::quiet_NaN();
  expect_error(
      [&] {
        lowrank::tucker2(make(nan, {4, 3, 3, 3}), 1, 1);
      },
      ErrorCode::kInvalidArgument, "tucker2");
  expect_error(
      [&] {
        lowrank::cp_als(make(nan, {4, 3, 3, 3}), 2);
      },
      ErrorCode::kInvalidArgument, "cp_als");
  expect_error([&] { lowrank::cp_als(w, 0); }, ErrorCode::kInvalidArgument, "cp_als");
  expect_error([&] { lowrank::cp_als(w, 2, lowrank::CpOptions{.max_iters = 0}); },
               ErrorCode::kInvalidArgument, "cp_als");
  expect_error([&] { lowrank::cp_als(w.to(DType::kI32), 2); }, ErrorCode::kInvalidArgument,
               "cp_als");
}

}  // namespace
}  // namespace frugal
