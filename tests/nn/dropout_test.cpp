// Dropout on the CPU: the mask against the scalar Philox reference (exact), its drop fraction
// against p (binomial bound), inverted scaling, evaluation identity, seeding and step counter,
// thread-count invariance, backward (closed form and finite differences) and bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "basic_test_util.hpp"
#include "frugal/ref/nn_basic.hpp"

namespace frugal::nn {
namespace {

using frugal::testing::all_close;
using frugal::testing::all_equal;
using testing::expect_error;
using testing::random_f64;

double kept_fraction(const Tensor& mask) {
  double kept = 0;
  for (double v : mask.to_vector<double>()) kept += v;
  return kept / static_cast<double>(mask.numel());
}

TEST(Dropout, MaskMatchesPhiloxReferenceAndScales) {
  for (DType dt : {DType::kF32, DType::kF64}) {
    const Tensor x =
        frugal::testing::random_uniform({7, 33}, 1).to(dt);  // 231: not a multiple of 4
    const double p = 0.3;
    const DropoutResult r = dropout(x, p, 1234, 5);
    EXPECT_EQ(r.mask.dtype(), DType::kU8);
    EXPECT_TRUE(all_equal(r.mask, ref::dropout_mask(x.shape(), p, 1234, 5)));
    const auto xv = x.to_vector<double>();
    const auto mv = r.mask.to_vector<double>();
    std::vector<double> want(xv.size());
    for (std::size_t i = 0; i < xv.size(); ++i) want[i] = mv[i] * xv[i] / (1 - p);
    // One product with the scale rounded to the dtype: within 2 ulp.
    const double tol = dt == DType::kF32 ? 2.5e-7 : 5e-16;
    EXPECT_TRUE(all_close(r.output.to_vector<double>(), want, tol, 0));
  }
}

TEST(Dropout, DropFractionIsNearP) {
  const int64_t n = 1 << 18;
  const Tensor x = Tensor::full({n}, 1.0);
  for (double p : {0.1, 0.5, 0.9}) {
    const DropoutResult r = dropout(x, p, 77, 0);
    // The kept count is Binomial(n, 1 - p): its standard deviation as a fraction is
    // sqrt(p (1 - p) / n) <= 0.001 at n = 2^18; 6 sigma bounds a false failure below 1e-8.
    EXPECT_NEAR(kept_fraction(r.mask), 1 - p, 6 * std::sqrt(p * (1 - p) / n)) << "p = " << p;
  }
  // Different steps draw independent masks: they agree on a fraction p^2 + (1 - p)^2 of elements.
  const double p = 0.5;
  const auto m0 = dropout(x, p, 77, 0).mask.to_vector<double>();
  const auto m1 = dropout(x, p, 77, 1).mask.to_vector<double>();
  double agree = 0;
  for (std::size_t i = 0; i < m0.size(); ++i) agree += m0[i] == m1[i];
  EXPECT_NEAR(agree / n, 0.5, 6 * std::sqrt(0.25 / n));
}

TEST(Dropout, SameSeedSameMaskAndThreadCountInvariant) {
  const Tensor x = frugal::testing::random_uniform({300, 301}, 2);
  const DropoutResult a = dropout(x, 0.4, 9, 3, testing::threads(1));
  const DropoutResult b = dropout(x, 0.4, 9, 3, testing::threads(2));
  EXPECT_TRUE(testing::same_bits(a.mask, b.mask));
  EXPECT_TRUE(testing::same_bits(a.output, b.output));
  EXPECT_FALSE(testing::same_bits(a.mask, dropout(x, 0.4, 10, 3).mask));  // other seed
  EXPECT_FALSE(testing::same_bits(a.mask, dropout(x, 0.4, 9, 4).mask));   // other step
  // A step above 2^32 uses the counter's top word.
  const uint64_t big = (uint64_t{1} << 32) + 3;
  EXPECT_TRUE(all_equal(dropout(x, 0.4, 9, big).mask, ref::dropout_mask(x.shape(), 0.4, 9, big)));
  EXPECT_FALSE(testing::same_bits(a.mask, dropout(x, 0.4, 9, big).mask));
}

TEST(Dropout, LayerAdvancesStepInTrainingAndIsIdentityInEval) {
  Dropout d(0.25, 42);
  const Tensor x = frugal::testing::random_uniform({64, 10}, 3);
  EXPECT_EQ(d.step(), 0u);
  const Tensor y0 = d.forward(x);
  EXPECT_EQ(d.step(), 1u);
  const Tensor y1 = d.forward(x);
  EXPECT_EQ(d.step(), 2u);
  EXPECT_TRUE(testing::same_bits(y0, dropout(x, 0.25, 42, 0).output));
  EXPECT_TRUE(testing::same_bits(y1, dropout(x, 0.25, 42, 1).output));
  // Same seed, same sequence of masks.
  Dropout e(0.25, 42);
  EXPECT_TRUE(testing::same_bits(e.forward(x), y0));
  d.eval();
  const Tensor ye = d.forward(x);
  EXPECT_EQ(ye.storage(), x.storage());  // the identity, no copy
  EXPECT_EQ(d.step(), 2u);
  const Tensor g = frugal::testing::random_uniform({64, 10}, 4);
  EXPECT_EQ(d.backward(g).storage(), g.storage());
  d.train();
  d.set_step(0);
  EXPECT_TRUE(testing::same_bits(d.forward(x), y0));
  // p = 0 is the identity in training too.
  Dropout z(0.0);
  EXPECT_EQ(z.forward(x).storage(), x.storage());
}

TEST(Dropout, BackwardAppliesTheSavedMask) {
  Dropout d(0.5, 8);
  Tensor x = random_f64({5, 6}, 5);
  const Tensor w = random_f64({5, 6}, 6);
  d.forward(x);
  const Tensor mask = ref::dropout_mask(x.shape(), 0.5, 8, 0);
  d.forward(random_f64({5, 6}, 7));  // a second forward: backward must use ITS mask (step 1)
  const Tensor g = d.backward(w);
  const auto m1 = ref::dropout_mask(x.shape(), 0.5, 8, 1).to_vector<double>();
  const auto wv = w.to_vector<double>();
  std::vector<double> want(wv.size());
  for (std::size_t i = 0; i < wv.size(); ++i) want[i] = m1[i] * wv[i] * 2.0;
  EXPECT_TRUE(all_close(g.to_vector<double>(), want, 1e-15, 0));  // exact up to one rounding
  // Finite differences through the functional form with a fixed (seed, step): dropout is linear
  // in x, so central differences are exact up to rounding (~1e-10 at h = 1e-5).
  const Tensor gx = dropout_backward(w, mask, 0.5);
  EXPECT_TRUE(all_close(gx,
                        testing::numeric_grad(
                            x, [&] { return dropout(x, 0.5, 8, 0).output; }, w),
                        1e-8, 1e-8));
}

TEST(Dropout, BadInput) {
  for (double p : {-0.1, 1.0, 1.5, std::numeric_limits<double>::quiet_NaN()}) {
    expect_error([&] { Dropout d(p); }, ErrorCode::kInvalidArgument, "Dropout");
    expect_error([&] { dropout(Tensor::zeros({4}), p, 0, 0); }, ErrorCode::kInvalidArgument,
                 "dropout");
  }
  expect_error([] { dropout(Tensor::zeros({4}, DType::kI32), 0.5, 0, 0); },
               ErrorCode::kInvalidArgument, "dropout");
  expect_error([] { dropout_backward(Tensor::zeros({4}), Tensor::zeros({4}), 0.5); },
               ErrorCode::kInvalidArgument, "dropout_backward");  // mask must be u8
  expect_error([] { dropout_backward(Tensor::zeros({4}), Tensor::zeros({3}, DType::kU8), 0.5); },
               ErrorCode::kInvalidArgument, "dropout_backward");
  Dropout d(0.5);
  expect_error([&] { d.backward(Tensor::zeros({4})); }, ErrorCode::kInvalidArgument,
               "Dropout::backward");
  d.forward(Tensor::zeros({4}));
  expect_error([&] { d.backward(Tensor::zeros({5})); }, ErrorCode::kInvalidArgument,
               "Dropout::backward");
  EXPECT_EQ(dropout(Tensor::zeros({0}), 0.5, 0, 0).output.numel(), 0);
}

}  // namespace
}  // namespace frugal::nn
