// Rank selection against hand-computed ranks.
#include "frugal/lowrank/rank.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "support/check.hpp"

namespace frugal {
namespace {

using frugal::testing::expect_error;

using lowrank::RankPolicy;

// s^2 = 16, 9, 4, 1, 0 (total 30): cumulative 16, 25, 29, 30.
const std::vector<double> kS = {4, 3, 2, 1, 0};

TEST(LowrankRank, Energy) {
  EXPECT_EQ(lowrank::rank_for_energy(kS, 0.5), 1);  // 16/30 = 0.533
  EXPECT_EQ(lowrank::rank_for_energy(kS, 16.0 / 30), 1);
  EXPECT_EQ(lowrank::rank_for_energy(kS, 0.6), 2);  // 25/30 = 0.833
  EXPECT_EQ(lowrank::rank_for_energy(kS, 0.9), 3);  // 29/30 = 0.967
  EXPECT_EQ(lowrank::rank_for_energy(kS, 0.97), 4);
  EXPECT_EQ(lowrank::rank_for_energy(kS, 1.0), 4);  // the zero value adds nothing
  EXPECT_EQ(lowrank::rank_for_energy(std::vector<double>{0, 0}, 0.9), 1);
}

TEST(LowrankRank, ErrorTolerance) {
  // Tail errors sqrt(tail / 30): r=1 sqrt(14/30)=0.683, r=2 sqrt(5/30)=0.408, r=3 0.183, r=4 0.
  EXPECT_EQ(lowrank::rank_for_error(kS, 0.7), 1);
  EXPECT_EQ(lowrank::rank_for_error(kS, 0.5), 2);
  EXPECT_EQ(lowrank::rank_for_error(kS, 0.2), 3);
  EXPECT_EQ(lowrank::rank_for_error(kS, 0.1), 4);
  EXPECT_EQ(lowrank::rank_for_error(kS, 0.0), 4);
}

TEST(LowrankRank, ShapeRules) {
  EXPECT_TRUE(lowrank::worth_factorizing(100, 100, 49));   // 9800 < 10000
  EXPECT_FALSE(lowrank::worth_factorizing(100, 100, 50));  // 10000 = 10000 saves nothing
  EXPECT_EQ(lowrank::rank_for_param_budget(100, 50, 1500), 10);
  EXPECT_EQ(lowrank::rank_for_param_budget(100, 50, 149), 0);
  EXPECT_EQ(lowrank::rank_for_param_budget(100, 50, 1000000), 50);  // clamped to min(m, n)
  // 100 * 50 / (r * 150) >= 2  <=>  r <= 16.67.
  EXPECT_EQ(lowrank::rank_for_compression(100, 50, 2.0), 16);
  EXPECT_EQ(lowrank::rank_for_compression(100, 50, 40.0), 0);
  EXPECT_EQ(lowrank::rank_for_compression(100, 50, 0.01), 50);
}

TEST(LowrankRank, SelectRank) {
  EXPECT_EQ(lowrank::select_rank(kS, 8, 5, RankPolicy::energy(0.9)), 3);
  EXPECT_EQ(lowrank::select_rank(kS, 8, 5, RankPolicy::error(0.5)), 2);
  EXPECT_EQ(lowrank::select_rank({}, 8, 5, RankPolicy::fixed(3)), 3);
  EXPECT_EQ(lowrank::select_rank({}, 8, 5, RankPolicy::fixed(30)), 5);
  EXPECT_EQ(lowrank::select_rank({}, 100, 50, RankPolicy::compression(2.0)), 16);
  EXPECT_EQ(lowrank::select_rank({}, 100, 50, RankPolicy::param_budget(100)), 0);
  RankPolicy p = RankPolicy::energy(0.5);
  p.min_rank = 2;
  EXPECT_EQ(lowrank::select_rank(kS, 8, 5, p), 2);
  EXPECT_TRUE(lowrank::needs_singular_values(RankPolicy::energy(0.9)));
  EXPECT_FALSE(lowrank::needs_singular_values(RankPolicy::fixed(2)));
}

TEST(LowrankRank, BadInput) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  expect_error([] { lowrank::rank_for_energy(kS, 0.0); }, ErrorCode::kInvalidArgument,
               "rank_for_energy");
  expect_error([] { lowrank::rank_for_energy(kS, 1.01); }, ErrorCode::kInvalidArgument,
               "rank_for_energy");
  expect_error([&] { lowrank::rank_for_energy(kS, nan); }, ErrorCode::kInvalidArgument,
               "rank_for_energy");
  expect_error([] { lowrank::rank_for_energy(std::vector<double>{}, 0.5); },
               ErrorCode::kInvalidArgument, "rank_for_energy");
  expect_error(
      [&] {
        lowrank::rank_for_energy(std::vector<double>{1, nan}, 0.5);
      },
      ErrorCode::kInvalidArgument, "rank_for_energy");
  expect_error(
      [] {
        lowrank::rank_for_energy(std::vector<double>{1, -1}, 0.5);
      },
      ErrorCode::kInvalidArgument, "rank_for_energy");
  expect_error([] { lowrank::rank_for_error(kS, 1.0); }, ErrorCode::kInvalidArgument,
               "rank_for_error");
  expect_error([] { lowrank::rank_for_compression(10, 10, 0.0); }, ErrorCode::kInvalidArgument,
               "rank_for_compression");
  expect_error([] { lowrank::rank_for_param_budget(0, 10, 5); }, ErrorCode::kInvalidArgument,
               "rank_for_param_budget");
  expect_error([] { lowrank::worth_factorizing(10, 10, 0); }, ErrorCode::kInvalidArgument,
               "worth_factorizing");
  expect_error([] { lowrank::select_rank(kS, 8, 5, RankPolicy::energy(1.5)); },
               ErrorCode::kInvalidArgument, "select_rank");
  expect_error([] { lowrank::select_rank(kS, 8, 5, RankPolicy::fixed(0)); },
               ErrorCode::kInvalidArgument, "select_rank");
}

}  // namespace
}  // namespace frugal
