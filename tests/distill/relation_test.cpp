// Relation losses on the CPU: hand-made point sets, invariances, finite differences in double
// against the reference loss, and bad input.
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

Tensor points(std::vector<double> v, int64_t d) {
  const auto b = static_cast<int64_t>(v.size()) / d;
  return Tensor::from_vector(v, {b, d});
}

TEST(RkdDistance, HandMadePoints) {
  // Student {0, 1, 2}: distances 1, 2, 1, mean (over ordered pairs) 4/3, psi = 3/4, 3/2, 3/4.
  // Teacher {0, 1, 3}: distances 1, 3, 2, mean 2, psi = 1/2, 3/2, 1. Differences 1/4, 0, -1/4:
  // Huber 1/32 twice per unordered pair set, both orders: 4/32 = 1/8, over B^2 = 9.
  const LossResult r = rkd_distance(points({0, 1, 2}, 1), points({0, 1, 3}, 1));
  EXPECT_NEAR(r.loss, 1.0 / 72.0, 1e-16);  // a few roundings of simple fractions
}

TEST(RkdDistance, ScaleAndWidthInvariant) {
  // Teacher = student scaled by 3 and embedded in more dimensions: identical relations.
  const Tensor s = random_f64({6, 2}, 1);
  auto sv = s.to_vector<double>();
  std::vector<double> tv;
  for (int64_t i = 0; i < 6; ++i) {
    tv.insert(tv.end(), {3 * sv[i * 2], 0.0, 3 * sv[i * 2 + 1]});
  }
  const LossResult r = rkd_distance(s, points(tv, 3));
  EXPECT_NEAR(r.loss, 0.0, 1e-15);  // equal up to rounding of psi
  EXPECT_TRUE(all_close(r.grad_student, Tensor::zeros({6, 2}, DType::kF64), 0, 1e-13));
}

TEST(RkdDistance, GradientMatchesFiniteDifferences) {
  Tensor s = random_f64({5, 3}, 2, -2.f, 2.f);
  const Tensor t = random_f64({5, 4}, 3, -1.f, 1.f);
  const LossResult r = rkd_distance(s, t);
  EXPECT_NEAR(r.loss, ref::rkd_distance_loss(s, t), 1e-14);  // double, same terms
  const Tensor fd = numeric_grad(s, [&] { return ref::rkd_distance_loss(s, t); });
  EXPECT_TRUE(all_close(r.grad_student, fd, 1e-6, 1e-9));  // central differences, h = 1e-5
  const LossResult r32 = rkd_distance(s.to(DType::kF32), t.to(DType::kF32));
  EXPECT_NEAR(r32.loss, r.loss, 1e-6);  // float inputs, double sums
}

TEST(RkdAngle, HandMadeTriangles) {
  // Student: equilateral triangle, every angle 60 degrees (cos 1/2). Teacher: right isosceles
  // triangle, cos 0 at the right angle and sqrt(1/2) at the other two. Per anchor the two
  // ordered pairs (b, c), b != c, differ; b = c gives cos 1 for both.
  const double h = std::sqrt(3.0) / 2;
  const Tensor s = points({0, 0, 1, 0, 0.5, h}, 2);
  const Tensor t = points({0, 0, 1, 0, 0, 1}, 2);
  const double d1 = 0.5, d2 = 0.5 - std::sqrt(0.5);
  const double want = (2 * 0.5 * d1 * d1 + 4 * 0.5 * d2 * d2) / 27.0;
  EXPECT_NEAR(rkd_angle(s, t).loss, want, 1e-15);  // double rounding of the cosines
}

TEST(RkdAngle, RotationScaleTranslationInvariant) {
  const Tensor s = random_f64({5, 2}, 4);
  const auto sv = s.to_vector<double>();
  std::vector<double> tv;
  const double c = std::cos(0.7), sn = std::sin(0.7);
  for (int64_t i = 0; i < 5; ++i) {
    const double x = sv[i * 2], y = sv[i * 2 + 1];
    tv.insert(tv.end(), {2.5 * (c * x - sn * y) + 1.0, 2.5 * (sn * x + c * y) - 3.0});
  }
  const LossResult r = rkd_angle(s, points(tv, 2));
  EXPECT_NEAR(r.loss, 0.0, 1e-15);  // cosines agree up to rounding
  EXPECT_TRUE(all_close(r.grad_student, Tensor::zeros({5, 2}, DType::kF64), 0, 1e-12));
}

TEST(RkdAngle, GradientMatchesFiniteDifferences) {
  Tensor s = random_f64({5, 3}, 5, -2.f, 2.f);
  const Tensor t = random_f64({5, 2}, 6, -2.f, 2.f);
  const LossResult r = rkd_angle(s, t);
  EXPECT_NEAR(r.loss, ref::rkd_angle_loss(s, t), 1e-14);  // double, same terms
  const Tensor fd = numeric_grad(s, [&] { return ref::rkd_angle_loss(s, t); });
  EXPECT_TRUE(all_close(r.grad_student, fd, 1e-6, 1e-9));  // central differences, h = 1e-5
}

TEST(SpLoss, ClosedFormsAndGradient) {
  Tensor s = random_f64({4, 3}, 7);
  // Teacher = 2 * student: G scales by 4, the row normalisation removes it.
  const Tensor t2 = Tensor::from_vector(
      [&] {
        auto v = s.to_vector<double>();
        for (double& x : v) x *= 2;
        return v;
      }(),
      {4, 3});
  EXPECT_NEAR(sp_loss(s, t2).loss, 0.0, 1e-15);  // rounding only
  const Tensor t = random_f64({4, 5}, 8);
  const LossResult r = sp_loss(s, t);
  EXPECT_NEAR(r.loss, ref::sp_loss_value(s, t), 1e-14);  // double, gemm vs loops
  const Tensor fd = numeric_grad(s, [&] { return ref::sp_loss_value(s, t); });
  EXPECT_TRUE(all_close(r.grad_student, fd, 1e-6, 1e-9));  // central differences, h = 1e-5
  // (B, C, H, W) features are flattened per sample; the gradient keeps the shape.
  const Tensor s4 = random_f64({3, 2, 2, 2}, 9), t4 = random_f64({3, 4, 2, 2}, 10);
  EXPECT_EQ(sp_loss(s4, t4).grad_student.shape(), s4.shape());
  EXPECT_NEAR(sp_loss(s4, t4).loss, ref::sp_loss_value(s4, t4), 1e-14);
}

TEST(RelationLosses, DoNotDependOnThreadCount) {
  const Tensor s = frugal::testing::random_uniform({40, 16}, 11);
  const Tensor t = frugal::testing::random_uniform({40, 24}, 12);
  for (auto fn : {&rkd_distance, &rkd_angle}) {
    const LossResult a = fn(s, t, threads(1)), b = fn(s, t, threads(2));
    EXPECT_EQ(a.loss, b.loss);
    EXPECT_TRUE(frugal::testing::all_equal(a.grad_student, b.grad_student));
  }
}

TEST(RelationLosses, BadInput) {
  const Tensor s = random_f64({4, 3}, 1);
  const auto inv = ErrorCode::kInvalidArgument;
  for (const char* op : {"rkd_distance", "rkd_angle", "sp_loss"}) {
    auto call = [&](const Tensor& a, const Tensor& b) {
      if (std::string(op) == "rkd_distance") return rkd_distance(a, b);
      if (std::string(op) == "rkd_angle") return rkd_angle(a, b);
      return sp_loss(a, b);
    };
    expect_error([&] { call(s, random_f64({5, 3}, 2)); }, inv, op);
    expect_error([&] { call(s, s.to(DType::kF32)); }, inv, op);
    expect_error([&] { call(s.to(DType::kI64), s.to(DType::kI64)); }, inv, op);
    Tensor nan = s.clone();
    nan.fill(std::nan(""));
    expect_error([&] { call(nan, s); }, inv, op);
    expect_error([&] { call(Tensor::zeros({0, 3}), Tensor::zeros({0, 3})); }, inv, op);
  }
  expect_error(
      [&] {
        rkd_distance(random_f64({1, 3}, 1), random_f64({1, 3}, 2));
      },
      inv, "rkd_distance");
  expect_error([&] { rkd_angle(random_f64({2, 3}, 1), random_f64({2, 3}, 2)); }, inv, "rkd_angle");
  // Every student point the same: the mean distance is 0.
  expect_error(
      [&] {
        rkd_distance(Tensor::full({3, 2}, 1.0, DType::kF64), s.slice(0, 0, 3));
      },
      inv, "rkd_distance");
}

}  // namespace
}  // namespace frugal::distill
