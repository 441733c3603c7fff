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
  return policy.rule == RankRule::kEnergy || policy.rule == RankRule::kError ||
         policy.rule == RankRule::kGlobalEnergy;
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
    case RankRule::kGlobalEnergy:  // one matrix alone: the per-layer rule
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

EnergyChain matrix_energy_chain(std::span<const double> s, int64_t m, int64_t n) {
  const char* op = "matrix_energy_chain";
  check_shape(op, m, n);
  check_values(op, s);
  EnergyChain c;
  for (double v : s) {
    c.gains.push_back(v * v);
    c.costs.push_back(static_cast<double>(m + n));
  }
  for (std::size_t i = s.size(); i-- > 0;) c.total += c.gains[i];
  return c;
}

EnergyChain cap_at_dense(const EnergyChain& chain, double dense_cost) {
  const char* op = "cap_at_dense";
  FRUGAL_REQUIRE(std::isfinite(dense_cost) && dense_cost > 0.0, op, "dense cost ", dense_cost,
                 " must be finite and > 0");
  FRUGAL_REQUIRE(chain.gains.size() == chain.costs.size(), op, "chain has ", chain.gains.size(),
                 " gains and ", chain.costs.size(), " costs");
  EnergyChain out;
  out.total = chain.total;
  double cost = 0.0, kept = 0.0;
  std::size_t i = 0;
  for (; i < chain.gains.size(); ++i) {
    if (cost + chain.costs[i] >= dense_cost) break;
    cost += chain.costs[i];
    kept += chain.gains[i];
    out.gains.push_back(chain.gains[i]);
    out.costs.push_back(chain.costs[i]);
  }
  if (i < chain.gains.size()) {
    out.gains.push_back(std::max(0.0, chain.total - kept));
    out.costs.push_back(dense_cost - cost);
    out.last_is_dense = true;
  }
  return out;
}

std::vector<int64_t> allocate_global_energy(std::span<const EnergyChain> chains, double energy,
                                            bool normalize) {
  const char* op = "allocate_global_energy";
  FRUGAL_REQUIRE(!chains.empty(), op, "no chains");
  FRUGAL_REQUIRE(energy > 0.0 && energy <= 1.0, op, "energy ", energy, " outside (0, 1]");
  for (std::size_t l = 0; l < chains.size(); ++l) {
    const EnergyChain& c = chains[l];
    FRUGAL_REQUIRE(!c.gains.empty() && c.gains.size() == c.costs.size(), op, "chain ", l, " has ",
                   c.gains.size(), " gains and ", c.costs.size(), " costs; expected as many, >= 1");
    FRUGAL_REQUIRE(std::isfinite(c.total) && c.total >= 0.0, op, "chain ", l, " total ", c.total,
                   " must be finite and >= 0");
    for (std::size_t i = 0; i < c.gains.size(); ++i) {
      FRUGAL_REQUIRE(std::isfinite(c.gains[i]) && c.gains[i] >= 0.0, op, "chain ", l, " gain ", i,
                     " is ", c.gains[i], "; expected finite and >= 0");
      FRUGAL_REQUIRE(std::isfinite(c.costs[i]) && c.costs[i] > 0.0, op, "chain ", l, " cost ", i,
                     " is ", c.costs[i], "; expected finite and > 0");
    }
  }
  // Weight of each chain's gains: 1, or 1 / total (an all-zero layer weighs nothing).
  std::vector<double> weight(chains.size(), 1.0);
  double total = 0.0, kept = 0.0;
  std::vector<int64_t> steps(chains.size(), 1);
  for (std::size_t l = 0; l < chains.size(); ++l) {
    if (normalize) weight[l] = chains[l].total > 0.0 ? 1.0 / chains[l].total : 0.0;
    total += weight[l] * chains[l].total;
    kept += weight[l] * chains[l].gains[0];
  }
  // The same relative slack as rank_for_energy, so energy = 1 is reached despite rounding.
  const double target = energy * total * (1.0 - 1e-12);
  while (kept < target) {
    std::size_t best = chains.size();
    double best_ratio = -1.0;
    for (std::size_t l = 0; l < chains.size(); ++l) {
      const auto i = static_cast<std::size_t>(steps[l]);
      if (i >= chains[l].gains.size()) continue;
      const double ratio = weight[l] * chains[l].gains[i] / chains[l].costs[i];
      if (ratio > best_ratio) {
        best_ratio = ratio;
        best = l;
      }
    }
    if (best == chains.size()) break;  // every chain complete
    kept += weight[best] * chains[best].gains[static_cast<std::size_t>(steps[best])];
    ++steps[best];
  }
  return steps;
}

namespace {

void check_core_energy(const char* op, std::span<const double> e, int64_t ro, int64_t ri,
                       int64_t co, int64_t ci, int64_t hw) {
  FRUGAL_REQUIRE(ro >= 1 && ri >= 1 && co >= 1 && ci >= 1 && hw >= 1, op,
                 "extents must be positive, got R_out ", ro, ", R_in ", ri, ", C_out ", co,
                 ", C_in ", ci, ", hw ", hw);
  FRUGAL_REQUIRE(static_cast<int64_t>(e.size()) == ro * ri, op, "core energy has ", e.size(),
                 " values; expected R_out R_in = ", ro * ri);
  check_values(op, e);
}

int64_t tucker2_cost(int64_t co, int64_t ci, int64_t hw, int64_t r1, int64_t r2) {
  return ci * r2 + r2 * r1 * hw + r1 * co;
}

/// kept[a][b] = sum_{a' < a, b' < b} e[a', b'] ((R_out + 1) x (R_in + 1) prefix sums).
std::vector<double> prefix_sums(std::span<const double> e, int64_t ro, int64_t ri) {
  std::vector<double> p(static_cast<std::size_t>((ro + 1) * (ri + 1)), 0.0);
  for (int64_t a = 0; a < ro; ++a)
    for (int64_t b = 0; b < ri; ++b) {
      const auto at = [&](int64_t x, int64_t y) {
        return p[static_cast<std::size_t>(x * (ri + 1) + y)];
      };
      p[static_cast<std::size_t>((a + 1) * (ri + 1) + b + 1)] =
          e[static_cast<std::size_t>(a * ri + b)] + at(a, b + 1) + at(a + 1, b) - at(a, b);
    }
  return p;
}

}  // namespace

Tucker2Ranks tucker2_ranks_for_core_energy(std::span<const double> e, int64_t r_out_max,
                                           int64_t r_in_max, int64_t c_out, int64_t c_in,
                                           int64_t hw, double energy) {
  const char* op = "tucker2_ranks_for_core_energy";
  check_core_energy(op, e, r_out_max, r_in_max, c_out, c_in, hw);
  FRUGAL_REQUIRE(energy > 0.0 && energy <= 1.0, op, "energy ", energy, " outside (0, 1]");
  const std::vector<double> p = prefix_sums(e, r_out_max, r_in_max);
  const double total = p.back();
  if (total == 0.0) return {1, 1};
  const double target = energy * total * (1.0 - 1e-12);
  Tucker2Ranks best{r_out_max, r_in_max};
  int64_t best_cost = tucker2_cost(c_out, c_in, hw, r_out_max, r_in_max);
  for (int64_t a = 1; a <= r_out_max; ++a)
    for (int64_t b = 1; b <= r_in_max; ++b) {
      if (p[static_cast<std::size_t>(a * (r_in_max + 1) + b)] < target) continue;
      const int64_t cost = tucker2_cost(c_out, c_in, hw, a, b);
      if (cost < best_cost) {
        best_cost = cost;
        best = {a, b};
      }
    }
  return best;
}

int64_t tucker2_folded_params(int64_t c_out, int64_t c_in, int64_t hw, int64_t r_out,
                              int64_t r_in) {
  const char* op = "tucker2_folded_params";
  FRUGAL_REQUIRE(c_out > 0 && c_in > 0 && hw > 0, op, "kernel (", c_out, ", ", c_in, ", ", hw,
                 ") must be positive");
  FRUGAL_REQUIRE(r_out >= 1 && r_out <= c_out && r_in >= 1 && r_in <= c_in, op, "ranks (", r_out,
                 ", ", r_in, ") outside [1, ", c_out, "] x [1, ", c_in, "]");
  return (r_in < c_in ? c_in * r_in : 0) + r_in * r_out * hw + (r_out < c_out ? r_out * c_out : 0);
}

Tucker2Ranks tucker2_ranks_for_kept(std::span<const double> kept, int64_t r_out_max,
                                    int64_t r_in_max, int64_t c_out, int64_t c_in, int64_t hw,
                                    double energy) {
  const char* op = "tucker2_ranks_for_kept";
  FRUGAL_REQUIRE(c_out > 0 && c_in > 0 && hw > 0, op, "kernel (", c_out, ", ", c_in, ", ", hw,
                 ") must be positive");
  FRUGAL_REQUIRE(r_out_max >= 1 && r_out_max <= c_out && r_in_max >= 1 && r_in_max <= c_in, op,
                 "maximum ranks (", r_out_max, ", ", r_in_max, ") outside [1, ", c_out, "] x [1, ",
                 c_in, "]");
  FRUGAL_REQUIRE(static_cast<int64_t>(kept.size()) == r_out_max * r_in_max, op, "table has ",
                 kept.size(), " entries; expected ", r_out_max, " x ", r_in_max);
  FRUGAL_REQUIRE(energy > 0.0 && energy <= 1.0, op, "energy ", energy, " outside (0, 1]");
  for (std::size_t i = 0; i < kept.size(); ++i) {
    FRUGAL_REQUIRE(std::isfinite(kept[i]), op, "entry ", i, " is ", kept[i]);
  }
  // Relative slack for the rounding of sums that reach the target exactly (as rank_for_energy).
  const double target = energy * (1.0 - 1e-12);
  Tucker2Ranks best{r_out_max, r_in_max};
  int64_t best_cost = -1;
  for (int64_t a = 1; a <= r_out_max; ++a)
    for (int64_t b = 1; b <= r_in_max; ++b) {
      if (kept[static_cast<std::size_t>((a - 1) * r_in_max + (b - 1))] < target) continue;
      const int64_t cost = tucker2_folded_params(c_out, c_in, hw, a, b);
      if (best_cost < 0 || cost < best_cost) {
        best_cost = cost;
        best = {a, b};
      }
    }
  return best;
}

Tucker2Chain tucker2_energy_chain(std::span<const double> e, int64_t r_out_max, int64_t r_in_max,
                                  int64_t c_out, int64_t c_in, int64_t hw) {
  const char* op = "tucker2_energy_chain";
  check_core_energy(op, e, r_out_max, r_in_max, c_out, c_in, hw);
  const std::vector<double> p = prefix_sums(e, r_out_max, r_in_max);
  const auto kept = [&](int64_t a, int64_t b) {
    return p[static_cast<std::size_t>(a * (r_in_max + 1) + b)];
  };
  Tucker2Chain c;
  c.chain.total = p.back();
  int64_t a = 1, b = 1;
  c.chain.gains.push_back(kept(1, 1));
  c.chain.costs.push_back(static_cast<double>(tucker2_cost(c_out, c_in, hw, 1, 1)));
  c.ranks.push_back({1, 1});
  while (a < r_out_max || b < r_in_max) {
    const double here = kept(a, b);
    const auto cost_here = static_cast<double>(tucker2_cost(c_out, c_in, hw, a, b));
    double ga = -1.0, gb = -1.0, ca = 1.0, cb = 1.0;
    if (a < r_out_max) {
      ga = kept(a + 1, b) - here;
      ca = static_cast<double>(tucker2_cost(c_out, c_in, hw, a + 1, b)) - cost_here;
    }
    if (b < r_in_max) {
      gb = kept(a, b + 1) - here;
      cb = static_cast<double>(tucker2_cost(c_out, c_in, hw, a, b + 1)) - cost_here;
    }
    const bool take_out = b >= r_in_max || (a < r_out_max && ga / ca >= gb / cb);
    if (take_out) {
      ++a;
      c.chain.gains.push_back(std::max(ga, 0.0));
      c.chain.costs.push_back(ca);
    } else {
      ++b;
      c.chain.gains.push_back(std::max(gb, 0.0));
      c.chain.costs.push_back(cb);
    }
    c.ranks.push_back({a, b});
  }
  return c;
}

std::vector<double> host_values(const Tensor& s) {
  FRUGAL_REQUIRE(s.defined() && s.rank() == 1, "host_values", "expected a rank-1 tensor");
  return s.to_vector<double>();
}

}  // namespace frugal::lowrank
