// LR schedules against their closed forms (PyTorch's StepLR recurrence, the cosine formula).
#include "frugal/nn/schedule.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <string>

#include "frugal/core/error.hpp"

namespace frugal::nn {
namespace {

TEST(StepLR, MatchesTorchRecurrence) {
  // torch's StepLR multiplies by gamma every step_size steps; run that recurrence in double.
  StepLR s(0.1, 3, 0.5);
  double lr = 0.1;
  for (int64_t t = 0; t < 20; ++t) {
    if (t > 0 && t % 3 == 0) lr *= 0.5;
    // pow(0.5, k) is exact; the recurrence multiplies by 0.5 exactly too.
    EXPECT_DOUBLE_EQ(s.lr_at(t), lr) << "step " << t;
  }
  StepLR g(1.0, 2, 0.1);
  // pow vs repeated multiplication of 0.1: a few ulps.
  EXPECT_NEAR(g.lr_at(7), 1e-3, 1e-17);
  EXPECT_EQ(g.lr_at(1), 1.0);
}

TEST(CosineWithWarmup, ClosedForm) {
  const double base = 3e-4, min_lr = 3e-5;
  CosineWithWarmup s(base, 10, 110, min_lr);
  EXPECT_EQ(s.lr_at(0), 0.0);
  EXPECT_DOUBLE_EQ(s.lr_at(5), base * 0.5);
  EXPECT_DOUBLE_EQ(s.lr_at(10), base);                   // top of the warm-up
  EXPECT_DOUBLE_EQ(s.lr_at(60), 0.5 * (base + min_lr));  // halfway down the cosine
  EXPECT_DOUBLE_EQ(s.lr_at(35), min_lr + (base - min_lr) * 0.5 * (1 + std::sqrt(0.5)));
  EXPECT_DOUBLE_EQ(s.lr_at(110), min_lr);
  EXPECT_DOUBLE_EQ(s.lr_at(1000), min_lr);
  // Monotone: up during warm-up, down after.
  for (int64_t t = 1; t < 10; ++t) EXPECT_LT(s.lr_at(t - 1), s.lr_at(t));
  for (int64_t t = 11; t <= 110; ++t) EXPECT_LE(s.lr_at(t), s.lr_at(t - 1));
}

TEST(CosineWithWarmup, NoWarmupAndDegenerateTotal) {
  CosineWithWarmup s(1.0, 0, 4, 0.0);
  EXPECT_DOUBLE_EQ(s.lr_at(0), 1.0);
  EXPECT_DOUBLE_EQ(s.lr_at(2), 0.5);
  // cos(3 pi / 4) = -sqrt(2) / 2.
  EXPECT_NEAR(s.lr_at(3), 0.5 * (1 - std::sqrt(0.5)), 1e-16);
  EXPECT_DOUBLE_EQ(s.lr_at(4), 0.0);
  CosineWithWarmup w(2.0, 5, 5, 0.5);
  EXPECT_DOUBLE_EQ(w.lr_at(4), 1.6);
  EXPECT_DOUBLE_EQ(w.lr_at(5), 0.5);
}

template <class Fn>
void expect_invalid(Fn&& fn, const std::string& prefix) {
  try {
    fn();
    ADD_FAILURE() << "no error, expected " << prefix;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
    EXPECT_EQ(std::string(e.what()).rfind(prefix, 0), 0u) << e.what();
  }
}

TEST(LrSchedule, RejectsBadInput) {
  expect_invalid([] { StepLR(-0.1, 1, 0.5); }, "[StepLR]");
  expect_invalid([] { StepLR(0.1, 0, 0.5); }, "[StepLR]");
  expect_invalid([] { StepLR(0.1, 1, -1); }, "[StepLR]");
  expect_invalid([] { StepLR(0.1, 1, 0.5).lr_at(-1); }, "[StepLR::lr_at]");
  expect_invalid([] { CosineWithWarmup(-1, 0, 10); }, "[CosineWithWarmup]");
  expect_invalid([] { CosineWithWarmup(1, -1, 10); }, "[CosineWithWarmup]");
  expect_invalid([] { CosineWithWarmup(1, 10, 5); }, "[CosineWithWarmup]");
  expect_invalid([] { CosineWithWarmup(1, 0, 10, 2.0); }, "[CosineWithWarmup]");
  expect_invalid([] { CosineWithWarmup(1, 0, 10, std::nan("")); }, "[CosineWithWarmup]");
  expect_invalid([] { CosineWithWarmup(1, 0, 10).lr_at(-3); }, "[CosineWithWarmup::lr_at]");
}

}  // namespace
}  // namespace frugal::nn
