#pragma once
/// Rank selection for low-rank factorization: from the singular values of a matrix (energy, error
/// tolerance) or from its shape alone (parameter budget, compression ratio). An (m, n) matrix
/// factored at rank r as (m, r) x (r, n) stores r (m + n) numbers instead of m n.
#include <cstdint>
#include <span>
#include <vector>

#include "frugal/core/tensor.hpp"

namespace frugal::lowrank {

/// True when rank r saves parameters: r (m + n) < m n.
bool worth_factorizing(int64_t m, int64_t n, int64_t r);

/// The smallest r with sum_{i <= r} s_i^2 >= energy * sum_i s_i^2, for singular values `s`
/// (descending, >= 0, finite, non-empty) and energy in (0, 1]. An all-zero s gives 1.
int64_t rank_for_energy(std::span<const double> s, double energy);

/// The smallest r whose truncation error meets a relative Frobenius tolerance:
/// sqrt(sum_{i > r} s_i^2 / sum_i s_i^2) <= tol, tol in [0, 1). Gives at least 1.
int64_t rank_for_error(std::span<const double> s, double tol);

/// The largest r with r (m + n) <= budget (parameters of the two factors); 0 when even r = 1 does
/// not fit. Clamped to min(m, n).
int64_t rank_for_param_budget(int64_t m, int64_t n, int64_t budget);

/// The largest r with m n / (r (m + n)) >= ratio (ratio > 0: 2 halves the parameters); 0 when
/// even r = 1 does not reach it. Clamped to min(m, n).
int64_t rank_for_compression(int64_t m, int64_t n, double ratio);

/// How a layer's rank is chosen (see select_rank).
enum class RankRule {
  kFixed,        ///< value = the rank itself
  kEnergy,       ///< value = energy e in (0, 1] (rank_for_energy)
  kError,        ///< value = relative Frobenius tolerance in [0, 1) (rank_for_error)
  kParamBudget,  ///< value = parameters allowed for the two factors (rank_for_param_budget)
  kCompression,  ///< value = parameter reduction ratio > 0 (rank_for_compression)
};

/// A rank rule and its value, plus a floor.
struct RankPolicy {
  RankRule rule = RankRule::kEnergy;
  double value = 0.9;
  int64_t min_rank = 1;  ///< never choose less than this (clamped to min(m, n))

  static RankPolicy fixed(int64_t r) { return {RankRule::kFixed, static_cast<double>(r), 1}; }
  static RankPolicy energy(double e) { return {RankRule::kEnergy, e, 1}; }
  static RankPolicy error(double tol) { return {RankRule::kError, tol, 1}; }
  static RankPolicy param_budget(int64_t p) {
    return {RankRule::kParamBudget, static_cast<double>(p), 1};
  }
  static RankPolicy compression(double ratio) { return {RankRule::kCompression, ratio, 1}; }
};

/// Whether a rule needs the singular values (kEnergy, kError) or only the shape.
bool needs_singular_values(const RankPolicy& policy);

/// The rank `policy` gives an (m, n) matrix with singular values `s` (ignored, and may be empty,
/// when the rule needs only the shape), in [min_rank, min(m, n)], or 0 when a shape rule finds
/// no rank. Throws InvalidArgument "[select_rank] ..." for a value outside the rule's range.
int64_t select_rank(std::span<const double> s, int64_t m, int64_t n, const RankPolicy& policy);

/// The singular values of a rank-1 tensor (any device, f32 / f64) as host doubles.
std::vector<double> host_values(const Tensor& s);

}  // namespace frugal::lowrank
