// SoftmaxCrossEntropy and MSELoss on the CPU: closed forms (uniform logits, a hand-computed label
// smoothing case, softmax - onehot), the double reference, finite differences in double,
// ignore_index, huge logits, thread-count invariance and bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "basic_test_util.hpp"
#include "frugal/ref/nn_basic.hpp"

namespace frugal::nn {
namespace {

using frugal::testing::all_close;
using testing::expect_error;
using testing::random_f64;

Tensor targets_of(std::vector<int64_t> t) {
  const auto n = static_cast<int64_t>(t.size());
  return Tensor::from_vector(t, {n});
}

TEST(CrossEntropy, UniformLogitsGiveLogC) {
  for (double eps : {0.0, 0.2}) {
    SoftmaxCrossEntropy ce(eps);
    const Tensor logits = Tensor::full({4, 10}, 3.5);
    const float loss = ce.forward(logits, targets_of({0, 3, 9, 5}));
    // Every -log p_c = log 10, whatever the smoothing: float rounding of one log.
    EXPECT_NEAR(loss, std::log(10.0), 1e-6);
    EXPECT_EQ(ce.num_valid(), 4);
  }
}

TEST(CrossEntropy, GradientIsSoftmaxMinusOnehotOverN) {
  SoftmaxCrossEntropy ce;
  // Row 0: logits (0, log 2, 0) -> p = (1/4, 1/2, 1/4); row 1: (log 3, 0, 0) -> (3/5, 1/5, 1/5).
  const Tensor logits =
      Tensor::from_vector(std::vector<double>{0, std::log(2.0), 0, std::log(3.0), 0, 0}, {2, 3});
  const float loss = ce.forward(logits, targets_of({1, 2}));
  EXPECT_NEAR(loss, (std::log(2.0) + std::log(5.0)) / 2, 1e-7);  // returned as float
  const std::vector<double> want = {0.25 / 2, -0.5 / 2, 0.25 / 2, 0.6 / 2, 0.2 / 2, -0.8 / 2};
  EXPECT_TRUE(all_close(ce.backward().to_vector<double>(), want, 1e-15, 1e-16));
}

TEST(CrossEntropy, LabelSmoothingHandCase) {
  // p = (1/4, 1/2, 1/4), target 1, eps = 0.3: nll = log 2, mean_c(-log p_c) = (2 + 1 + 2)/3 log 2,
  // loss = 0.7 log 2 + 0.3 * 5/3 log 2 = 1.2 log 2.
  SoftmaxCrossEntropy ce(0.3);
  const Tensor logits = Tensor::from_vector(std::vector<double>{0, std::log(2.0), 0}, {1, 3});
  EXPECT_NEAR(ce.forward(logits, targets_of({1})), 1.2 * std::log(2.0), 1e-7);  // float result
  // Gradient p - (0.7 onehot + 0.1): (0.15, -0.3, 0.15).
  EXPECT_TRUE(all_close(ce.backward().to_vector<double>(), {0.15, -0.3, 0.15}, 1e-15, 1e-16));
}

TEST(CrossEntropy, MatchesReferenceAndFiniteDifferences) {
  for (double eps : {0.0, 0.1}) {
    SoftmaxCrossEntropy ce(eps, 2);  // ignore class index 2
    Tensor logits = random_f64({6, 5}, 1, -3.f, 3.f);
    const Tensor t = targets_of({0, 2, 4, 1, 2, 3});
    const double loss = ce.forward(logits, t);
    const Tensor g = ce.backward();
    const ref::LossRef want = ref::softmax_cross_entropy(logits, t, eps, 2);
    EXPECT_NEAR(loss, want.loss, 1e-7 * want.loss);  // returned as float
    EXPECT_TRUE(all_close(g, want.grad, 1e-13, 1e-15));
    // Finite differences of the f64 loss (computed again through forward; the float return
    // value is too coarse, so the loss is taken from the reference on the same logits).
    auto f = [&] { return ref::softmax_cross_entropy(logits, t, eps, 2).loss; };
    // Smooth: h = 1e-5 gives ~1e-10 accuracy.
    EXPECT_TRUE(all_close(g, testing::numeric_grad_scalar(logits, f), 1e-7, 1e-9));
    // Rows 1 and 4 are ignored: zero gradient.
    const auto gv = g.to_vector<double>();
    for (int j = 0; j < 5; ++j) {
      EXPECT_EQ(gv[5 + j], 0.0);
      EXPECT_EQ(gv[20 + j], 0.0);
    }
  }
}

TEST(CrossEntropy, BackwardMatchesFiniteDifferencesOfForward) {
  // The same check through the op under test itself: f64 logits, loss as float is too coarse for
  // differences, so use a larger step on a loss of size ~1 (float rounding 6e-8 / 2h = 3e-6 at
  // h = 1e-2, truncation h^2 |f'''| ~ 1e-5): tolerance 1e-4.
  SoftmaxCrossEntropy ce(0.1);
  Tensor logits = random_f64({3, 4}, 2);
  const Tensor t = targets_of({3, 0, 1});
  ce.forward(logits, t);
  const Tensor g = ce.backward();
  SoftmaxCrossEntropy probe(0.1);
  auto f = [&] { return static_cast<double>(probe.forward(logits, t)); };
  EXPECT_TRUE(all_close(g, testing::numeric_grad_scalar(logits, f, 1e-2), 0, 1e-4));
}

TEST(CrossEntropy, IgnoredRowsContributeNothing) {
  const Tensor logits = random_f64({4, 6}, 3, -2.f, 2.f);
  SoftmaxCrossEntropy ce;
  const float all = ce.forward(logits, targets_of({1, -100, 5, -100}));
  EXPECT_EQ(ce.num_valid(), 2);
  // The same as the loss over rows 0 and 2 alone.
  const Tensor rows = Tensor::from_vector(
      [&] {
        auto v = logits.to_vector<double>();
        std::vector<double> r(v.begin(), v.begin() + 6);
        r.insert(r.end(), v.begin() + 12, v.begin() + 18);
        return r;
      }(),
      {2, 6});
  SoftmaxCrossEntropy ce2;
  EXPECT_FLOAT_EQ(all, ce2.forward(rows, targets_of({1, 5})));
  // Every row ignored: loss 0 and zero gradient (PyTorch would give NaN).
  EXPECT_EQ(ce.forward(logits, targets_of({-100, -100, -100, -100})), 0.f);
  for (double v : ce.backward().to_vector<double>()) EXPECT_EQ(v, 0.0);
}

TEST(CrossEntropy, StableForHugeLogits) {
  for (DType dt : {DType::kF32, DType::kF64}) {
    SoftmaxCrossEntropy ce;
    const Tensor logits =
        Tensor::from_vector(std::vector<double>{1e4, 0, -1e4, 0, 1e4, -1e4}, {2, 3}).to(dt);
    // Row 0 predicts its target with p = 1 - O(e^-1e4): loss 0; row 1's target has logit
    // 1e4 below the max: loss 2e4 - log(...) = 2e4 exactly in any float. Mean: 1e4.
    const float loss = ce.forward(logits, targets_of({0, 2}));
    EXPECT_EQ(loss, 1e4f);
    const auto g = ce.backward().to_vector<double>();
    // Softmax of row 1 is (0, 1, 0): gradient (0, 0.5, -0.5); row 0: zero.
    EXPECT_TRUE(all_close(g, {0, 0, 0, 0, 0.5, -0.5}, 0, 1e-30));
  }
}

TEST(CrossEntropy, NaNLogitsGiveNaNLoss) {
  SoftmaxCrossEntropy ce;
  Tensor logits = Tensor::zeros({2, 3});
  logits.data<float>()[4] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(ce.forward(logits, targets_of({0, 0}))));
}

TEST(CrossEntropy, ThreadCountInvariant) {
  const Tensor logits = frugal::testing::random_uniform({512, 300}, 4, -5.f, 5.f);
  std::vector<int64_t> t(512);
  for (int i = 0; i < 512; ++i) t[i] = (i * 37) % 300;
  t[7] = -100;
  const Tensor tt = targets_of(t);
  SoftmaxCrossEntropy a(0.1), b(0.1);
  a.set_context(testing::threads(1));
  b.set_context(testing::threads(2));
  EXPECT_EQ(a.forward(logits, tt), b.forward(logits, tt));
  EXPECT_TRUE(testing::same_bits(a.backward(), b.backward()));
  // f32 against the double reference: float exp / sums over 300 classes, loss ~ 5.
  const ref::LossRef want = ref::softmax_cross_entropy(logits, tt, 0.1, -100);
  EXPECT_NEAR(a.forward(logits, tt), want.loss, 1e-6 * want.loss);
  EXPECT_TRUE(all_close(a.backward(), want.grad, 1e-5, 1e-10));
}

TEST(CrossEntropy, BadInput) {
  const std::string op = "SoftmaxCrossEntropy";
  expect_error([] { SoftmaxCrossEntropy(1.5); }, ErrorCode::kInvalidArgument, op);
  expect_error([] { SoftmaxCrossEntropy(-0.1); }, ErrorCode::kInvalidArgument, op);
  SoftmaxCrossEntropy ce;
  expect_error([&] { ce.backward(); }, ErrorCode::kInvalidArgument, op + "::backward");
  const Tensor logits = Tensor::zeros({2, 3});
  expect_error([&] { ce.forward(logits, targets_of({0, 3})); }, ErrorCode::kInvalidArgument, op);
  expect_error([&] { ce.forward(logits, targets_of({-1, 0})); }, ErrorCode::kInvalidArgument, op);
  expect_error([&] { ce.forward(logits, targets_of({0})); }, ErrorCode::kInvalidArgument, op);
  expect_error([&] { ce.forward(logits, Tensor::zeros({2}, DType::kI32)); },
               ErrorCode::kInvalidArgument, op);
  expect_error([&] { ce.forward(Tensor::zeros({6}), targets_of({0})); },
               ErrorCode::kInvalidArgument, op);
  expect_error(
      [&] {
        ce.forward(Tensor::zeros({2, 3}, DType::kI64), targets_of({0, 0}));
      },
      ErrorCode::kInvalidArgument, op);
  expect_error(
      [&] {
        ce.forward(Tensor::zeros({2, 0}), targets_of({0, 0}));
      },
      ErrorCode::kInvalidArgument, op);
  // A failed forward leaves no stale gradient behind.
  expect_error([&] { ce.backward(); }, ErrorCode::kInvalidArgument, op + "::backward");
  // A custom ignore_index of -1 accepts -1.
  SoftmaxCrossEntropy ce1(0.0, -1);
  EXPECT_NEAR(ce1.forward(logits, targets_of({-1, 2})), std::log(3.0), 1e-6);
  // No rows: loss 0.
  EXPECT_EQ(ce.forward(Tensor::zeros({0, 3}), targets_of({})), 0.f);
}

TEST(MSELoss, MatchesClosedFormAndFiniteDifferences) {
  MSELoss mse;
  const Tensor p = Tensor::from_vector(std::vector<double>{1, 2, 3, 4}, {2, 2});
  const Tensor t = Tensor::from_vector(std::vector<double>{1, 0, 5, 3}, {2, 2});
  // ((0)^2 + 2^2 + 2^2 + 1^2) / 4 = 9 / 4; gradient 2 (p - t) / 4.
  EXPECT_EQ(mse.forward(p, t), 2.25f);
  EXPECT_TRUE(all_close(mse.backward().to_vector<double>(), {0, 1, -1, 0.5}, 0, 0));

  Tensor x = random_f64({3, 7}, 5);
  const Tensor y = random_f64({3, 7}, 6);
  mse.forward(x, y);
  const Tensor g = mse.backward();
  EXPECT_TRUE(all_close(g, ref::mse_loss(x, y).grad, 1e-15, 1e-16));
  auto f = [&] { return ref::mse_loss(x, y).loss; };
  // Quadratic: central differences are exact up to rounding (~1e-11 at h = 1e-5).
  EXPECT_TRUE(all_close(g, testing::numeric_grad_scalar(x, f), 1e-8, 1e-9));
}

TEST(MSELoss, ThreadCountInvariantAndReference) {
  const Tensor p = frugal::testing::random_uniform({100000}, 7);  // several chunks
  const Tensor t = frugal::testing::random_uniform({100000}, 8);
  MSELoss a, b;
  a.set_context(testing::threads(1));
  b.set_context(testing::threads(2));
  const float la = a.forward(p, t);
  EXPECT_EQ(la, b.forward(p, t));
  EXPECT_TRUE(testing::same_bits(a.backward(), b.backward()));
  // Sums in double: only the final rounding to float differs from the reference.
  EXPECT_NEAR(la, ref::mse_loss(p, t).loss, 1e-7 * la);
}

TEST(MSELoss, BadInput) {
  MSELoss mse;
  expect_error([&] { mse.backward(); }, ErrorCode::kInvalidArgument, "MSELoss::backward");
  expect_error([&] { mse.forward(Tensor::zeros({3}), Tensor::zeros({4})); },
               ErrorCode::kInvalidArgument, "MSELoss");
  expect_error([&] { mse.forward(Tensor::zeros({3}), Tensor::zeros({3}, DType::kF64)); },
               ErrorCode::kInvalidArgument, "MSELoss");
  expect_error([&] { mse.forward(Tensor::zeros({0}), Tensor::zeros({0})); },
               ErrorCode::kInvalidArgument, "MSELoss");
  expect_error(
      [&] { mse.forward(Tensor::zeros({2}, DType::kI32), Tensor::zeros({2}, DType::kI32)); },
      ErrorCode::kInvalidArgument, "MSELoss");
}

}  // namespace
}  // namespace frugal::nn
