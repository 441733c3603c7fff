// Core ops on the CPU: elementwise, reductions, argmax / topk and GEMM, checked against the scalar
// references in frugal/ref/ops.hpp and against closed forms; thread-count determinism; bad input.
#include "frugal/ref/ops.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "frugal/core.hpp"
#include "support/check.hpp"
#include "support/tolerance.hpp"

namespace frugal {
namespace {

using testing::all_close;
using testing::all_equal;
using testing::random_uniform;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
const std::vector<DType> kFloatTypes = {DType::kF32, DType::kF64, DType::kF16, DType::kBF16};

Tensor rand(Shape shape, uint32_t seed, DType dtype = DType::kF32, float lo = -1.f,
            float hi = 1.f) {
  return random_uniform(shape, seed, lo, hi).to(dtype);
}

/// One unit in the last place of `t` relative to 1: f16 / bf16 / f32 / f64 epsilon.
double ulp(DType t) {
  switch (t) {
    case DType::kF16:
      return std::ldexp(1.0, -10);
    case DType::kBF16:
      return std::ldexp(1.0, -7);
    case DType::kF64:
      return std::ldexp(1.0, -52);
    default:
      return std::ldexp(1.0, -23);
  }
}

/// A (rows, cols) view of `dtype` that is not contiguous: the middle of a wider matrix.
Tensor strided(int64_t rows, int64_t cols, uint32_t seed, DType dtype) {
  return rand({rows, cols + 5}, seed, dtype).slice(1, 2, cols + 2);
}

using testing::expect_error;

// ---- elementwise --------------------------------------------------------------------------------

TEST(OpsElementwise, MatchReferenceForEveryDtypeAndShape) {
  for (DType t : kFloatTypes) {
    for (Shape shape :
         {Shape{}, Shape{1}, Shape{7}, Shape{3, 5}, Shape{33, 1025}, Shape{2, 3, 70001}}) {
      const Tensor a = rand(shape, 1, t);
      const Tensor b = rand(shape, 2, t);
      // The CPU computes in float (double for f64) and rounds once to the dtype; the reference
      // rounds the exact double result once. They can differ by one ulp for f16 / bf16 (double
      // rounding through float) and for f32 sums whose exact value needs more than 53 bits.
      const double tol = ulp(t);
      EXPECT_TRUE(all_close(add(a, b), ref::add(a, b), tol, 0)) << dtype_name(t) << shape;
      EXPECT_TRUE(all_close(sub(a, b), ref::sub(a, b), tol, 0)) << dtype_name(t) << shape;
      EXPECT_TRUE(all_close(mul(a, b), ref::mul(a, b), tol, 0)) << dtype_name(t) << shape;
      // 0.375 is exact in every dtype, so x * alpha rounds once on both sides.
      EXPECT_TRUE(all_close(scale(a, 0.375), ref::scale(a, 0.375), tol, 0)) << dtype_name(t);
      Tensor y = b.clone();
      axpy(-1.5, a, y);
      // alpha * x + y rounds twice in float (product, then sum) against once in the reference;
      // atol covers cancellation where the result is near zero.
      EXPECT_TRUE(all_close(y, ref::axpy(-1.5, a, b), 2 * tol, 2 * tol)) << dtype_name(t);
      EXPECT_EQ(add(a, b).dtype(), t);
    }
  }
}

TEST(OpsElementwise, StridedInputsAndOutputs) {
  for (DType t : kFloatTypes) {
    const Tensor a = strided(37, 19, 3, t);
    const Tensor b = rand({19, 37}, 4, t).t();  // a transposed view
    ASSERT_FALSE(a.is_contiguous());
    ASSERT_FALSE(b.is_contiguous());
    const double tol = ulp(t);  // as in MatchReferenceForEveryDtypeAndShape
    EXPECT_TRUE(all_close(add(a, b), ref::add(a, b), tol, 0)) << dtype_name(t);
    EXPECT_TRUE(all_close(mul(a, b), ref::mul(a, b), tol, 0)) << dtype_name(t);
    EXPECT_TRUE(all_close(scale(b, 0.375), ref::scale(b, 0.375), tol, 0)) << dtype_name(t);
    // axpy into a strided y writes through the view and leaves the rest of the owner alone.
    Tensor owner = rand({37, 24}, 5, t);
    const Tensor before = owner.clone();
    Tensor y = owner.slice(1, 2, 21);
    const Tensor want = ref::axpy(2.0, a, y);
    axpy(2.0, a, y);
    EXPECT_TRUE(all_close(y, want, 2 * tol, 2 * tol)) << dtype_name(t);
    EXPECT_TRUE(all_equal(owner.slice(1, 0, 2), before.slice(1, 0, 2)));
    EXPECT_TRUE(all_equal(owner.slice(1, 21, 24), before.slice(1, 21, 24)));
  }
}

TEST(OpsElementwise, ClosedForms) {
  const Tensor a = Tensor::from_vector<float>({1, 2, 3, 4}, {2, 2});
  const Tensor b = Tensor::from_vector<float>({10, 20, 30, 40}, {2, 2});
  EXPECT_EQ(add(a, b).to_vector<float>(), (std::vector<float>{11, 22, 33, 44}));
  EXPECT_EQ(sub(a, b).to_vector<float>(), (std::vector<float>{-9, -18, -27, -36}));
  EXPECT_EQ(mul(a, b).to_vector<float>(), (std::vector<float>{10, 40, 90, 160}));
  EXPECT_EQ(scale(a, -2).to_vector<float>(), (std::vector<float>{-2, -4, -6, -8}));
  Tensor y = b.clone();
  axpy(0.5, a, y);
  EXPECT_EQ(y.to_vector<float>(), (std::vector<float>{10.5, 21, 31.5, 42}));
  const Tensor e = Tensor::empty({0, 3});
  EXPECT_EQ(add(e, e).shape(), (Shape{0, 3}));
}

// ---- reductions ---------------------------------------------------------------------------------

// Whole-tensor and per-axis sums accumulate in double; the reference sums in double in another
// order, so after rounding to f32 they may differ by one f32 ulp (f64 outputs: a few f64 ulps of
// the sum of magnitudes, hence the atol).
double sum_rtol(DType t) { return t == DType::kF64 ? 1e-12 : 2 * ulp(DType::kF32); }
double sum_atol(DType t, int64_t n) {
  return t == DType::kF64 ? 1e-15 * static_cast<double>(n) : 1e-30;
}

TEST(OpsReduce, WholeTensorMatchesReference) {
  const int64_t odd = 3 * (int64_t{1} << 14) + 17;  // not a multiple of the CPU chunk size
  for (DType t : kFloatTypes) {
    for (Shape shape : {Shape{}, Shape{1}, Shape{5, 3}, Shape{odd}, Shape{3, 1000, 67}}) {
      const Tensor x = rand(shape, 11, t, -3.f, 2.f);
      const int64_t n = x.numel();
      // min / max / abs_max select an element: exact.
      EXPECT_TRUE(all_equal(min(x), ref::reduce(x, ref::Reduce::kMin, true))) << dtype_name(t);
      EXPECT_TRUE(all_equal(max(x), ref::reduce(x, ref::Reduce::kMax, true))) << dtype_name(t);
      EXPECT_TRUE(all_equal(abs_max(x), ref::reduce(x, ref::Reduce::kAbsMax, true)));
      EXPECT_TRUE(
          all_close(sum(x), ref::reduce(x, ref::Reduce::kSum, true), sum_rtol(t), sum_atol(t, n)))
          << dtype_name(t) << shape;
      EXPECT_TRUE(
          all_close(mean(x), ref::reduce(x, ref::Reduce::kMean, true), sum_rtol(t), sum_atol(t, n)))
          << dtype_name(t) << shape;
      EXPECT_EQ(min(x).rank(), 0);
      EXPECT_EQ(min(x).dtype(), t);
      EXPECT_EQ(sum(x).dtype(), t == DType::kF64 ? DType::kF64 : DType::kF32);
    }
  }
}

TEST(OpsReduce, PerAxisMatchesReference) {
  for (DType t : kFloatTypes) {
    for (Shape shape : {Shape{6}, Shape{7, 300}, Shape{7, 13, 5}, Shape{2, 3, 4, 261}}) {
      const Tensor x = rand(shape, 12, t, -2.f, 3.f);
      for (int axis = -shape.rank(); axis < shape.rank(); ++axis) {
        for (bool keep : {false, true}) {
          const auto want = [&](ref::Reduce k) { return ref::reduce(x, k, false, axis, keep); };
          EXPECT_TRUE(all_equal(min(x, axis, keep), want(ref::Reduce::kMin)));
          EXPECT_TRUE(all_equal(max(x, axis, keep), want(ref::Reduce::kMax)));
          EXPECT_TRUE(all_equal(abs_max(x, axis, keep), want(ref::Reduce::kAbsMax)));
          const int64_t len = x.dim(axis);
          EXPECT_TRUE(
              all_close(sum(x, axis, keep), want(ref::Reduce::kSum), sum_rtol(t), sum_atol(t, len)))
              << dtype_name(t) << shape << " axis " << axis;
          EXPECT_TRUE(all_close(mean(x, axis, keep), want(ref::Reduce::kMean), sum_rtol(t),
                                sum_atol(t, len)))
              << dtype_name(t) << shape << " axis " << axis;
        }
      }
    }
  }
}

TEST(OpsReduce, StridedInput) {
  const Tensor x = strided(40, 33, 13, DType::kF32).t();  // (33, 40), neither row- nor col-major
  EXPECT_TRUE(all_equal(max(x), ref::reduce(x, ref::Reduce::kMax, true)));
  EXPECT_TRUE(all_equal(min(x, 1), ref::reduce(x, ref::Reduce::kMin, false, 1)));
  // As in WholeTensorMatchesReference.
  EXPECT_TRUE(
      all_close(sum(x, 0), ref::reduce(x, ref::Reduce::kSum, false, 0), sum_rtol(DType::kF32), 0));
  EXPECT_TRUE(all_close(sum(x), ref::reduce(x, ref::Reduce::kSum, true), sum_rtol(DType::kF32), 0));
}

TEST(OpsReduce, ClosedForms) {
  // 1 + 2 + ... + n = n (n + 1) / 2, exact in f32 for n = 4096 (8390656 < 2^24) and in f64.
  for (int64_t n : {int64_t{1}, int64_t{4096}}) {
    std::vector<float> v(static_cast<std::size_t>(n));
    std::iota(v.begin(), v.end(), 1.f);
    const Tensor x = Tensor::from_vector(v, {n});
    EXPECT_EQ(sum(x).to_vector<double>()[0], static_cast<double>(n * (n + 1) / 2));
    EXPECT_EQ(mean(x).to_vector<double>()[0], static_cast<double>(n + 1) / 2);
    EXPECT_EQ(max(x).to_vector<double>()[0], static_cast<double>(n));
    EXPECT_EQ(min(x).to_vector<double>()[0], 1.0);
  }
  const int64_t n = 1000003;
  std::vector<double> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 1.0);
  EXPECT_EQ(sum(Tensor::from_vector(v, {n})).to_vector<double>()[0], double(n) * (n + 1) / 2);
  // Rows of [[1 -7 3] [4 5 -6]].
  const Tensor m = Tensor::from_vector<float>({1, -7, 3, 4, 5, -6}, {2, 3});
  EXPECT_EQ(sum(m, 1).to_vector<float>(), (std::vector<float>{-3, 3}));
  EXPECT_EQ(sum(m, 0, true).shape(), (Shape{1, 3}));
  EXPECT_EQ(abs_max(m, 1).to_vector<float>(), (std::vector<float>{7, 6}));
  EXPECT_EQ(abs_max(m).to_vector<float>()[0], 7.f);
  EXPECT_EQ(min(m, 0).to_vector<float>(), (std::vector<float>{1, -7, -6}));
  EXPECT_EQ(mean(m, -1).to_vector<float>(), (std::vector<float>{-1, 1}));
}

TEST(OpsReduce, NaNPropagatesThroughMinMaxAbsMax) {
  const Tensor x = Tensor::from_vector<double>({1, kNaN, -5, 2}, {2, 2});
  EXPECT_TRUE(std::isnan(min(x).to_vector<double>()[0]));
  EXPECT_TRUE(std::isnan(max(x).to_vector<double>()[0]));
  EXPECT_TRUE(std::isnan(abs_max(x).to_vector<double>()[0]));
  EXPECT_TRUE(std::isnan(sum(x).to_vector<double>()[0]));
  // Only the row / column holding the NaN is NaN.
  const auto rows = max(x, 1).to_vector<double>();
  EXPECT_TRUE(std::isnan(rows[0]));
  EXPECT_EQ(rows[1], 2.0);
  const auto cols = min(x, 0).to_vector<double>();
  EXPECT_EQ(cols[0], -5.0);
  EXPECT_TRUE(std::isnan(cols[1]));
}

TEST(OpsReduce, EmptyInputs) {
  const Tensor e = Tensor::empty({0});
  EXPECT_EQ(sum(e).to_vector<float>()[0], 0.f);
  expect_error([&] { min(e); }, ErrorCode::kInvalidArgument, "min");
  expect_error([&] { max(e); }, ErrorCode::kInvalidArgument, "max");
  expect_error([&] { abs_max(e); }, ErrorCode::kInvalidArgument, "abs_max");
  expect_error([&] { mean(e); }, ErrorCode::kInvalidArgument, "mean");
  const Tensor e2 = Tensor::empty({3, 0});
  EXPECT_EQ(sum(e2, 1).to_vector<float>(), (std::vector<float>{0, 0, 0}));
  EXPECT_EQ(max(e2, 0).shape(), (Shape{0}));  // nothing to reduce into: an empty result
  expect_error([&] { max(e2, 1); }, ErrorCode::kInvalidArgument, "max");
  expect_error([&] { mean(e2, 1); }, ErrorCode::kInvalidArgument, "mean");
  expect_error([&] { argmax(e2, 1); }, ErrorCode::kInvalidArgument, "argmax");
}

TEST(OpsReduce, ResultsDoNotDependOnThreadCount) {
  const Tensor x = rand({1 << 20 | 37}, 21, DType::kF32, -1.f, 3.f);
  const Tensor m = rand({513, 1031}, 22, DType::kF32);
  ExecContext one, two;
  one.num_threads = 1;
  two.num_threads = 2;
  // Bit-exact: the summation order is fixed by the chunking, not by the scheduler.
  EXPECT_TRUE(all_equal(sum(x, one), sum(x, two)));
  EXPECT_TRUE(all_equal(mean(x, one), mean(x, two)));
  EXPECT_TRUE(all_equal(sum(m, 0, false, one), sum(m, 0, false, two)));
  EXPECT_TRUE(all_equal(sum(m, 1, false, one), sum(m, 1, false, two)));
  EXPECT_TRUE(all_equal(max(x, one), max(x, two)));
  const Tensor a = rand({300, 257}, 23);
  const Tensor b = rand({257, 190}, 24);
  EXPECT_TRUE(all_equal(gemm(a, b, {}, one), gemm(a, b, {}, two)));
  EXPECT_TRUE(all_equal(topk(m, 5, 1, true, one).indices, topk(m, 5, 1, true, two).indices));
}

// ---- argmax / topk ------------------------------------------------------------------------------

TEST(OpsSelect, ArgmaxMatchesReference) {
  for (DType t : kFloatTypes) {
    for (Shape shape : {Shape{9}, Shape{5, 300}, Shape{4, 7, 3}, Shape{2, 600, 3}}) {
      // Few distinct values so that ties are common (bf16 rounds many of them together).
      const Tensor x = random_uniform(shape, 31, -4.f, 4.f).to(DType::kI32).to(t);
      for (int axis = 0; axis < shape.rank(); ++axis) {
        EXPECT_TRUE(all_equal(argmax(x, axis), ref::argmax(x, axis))) << dtype_name(t) << shape;
        EXPECT_TRUE(all_equal(argmax(x, axis, true), ref::argmax(x, axis, true)));
      }
    }
  }
}

TEST(OpsSelect, ArgmaxTiesAndNaN) {
  EXPECT_EQ(argmax(Tensor::from_vector<float>({1, 3, 3, 2}, {4}), 0).to_vector<int64_t>()[0], 1);
  const Tensor n = Tensor::from_vector<double>({1, kNaN, 5, kNaN}, {4});
  EXPECT_EQ(argmax(n, 0).to_vector<int64_t>()[0], 1);  // the first NaN, like torch.argmax
  const Tensor m = Tensor::from_vector<float>({1, 9, 9, 8, 2, 7}, {2, 3});
  EXPECT_EQ(argmax(m, 1).to_vector<int64_t>(), (std::vector<int64_t>{1, 0}));
  EXPECT_EQ(argmax(m, 0).to_vector<int64_t>(), (std::vector<int64_t>{1, 0, 0}));
  EXPECT_EQ(argmax(m, -1, true).shape(), (Shape{2, 1}));
  EXPECT_EQ(argmax(m, 0).dtype(), DType::kI64);
}

TEST(OpsSelect, TopkMatchesReference) {
  for (DType t : kFloatTypes) {
    for (Shape shape : {Shape{9}, Shape{5, 300}, Shape{4, 7, 3}, Shape{3, 1000}}) {
      const Tensor x = random_uniform(shape, 41, -20.f, 20.f).to(DType::kI32).to(t);
      for (int axis = 0; axis < shape.rank(); ++axis) {
        const int64_t len = shape[axis];
        for (int64_t k : {int64_t{1}, std::min<int64_t>(3, len), len}) {
          for (bool largest : {true, false}) {
            const TopK got = topk(x, k, axis, largest);
            const TopK want = ref::topk(x, k, axis, largest);
            EXPECT_TRUE(all_equal(got.values, want.values)) << dtype_name(t) << shape << k;
            EXPECT_TRUE(all_equal(got.indices, want.indices)) << dtype_name(t) << shape << k;
          }
        }
      }
    }
  }
}

TEST(OpsSelect, TopkClosedForm) {
  const Tensor x = Tensor::from_vector<float>({3, 1, 4, 1, 5, 9, 2, 6}, {8});
  TopK hi = topk(x, 3);
  EXPECT_EQ(hi.values.to_vector<float>(), (std::vector<float>{9, 6, 5}));
  EXPECT_EQ(hi.indices.to_vector<int64_t>(), (std::vector<int64_t>{5, 7, 4}));
  TopK lo = topk(x, 3, 0, false);
  EXPECT_EQ(lo.values.to_vector<float>(), (std::vector<float>{1, 1, 2}));
  EXPECT_EQ(lo.indices.to_vector<int64_t>(), (std::vector<int64_t>{1, 3, 6}));  // ties by index
  const Tensor n = Tensor::from_vector<double>({2, kNaN, 7, -1}, {4});
  TopK nh = topk(n, 2);
  EXPECT_EQ(nh.indices.to_vector<int64_t>(), (std::vector<int64_t>{1, 2}));  // NaN is largest
  TopK nl = topk(n, 4, 0, false);
  EXPECT_EQ(nl.indices.to_vector<int64_t>(), (std::vector<int64_t>{3, 0, 2, 1}));  // NaN last
  // Rows of a strided (transposed) matrix.
  const Tensor m = Tensor::from_vector<float>({1, 5, 2, 8, 3, 0}, {2, 3}).t();  // (3, 2)
  TopK c = topk(m, 2, 0);
  EXPECT_EQ(c.values.to_vector<float>(), (std::vector<float>{5, 8, 2, 3}));
  EXPECT_EQ(c.indices.to_vector<int64_t>(), (std::vector<int64_t>{1, 0, 2, 1}));
}

// ---- GEMM ---------------------------------------------------------------------------------------

/// Tolerance of a GEMM with inner dimension k against the double reference: f32 / f64 accumulate
/// k products of magnitude <= 1, each rounding at most one ulp of the running sum; f16 / bf16
/// outputs also round once to their own precision.
double gemm_atol(DType t, int64_t k) {
  const double acc = t == DType::kF64 ? ulp(DType::kF64) : ulp(DType::kF32);
  return acc * static_cast<double>(k) + (t == DType::kF16 || t == DType::kBF16 ? ulp(t) : 0.0);
}

TEST(OpsGemm, MatchesReferenceForShapesDtypesAndTransposes) {
  const std::vector<std::array<int64_t, 3>> shapes = {{1, 1, 1},    {2, 3, 4},      {17, 33, 9},
                                                      {64, 64, 64}, {130, 70, 257}, {257, 129, 65}};
  for (DType t : kFloatTypes) {
    for (const auto& [m, n, k] : shapes) {
      for (int tr = 0; tr < 4; ++tr) {
        GemmOptions opt;
        opt.trans_a = tr & 1;
        opt.trans_b = tr & 2;
        opt.alpha = tr == 3 ? -0.5 : 1.0;
        const Tensor a = opt.trans_a ? rand({k, m}, 51, t) : rand({m, k}, 51, t);
        const Tensor b = opt.trans_b ? rand({n, k}, 52, t) : rand({k, n}, 52, t);
        const Tensor got = gemm(a, b, opt);
        EXPECT_EQ(got.dtype(), t);
        EXPECT_EQ(got.shape(), (Shape{m, n}));
        const double tol = gemm_atol(t, k);
        EXPECT_TRUE(all_close(got, ref::gemm(a, b, opt, Tensor(), t), tol, tol))
            << dtype_name(t) << " " << m << "x" << n << "x" << k << " trans " << tr;
      }
    }
  }
}

TEST(OpsGemm, StridedOperandsAndOutputs) {
  const int64_t m = 45, n = 38, k = 29;
  const double tol = gemm_atol(DType::kF32, k);        // as in MatchesReference...
  const Tensor a_rm = strided(m, k, 61, DType::kF32);  // row-major with leading dim k + 5
  const Tensor a_cm = rand({k, m}, 62).t();            // column-major (m, k)
  const Tensor b_rm = strided(k, n, 63, DType::kF32);
  const Tensor b_cm = strided(n, k, 64, DType::kF32).t();  // column-major with leading dim k + 5
  for (const Tensor& a : {a_rm, a_cm}) {
    for (const Tensor& b : {b_rm, b_cm}) {
      EXPECT_TRUE(all_close(matmul(a, b), ref::gemm(a, b, {}, Tensor(), DType::kF32), tol, tol));
      for (bool ta : {false, true}) {
        GemmOptions opt;
        opt.trans_a = ta;
        const Tensor aa = ta ? a.t() : a;
        EXPECT_TRUE(
            all_close(gemm(aa, b, opt), ref::gemm(aa, b, opt, Tensor(), DType::kF32), tol, tol));
      }
    }
  }
  {
    // An operand that is neither row- nor column-major (every other element of a buffer).
    std::vector<float> buf(static_cast<std::size_t>(2 * m * k));
    for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<float>(i % 7) - 3.f;
    const Tensor a =
        Tensor::wrap_strided(buf.data(), {m, k}, {2 * k, 2}, DType::kF32, Device::cpu());
    EXPECT_TRUE(
        all_close(matmul(a, b_cm), ref::gemm(a, b_cm, {}, Tensor(), DType::kF32), tol, tol));
  }
  // Outputs: a slice of a wider matrix, a transposed view, and a layout that is neither.
  GemmOptions opt;
  opt.alpha = 2.0;
  opt.beta = -0.5;
  {
    Tensor owner = rand({m, n + 7}, 65);
    Tensor c = owner.slice(1, 3, n + 3);
    const Tensor want = ref::gemm(a_cm, b_rm, opt, c, DType::kF32);
    gemm_into(a_cm, b_rm, c, opt);
    EXPECT_TRUE(all_close(c, want, 4 * tol, 4 * tol));  // alpha = 2 doubles the product's error
  }
  {
    Tensor owner = rand({n, m}, 66);
    Tensor c = owner.t();
    const Tensor want = ref::gemm(a_rm, b_cm, opt, c, DType::kF32);
    gemm_into(a_rm, b_cm, c, opt);
    EXPECT_TRUE(all_close(c, want, 4 * tol, 4 * tol));  // as above
  }
  {
    std::vector<float> buf(static_cast<std::size_t>(2 * m * n), 0.25f);
    Tensor c = Tensor::wrap_strided(buf.data(), {m, n}, {2 * n, 2}, DType::kF32, Device::cpu());
    const Tensor want = ref::gemm(a_rm, b_rm, opt, c, DType::kF32);
    gemm_into(a_rm, b_rm, c, opt);
    EXPECT_TRUE(all_close(c, want, 4 * tol, 4 * tol));  // as above
    EXPECT_EQ(buf[1], 0.25f);                           // the gaps are untouched
  }
}

TEST(OpsGemm, ClosedForms) {
  const Tensor a = Tensor::from_vector<float>({1, 2, 3, 4}, {2, 2});
  const Tensor b = Tensor::from_vector<float>({5, 6, 7, 8}, {2, 2});
  EXPECT_EQ(matmul(a, b).to_vector<float>(), (std::vector<float>{19, 22, 43, 50}));
  GemmOptions tt;
  tt.trans_a = tt.trans_b = true;
  // A^T B^T = (B A)^T = [[23 31] [34 46]].
  EXPECT_EQ(gemm(a, b, tt).to_vector<float>(), (std::vector<float>{23, 31, 34, 46}));
  for (DType t : kFloatTypes) {
    const Tensor x = rand({37, 37}, 71, t);
    std::vector<double> eye(37 * 37, 0.0);
    for (int i = 0; i < 37; ++i) eye[i * 38] = 1.0;
    const Tensor id = Tensor::from_vector(eye, {37, 37}).to(t);
    EXPECT_TRUE(all_equal(matmul(x, id), x)) << dtype_name(t);
    EXPECT_TRUE(all_equal(matmul(id, x), x)) << dtype_name(t);
  }
  // K = 0: an empty sum; with beta the old C is scaled.
  const Tensor ek = Tensor::empty({3, 0});
  const Tensor ekt = Tensor::empty({0, 4});
  EXPECT_EQ(matmul(ek, ekt).to_vector<float>(), std::vector<float>(12, 0.f));
  Tensor c = Tensor::full({3, 4}, 2.0);
  GemmOptions half;
  half.beta = 0.5;
  gemm_into(ek, ekt, c, half);
  EXPECT_EQ(c.to_vector<float>(), std::vector<float>(12, 1.f));
  EXPECT_EQ(matmul(Tensor::empty({0, 5}), rand({5, 3}, 72)).shape(), (Shape{0, 3}));
}

TEST(OpsGemm, BetaZeroIgnoresNaNAndMixedPrecisionOutput) {
  const Tensor a = rand({20, 30}, 81);
  const Tensor b = rand({30, 10}, 82);
  Tensor c = Tensor::full({20, 10}, kNaN);
  gemm_into(a, b, c);
  const double tol = gemm_atol(DType::kF32, 30);  // as in MatchesReference...
  EXPECT_TRUE(all_close(c, ref::gemm(a, b, {}, Tensor(), DType::kF32), tol, tol));
  for (DType t : {DType::kF16, DType::kBF16}) {
    const Tensor ah = a.to(t), bh = b.to(t);
    Tensor c32 = rand({20, 10}, 83);
    GemmOptions opt;
    opt.beta = 1.0;
    const Tensor want = ref::gemm(ah, bh, opt, c32, DType::kF32);
    gemm_into(ah, bh, c32, opt);
    // f32 output: only the f32 accumulation differs from the reference.
    EXPECT_TRUE(all_close(c32, want, tol, tol)) << dtype_name(t);
  }
}

// ---- bad input ----------------------------------------------------------------------------------

/// A view claiming to live on cuda:0 (never dereferenced: validation rejects it first).
ConstTensorView on_cuda(const Tensor& t) {
  ConstTensorView v = t.cview();
  v.device = Device::cuda(0);
  return v;
}

TEST(OpsBadInput, Elementwise) {
  const Tensor a = rand({2, 3}, 1);
  const Tensor b3 = rand({3, 2}, 2);
  const Tensor f64 = rand({2, 3}, 3, DType::kF64);
  const Tensor i8 = Tensor::zeros({2, 3}, DType::kI8);
  using Fn = Tensor (*)(ConstTensorView, ConstTensorView, const ExecContext&);
  const std::vector<std::pair<Fn, std::string>> ops = {{&add, "add"}, {&sub, "sub"}, {&mul, "mul"}};
  for (const auto& [fn, name] : ops) {
    expect_error([&] { fn(a, b3, {}); }, ErrorCode::kInvalidArgument, name);
    expect_error([&] { fn(a, f64, {}); }, ErrorCode::kInvalidArgument, name);
    expect_error([&] { fn(i8, i8, {}); }, ErrorCode::kInvalidArgument, name);
    expect_error([&] { fn(a, on_cuda(a), {}); }, ErrorCode::kInvalidArgument, name);
  }
  expect_error([&] { scale(i8, 2.0); }, ErrorCode::kInvalidArgument, "scale");
  Tensor y = rand({2, 3}, 4);
  Tensor yi = Tensor::zeros({2, 3}, DType::kI32);
  expect_error([&] { axpy(1.0, b3, y); }, ErrorCode::kInvalidArgument, "axpy");
  expect_error([&] { axpy(1.0, f64, y); }, ErrorCode::kInvalidArgument, "axpy");
  expect_error([&] { axpy(1.0, yi, yi); }, ErrorCode::kInvalidArgument, "axpy");
  expect_error([&] { axpy(1.0, on_cuda(a), y); }, ErrorCode::kInvalidArgument, "axpy");
}

TEST(OpsBadInput, Reductions) {
  const Tensor x = rand({2, 3}, 1);
  const Tensor i32 = Tensor::zeros({4}, DType::kI32);
  expect_error([&] { sum(i32); }, ErrorCode::kInvalidArgument, "sum");
  expect_error([&] { max(i32, 0); }, ErrorCode::kInvalidArgument, "max");
  expect_error([&] { sum(x, 2); }, ErrorCode::kInvalidArgument, "sum");
  expect_error([&] { mean(x, -3); }, ErrorCode::kInvalidArgument, "mean");
  expect_error([&] { abs_max(x, 5, true); }, ErrorCode::kInvalidArgument, "abs_max");
  expect_error([&] { min(Tensor::full({}, 1.0), 0); }, ErrorCode::kInvalidArgument, "min");
  expect_error([&] { argmax(x, 2); }, ErrorCode::kInvalidArgument, "argmax");
  expect_error([&] { argmax(i32, 0); }, ErrorCode::kInvalidArgument, "argmax");
}

TEST(OpsBadInput, Topk) {
  const Tensor x = rand({4, 5}, 1);
  expect_error([&] { topk(x, 0); }, ErrorCode::kInvalidArgument, "topk");
  expect_error([&] { topk(x, -1); }, ErrorCode::kInvalidArgument, "topk");
  expect_error([&] { topk(x, 6); }, ErrorCode::kInvalidArgument, "topk");
  expect_error([&] { topk(x, 5, 0); }, ErrorCode::kInvalidArgument, "topk");
  expect_error([&] { topk(x, 1, 2); }, ErrorCode::kInvalidArgument, "topk");
  expect_error([&] { topk(Tensor::empty({0}), 1); }, ErrorCode::kInvalidArgument, "topk");
  expect_error([&] { topk(Tensor::zeros({5}, DType::kI64), 1); }, ErrorCode::kInvalidArgument,
               "topk");
  EXPECT_EQ(topk(x, 5, 1).values.shape(), (Shape{4, 5}));  // k == length is fine
}

TEST(OpsBadInput, Gemm) {
  const Tensor a = rand({3, 4}, 1);
  const Tensor b = rand({4, 5}, 2);
  expect_error([&] { matmul(a, a); }, ErrorCode::kInvalidArgument, "gemm");  // 3x4 * 3x4
  expect_error([&] { matmul(rand({3, 4, 1}, 3), b); }, ErrorCode::kInvalidArgument, "gemm");
  expect_error([&] { matmul(a, rand({4}, 3)); }, ErrorCode::kInvalidArgument, "gemm");
  expect_error([&] { matmul(a, b.to(DType::kF64)); }, ErrorCode::kInvalidArgument, "gemm");
  const Tensor i8 = Tensor::zeros({3, 4}, DType::kI8);
  expect_error(
      [&] {
        matmul(i8, Tensor::zeros({4, 5}, DType::kI8));
      },
      ErrorCode::kInvalidArgument, "gemm");
  expect_error([&] { matmul(a, on_cuda(b)); }, ErrorCode::kInvalidArgument, "gemm");
  GemmOptions beta;
  beta.beta = 1.0;
  expect_error([&] { gemm(a, b, beta); }, ErrorCode::kInvalidArgument, "gemm");
  GemmOptions ta;
  ta.trans_a = true;
  expect_error([&] { gemm(a, b, ta); }, ErrorCode::kInvalidArgument, "gemm");  // A^T is 4x3
  Tensor c = Tensor::zeros({3, 5});
  Tensor c_bad = Tensor::zeros({5, 3});
  Tensor c_f64 = Tensor::zeros({3, 5}, DType::kF64);
  expect_error([&] { gemm_into(a, b, c_bad); }, ErrorCode::kInvalidArgument, "gemm_into");
  expect_error([&] { gemm_into(a, b, c_f64); }, ErrorCode::kInvalidArgument, "gemm_into");
  TensorView c_cuda = c.view();
  c_cuda.device = Device::cuda(0);
  expect_error([&] { gemm_into(a, b, c_cuda); }, ErrorCode::kInvalidArgument, "gemm_into");
  // f32 output from f16 inputs is allowed, f16 output from f32 inputs is not.
  Tensor c16 = Tensor::zeros({3, 5}, DType::kF16);
  expect_error([&] { gemm_into(a, b, c16); }, ErrorCode::kInvalidArgument, "gemm_into");
  gemm_into(a.to(DType::kF16), b.to(DType::kF16), c);
}

}  // namespace
}  // namespace frugal
