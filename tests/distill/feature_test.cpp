// Feature losses on the CPU: closed forms, finite differences in double against the reference
// loss, thread-count invariance and bad input.
#include <gtest/gtest.h>

#include <cmath>

#include "distill_test_util.hpp"
#include "frugal/ref/distill.hpp"

namespace frugal::distill {
namespace {

using frugal::testing::all_close;
using testing::expect_error;
using testing::numeric_grad;
using testing::random_f64;
using testing::threads;

TEST(FeatureMse, ClosedFormAndGradient) {
  const Tensor s = Tensor::from_vector(std::vector<double>{1, 2, 3, 4}, {2, 2});
  const Tensor t = Tensor::from_vector(std::vector<double>{1, 0, 0, 6}, {2, 2});
  const LossResult r = feature_mse(s, t);
  EXPECT_DOUBLE_EQ(r.loss, (0 + 4 + 9 + 4) / 4.0);
  // 2 (s - t) / n.
  EXPECT_TRUE(all_close(r.grad_student.to_vector<double>(), {0, 1, 1.5, -1}, 0, 1e-15));
  const LossResult r32 = feature_mse(s.to(DType::kF32), t.to(DType::kF32));
  EXPECT_NEAR(r32.loss, 17.0 / 4.0, 1e-6);  // small integers: exact in float but for the mean
}

TEST(FeatureCosine, ClosedForms) {
  // Row 0 parallel (cos 1), row 1 orthogonal (cos 0), row 2 opposite (cos -1).
  const Tensor s = Tensor::from_vector(std::vector<double>{1, 2, 1, 0, 3, 4}, {3, 2});
  const Tensor t = Tensor::from_vector(std::vector<double>{2, 4, 0, 5, -6, -8}, {3, 2});
  const LossResult r = feature_cosine(s, t);
  EXPECT_NEAR(r.loss, (0.0 + 1.0 + 2.0) / 3.0, 1e-15);  // double rounding of the norms
}

TEST(FeatureCosine, MatchesReferenceAndFiniteDifferences) {
  Tensor s = random_f64({4, 3, 2}, 1);
  const Tensor t = random_f64({4, 3, 2}, 2);
  const LossResult r = feature_cosine(s, t);
  const ref::DistillRef want = ref::feature_cosine(s, t);
  EXPECT_NEAR(r.loss, want.loss, 1e-14);  // double, same formula
  EXPECT_TRUE(all_close(r.grad_student, want.grad, 1e-12, 1e-15));
  const Tensor fd = numeric_grad(s, [&] { return ref::feature_cosine(s, t).loss; });
  EXPECT_TRUE(all_close(r.grad_student, fd, 1e-6, 1e-9));  // central differences, h = 1e-5
}

TEST(AttentionTransfer, MapAndClosedForms) {
  // One sample, 2 channels of 1x2: a = (1 + 9, 4 + 16) = (10, 20).
  const Tensor f = Tensor::from_vector(std::vector<double>{1, 2, 3, 4}, {1, 2, 1, 2});
  EXPECT_TRUE(all_close(attention_map(f).to_vector<double>(), {10, 20}, 0, 0));
  // Teacher with other channels but a proportional map (a = (40, 80)) gives 0.
  const Tensor t = Tensor::from_vector(std::vector<double>{2, 4, 6, 8, 0, 0}, {1, 3, 1, 2});
  const LossResult r = attention_transfer(f, t);
  EXPECT_NEAR(r.loss, 0.0, 1e-15);  // both normalise to (1, 2) / sqrt 5
  EXPECT_TRUE(all_close(r.grad_student, Tensor::zeros({1, 2, 1, 2}, DType::kF64), 0, 1e-15));
  // Orthogonal maps: u_s = (1, 0), u_t = (0, 1): loss sqrt 2.
  const Tensor s2 = Tensor::from_vector(std::vector<double>{3, 0}, {1, 1, 1, 2});
  const Tensor t2 = Tensor::from_vector(std::vector<double>{0, 5}, {1, 1, 1, 2});
  EXPECT_NEAR(attention_transfer(s2, t2).loss, std::sqrt(2.0), 1e-15);
}

TEST(AttentionTransfer, GradientMatchesFiniteDifferences) {
  Tensor s = random_f64({3, 2, 3, 2}, 11);
  const Tensor t = random_f64({3, 4, 3, 2}, 12);
  const LossResult r = attention_transfer(s, t);
  EXPECT_NEAR(r.loss, ref::attention_transfer_loss(s, t), 1e-14);  // double, same formula
  const Tensor fd = numeric_grad(s, [&] { return ref::attention_transfer_loss(s, t); });
  EXPECT_TRUE(all_close(r.grad_student, fd, 1e-6, 1e-9));  // central differences, h = 1e-5
  const LossResult r32 = attention_transfer(s.to(DType::kF32), t.to(DType::kF32));
  EXPECT_NEAR(r32.loss, r.loss, 1e-6);  // float inputs, double sums
}

TEST(FeatureLosses, DoNotDependOnThreadCount) {
  const Tensor s = frugal::testing::random_uniform({64, 300}, 21);
  const Tensor t = frugal::testing::random_uniform({64, 300}, 22);
  EXPECT_EQ(feature_mse(s, t, threads(1)).loss, feature_mse(s, t, threads(2)).loss);
  EXPECT_EQ(feature_cosine(s, t, threads(1)).loss, feature_cosine(s, t, threads(2)).loss);
  const Tensor s4 = s.reshape({64, 3, 10, 10}), t4 = t.reshape({64, 3, 10, 10});
  EXPECT_EQ(attention_transfer(s4, t4, threads(1)).loss,
            attention_transfer(s4, t4, threads(2)).loss);
}

TEST(FeatureLosses, BadInput) {
  const Tensor s = random_f64({2, 3, 4, 4}, 1);
  const auto inv = ErrorCode::kInvalidArgument;
  expect_error([&] { feature_mse(s, random_f64({2, 3, 4, 5}, 2)); }, inv, "feature_mse");
  expect_error([&] { feature_mse(s, s.to(DType::kF32)); }, inv, "feature_mse");
  expect_error(
      [&] {
        feature_mse(Tensor::zeros({0, 3}), Tensor::zeros({0, 3}));
      },
      inv, "feature_mse");
  expect_error([&] { feature_mse(s.to(DType::kI32), s.to(DType::kI32)); }, inv, "feature_mse");
  Tensor nan = s.clone();
  nan.fill(std::nan(""));
  expect_error([&] { feature_mse(nan, s); }, inv, "feature_mse");
  expect_error([&] { feature_cosine(s, random_f64({2, 48}, 2)); }, inv, "feature_cosine");
  expect_error([&] { feature_cosine(nan, s); }, inv, "feature_cosine");
  expect_error(
      [&] {
        attention_transfer(s, random_f64({2, 3, 4, 5}, 2));
      },
      inv, "attention_transfer");
  expect_error(
      [&] {
        attention_transfer(s, random_f64({3, 3, 4, 4}, 2));
      },
      inv, "attention_transfer");
  expect_error(
      [&] {
        attention_transfer(random_f64({2, 48}, 2), random_f64({2, 48}, 2));
      },
      inv, "attention_transfer");
  expect_error([&] { attention_transfer(nan, s); }, inv, "attention_transfer");
  expect_error([&] { attention_map(random_f64({2, 48}, 2)); }, inv, "attention_map");
}

}  // namespace
}  // namespace frugal::distill
