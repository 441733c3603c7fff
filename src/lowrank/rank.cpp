// Rank selection (include/frugal/lowrank/rank.hpp).
#include "frugal/lowrank/rank.hpp"

#include <algorithm>
#include <cmath>

#include "frugal/core/error.hpp"

namespace frugal::lowrank {
namespace {

void check_values(const char* op, std::span<const double> s) {
  FRUGAL_REQUIRE(!s.empty(), op, "no singular values");
  for (std::size_t i = 0; i < s.size(); ++i) {
    FRUGAL_REQUIRE(std::isfinite(s[i]) && s[i] >= 0.0, op, "singular value ", i, " is ", s[i],
                   "; expected finite and >= 0");
  }
}

void check_shape(const char* op, int64_t m, int64_t n) {
  FRUGAL_REQUIRE(m > 0 && n > 0, op, "matrix shape (", m, ", ", n, ") must be positive");
}

}  // namespace

bool worth_factorizing(int64_t m, int64_t n, int64_t r) {
  check_shape("worth_factorizing", m, n);
  FRUGAL_REQUIRE(r >= 1, "worth_factorizing", "rank ", r, " must be >= 1");
  // In double: r (m + n) and m n can exceed int64 only for absurd shapes, but stay exact here.
  return static_cast<double>(r) * static_cast<double>(m + n) <
         static_cast<double>(m) * static_cast<double>(n);
}

int64_t rank_for_energy(std::span<const double> s, double energy) {
  const char* op = "rank_for_energy";
  FRUGAL_REQUIRE(energy > 0.0 && energy <= 1.0, op, "energy ", energy, " outside (0, 1]");
  check_values(op, s);
  double total = 0.0;
  for (double v : s) total += v * v;
  if (total == 0.0) return 1;
  const double target = energy * total;
  double acc = 0.0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    acc += s[i] * s[i];
    // A relative slack of 1e-12 so energy = 1 is reached despite rounding in the running sum.
    if (acc >= target * (1.0 - 1e-12)) return static_cast<int64_t>(i + 1);
  }
  return static_cast<int64_t>(s.size());
}

int64_t rank_for_error(std::span<const double> s, double tol) {
  const char* op = "rank_for_error";
  FRUGAL_REQUIRE(tol >= 0.0 && tol < 1.0, op, "tolerance ", tol, " outside [0, 1)");
  check_values(op, s);
  double total = 0.0;
  for (double v : s) total += v * v;
  if (total == 0.0) return 1;
  // tail[r] = sum_{i >= r} s_i^2, summed from the smallest value up for accuracy.
  std::vector<double> tail(s.size() + 1, 0.0);
  for (std::size_t i = s.size(); i-- > 0;) tail[i] = tail[i + 1] + s[i] * s[i];
  const double allowed = tol * tol * total;
  for (std::size_t r = 1; r <= s.size(); ++r) {
    if (tail[r] <= allowed) return static_cast<int64_t>(r);
  }
  return static_cast<int64_t>(s.size());
}

int64_t rank_for_param_budget(int64_t m, int64_t n, int64_t budget) {
  const char* op = "rank_for_param_budget";
  check_shape(op, m, n);
  FRUGAL_REQUIRE(budget >= 0, op, "budget ", budget, " is negative");
  return std::min(budget / (m + n), std::min(m, n));
}

int64_t rank_for_compression(int64_t m, int64_t n, double ratio) {
  const char* op = "rank_for_compression";
  check_shape(op, m, n);
  FRUGAL_REQUIRE(std::isfinite(ratio) && ratio > 0.0, op, "ratio ", ratio, " must be > 0");
  const double r = std::floor(static_cast<double>(m) * static_cast<double>(n) /
                              (ratio * static_cast<double>(m + n)));
  return static_cast<int64_t>(std::min(r, static_cast<double>(std::min(m, n))));
}

bool needs_singular_values(const RankPolicy& policy) {
  return policy.rule == RankRule::kEnergy || policy.rule == RankRule::kError;
}

int64_t select_rank(std::span<const double> s, int64_t m, int64_t n, const RankPolicy& policy) {
  const char* op = "select_rank";
  check_shape(op, m, n);
  const int64_t kmax = std::min(m, n);
  int64_t r = 0;
  switch (policy.rule) {
    case RankRule::kFixed:
      FRUGAL_REQUIRE(policy.value >= 1 && policy.value == std::floor(policy.value), op,
                     "fixed rank ", policy.value, " must be a positive integer");
      r = std::min(static_cast<int64_t>(policy.value), kmax);
      break;
    case RankRule::kEnergy:
      FRUGAL_REQUIRE(policy.value > 0.0 && policy.value <= 1.0, op, "energy ", policy.value,
                     " outside (0, 1]");
      r = rank_for_energy(s, policy.value);
      break;
    case RankRule::kError:
      FRUGAL_REQUIRE(policy.value >= 0.0 && policy.value < 1.0, op, "tolerance ", policy.value,
                     " outside [0, 1)");
      r = rank_for_error(s, policy.value);
      break;
    case RankRule::kParamBudget:
      FRUGAL_REQUIRE(policy.value >= 0.0, op, "budget ", policy.value, " is negative");
      r = rank_for_param_budget(m, n, static_cast<int64_t>(policy.value));
      if (r == 0) return 0;
      break;
    case RankRule::kCompression:
      FRUGAL_REQUIRE(std::isfinite(policy.value) && policy.value > 0.0, op, "ratio ", policy.value,
                     " must be > 0");
      r = rank_for_compression(m, n, policy.value);
      if (r == 0) return 0;
      break;
  }
  return std::clamp(std::max(r, policy.min_rank), int64_t{1}, kmax);
}

std::vector<double> host_values(const Tensor& s) {
  FRUGAL_REQUIRE(s.defined() && s.rank() == 1, "host_values", "expected a rank-1 tensor");
  return s.to_vector<double>();
}

}  // namespace frugal::lowrank
