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
  /// value = energy e in (0, 1] of ALL the factorized layers together: ranks allocated across
  /// layers greedily by energy gained per parameter (allocate_global_energy). On one matrix it
  /// is kEnergy.
  kGlobalEnergy,
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
  static RankPolicy global_energy(double e) { return {RankRule::kGlobalEnergy, e, 1}; }
};

/// Whether a rule needs the singular values (kEnergy, kError, kGlobalEnergy) or only the shape.
bool needs_singular_values(const RankPolicy& policy);

/// The rank `policy` gives an (m, n) matrix with singular values `s` (ignored, and may be empty,
/// when the rule needs only the shape), in [min_rank, min(m, n)], or 0 when a shape rule finds
/// no rank. Throws InvalidArgument "[select_rank] ..." for a value outside the rule's range.
int64_t select_rank(std::span<const double> s, int64_t m, int64_t n, const RankPolicy& policy);

/// One layer's truncation steps for a global energy budget: step i (0-based; step 0 = rank 1)
/// keeps `gains[i]` more energy for `costs[i]` more parameters; `total` = the layer's whole
/// energy (the sum of all gains when the chain is complete). For a matrix (m, n) with singular
/// values s: gains = s_i^2, costs = m + n (matrix_energy_chain).
struct EnergyChain {
  std::vector<double> gains;
  std::vector<double> costs;
  double total = 0;
  bool last_is_dense = false;  ///< the last step means "keep the layer dense" (cap_at_dense)
};

/// `chain` cut where its cumulative cost stops being below `dense_cost` (the layer's dense
/// parameters), with one last step "keep it dense" (the remaining energy for the remaining
/// parameters up to dense_cost): a factorization costing as much as the dense layer is never
/// chosen, and the allocation sees the true price of the last energy. A chain whose first step
/// already costs dense_cost or more becomes that single dense step. dense_cost > 0.
EnergyChain cap_at_dense(const EnergyChain& chain, double dense_cost);

/// The chain of an (m, n) matrix with singular values `s` (descending, >= 0, finite).
EnergyChain matrix_energy_chain(std::span<const double> s, int64_t m, int64_t n);

/// Steps taken per chain (each >= 1, at most its length) so that the energy kept, summed over
/// chains, reaches `energy` x the sum of the totals: starting from one step per chain, the next
/// step with the largest gain / cost (ties: the lowest chain index) is taken until the target is
/// met or every chain is complete. With `normalize`, each chain's gains count as fractions of its
/// own total (the target is then `energy` x the number of chains: every layer weighs the same
/// whatever its scale). For matrix chains, whose gains / cost decrease along each chain, this
/// is the optimal fractional-knapsack allocation; the kept parameters are the smallest for the
/// energy reached up to the last step. Throws InvalidArgument "[allocate_global_energy] ..." for
/// no chains, an empty chain, gains / costs of different lengths, a negative or non-finite gain,
/// a cost <= 0, or energy outside (0, 1].
std::vector<int64_t> allocate_global_energy(std::span<const EnergyChain> chains, double energy,
                                            bool normalize = false);

/// Cheapest Tucker-2 ranks keeping a fraction of the kernel's energy in the truncated HOSVD core
/// (the "core energy" of tucker2_core_energy): among (r_out, r_in) in [1, R_out] x [1, R_in]
/// with sum_{a < r_out, b < r_in} e[a, b] >= energy sum e, the one with the fewest parameters
/// C_in r_in + r_in r_out hw + r_out C_out (ties: smaller r_out). `e` is (R_out, R_in) row-major.
struct Tucker2Ranks {
  int64_t out = 0;
  int64_t in = 0;
};
Tucker2Ranks tucker2_ranks_for_core_energy(std::span<const double> e, int64_t r_out_max,
                                           int64_t r_in_max, int64_t c_out, int64_t c_in,
                                           int64_t hw, double energy);

/// A Tucker-2 EnergyChain for allocate_global_energy: from (1, 1), each step adds 1 to whichever
/// of r_out / r_in gains more core energy per added parameter, until (R_out, R_in); `ranks[i]`
/// are the ranks after step i.
struct Tucker2Chain {
  EnergyChain chain;
  std::vector<Tucker2Ranks> ranks;
};
Tucker2Chain tucker2_energy_chain(std::span<const double> e, int64_t r_out_max, int64_t r_in_max,
                                  int64_t c_out, int64_t c_in, int64_t hw);

/// Parameters of a Tucker-2 factorization of a (c_out, c_in, kh kw = hw) kernel at ranks
/// (r_out, r_in) when a factor of full rank is left out (an invertible factor folds into the
/// core: r_in = c_in needs no input 1x1, r_out = c_out no output 1x1):
/// (r_in < c_in ? c_in r_in : 0) + r_in r_out hw + (r_out < c_out ? r_out c_out : 0).
/// Needs 1 <= r_out <= c_out, 1 <= r_in <= c_in, hw >= 1.
int64_t tucker2_folded_params(int64_t c_out, int64_t c_in, int64_t hw, int64_t r_out, int64_t r_in);

/// Cheapest Tucker-2 ranks keeping a fraction of a measured energy: `kept` (r_out_max, r_in_max)
/// row-major holds, for ranks (a + 1, b + 1), the fraction of the energy they keep (e.g. the
/// response variance of nn::tucker2_response_table); among the pairs with kept >= energy, the
/// one with the fewest tucker2_folded_params (ties: smaller r_out, then smaller r_in);
/// (r_out_max, r_in_max) when none reaches it. kept need not be monotone. Throws
/// InvalidArgument "[tucker2_ranks_for_kept] ..." for a table of the wrong size, a non-finite
/// entry, maxima outside [1, c_out] x [1, c_in], or energy outside (0, 1].
Tucker2Ranks tucker2_ranks_for_kept(std::span<const double> kept, int64_t r_out_max,
                                    int64_t r_in_max, int64_t c_out, int64_t c_in, int64_t hw,
                                    double energy);

/// The singular values of a rank-1 tensor (any device, f32 / f64) as host doubles.
std::vector<double> host_values(const Tensor& s);

}  // namespace frugal::lowrank
