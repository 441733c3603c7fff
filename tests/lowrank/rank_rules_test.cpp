// The rank rules beyond one layer's spectrum: the global energy allocation (against exhaustive
// search and a common-threshold closed form), the Tucker-2 core energy (against explicit
// residuals), channel / spatial SVD of kernels (against Eigen in double on loop-built
// reshapings) and response bases (against an explicit eigen-decomposition of Y^T Y in double).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <eigen3/Eigen/Dense>
#include <functional>
#include <limits>
#include <numeric>
#include <vector>

#include "frugal/core/ops.hpp"
#include "frugal/lowrank/rank.hpp"
#include "frugal/lowrank/response.hpp"
#include "frugal/lowrank/svd.hpp"
#include "frugal/lowrank/tensor_decomp.hpp"
#include "frugal/ref/lowrank.hpp"
#include "support/check.hpp"
#include "support/tolerance.hpp"

namespace frugal {
namespace {

using frugal::testing::expect_error;
using frugal::testing::random_f64;
using lowrank::EnergyChain;
using Mat = Eigen::MatrixXd;

Mat to_mat(const Tensor& t) {
  const std::vector<double> v = t.to_vector<double>();
  Mat m(t.dim(0), t.numel() / t.dim(0));
  for (Eigen::Index i = 0; i < m.rows(); ++i)
    for (Eigen::Index j = 0; j < m.cols(); ++j) m(i, j) = v[i * m.cols() + j];
  return m;
}

EnergyChain chain_of(std::vector<double> s, double cost) {
  EnergyChain c;
  for (double v : s) {
    c.gains.push_back(v * v);
    c.costs.push_back(cost);
    c.total += v * v;
  }
  return c;
}

TEST(GlobalEnergy, EqualCostsAreACommonThresholdOnSquaredSingularValues) {
  // Four layers of one shape (the GPT MLP case): the allocation keeps the largest s_i^2 of all
  // layers together until 90% of the summed energy, i.e. one threshold on s_i^2.
  std::vector<std::vector<double>> s = {
      {5, 3, 2, 1, .5}, {4, 4, 1, .2, .1}, {6, 1, 1, 1, 1}, {2, 2, 2, 2, 2}};
  std::vector<EnergyChain> chains;
  std::vector<double> all;
  double total = 0;
  for (auto& v : s) {
    chains.push_back(lowrank::matrix_energy_chain(v, 7, 9));
    for (double x : v) {
      all.push_back(x * x);
      total += x * x;
    }
  }
  std::sort(all.rbegin(), all.rend());
  // Independent: smallest K with the top-K values >= 0.9 total, then the threshold all[K-1];
  // the first step of every chain is forced (rank >= 1), so count those too.
  double acc = 0;
  std::size_t k = 0;
  while (acc < 0.9 * total) acc += all[k++];
  const double threshold = all[k - 1];
  const std::vector<int64_t> steps = lowrank::allocate_global_energy(chains, 0.9);
  for (std::size_t l = 0; l < s.size(); ++l) {
    int64_t want = 0;
    for (double x : s[l]) want += x * x >= threshold ? 1 : 0;
    // Ties at the threshold may stop early: at most the count, at least the strict count.
    int64_t strict = 0;
    for (double x : s[l]) strict += x * x > threshold ? 1 : 0;
    EXPECT_LE(steps[l], std::max<int64_t>(want, 1)) << "layer " << l;
    EXPECT_GE(steps[l], std::max<int64_t>(strict, 1)) << "layer " << l;
  }
  double kept = 0;
  for (std::size_t l = 0; l < s.size(); ++l)
    for (int64_t i = 0; i < steps[l]; ++i) kept += s[l][i] * s[l][i];
  EXPECT_GE(kept, 0.9 * total * (1 - 1e-12));
}

TEST(GlobalEnergy, NoAllocationKeepsMoreEnergyForItsCost) {
  // Chains of different costs per rank with decreasing singular values: the greedy allocation is
  // the fractional-knapsack optimum at its own cost, so exhaustive search finds nothing that
  // keeps more energy for at most the same number of parameters.
  const std::vector<EnergyChain> chains = {chain_of({3, 2.5, 1, .7, .2}, 10),
                                           chain_of({5, 1, .9, .3}, 25),
                                           chain_of({1.5, 1.4, 1.3, 1.2, .1, .05}, 6)};
  for (double e : {0.5, 0.8, 0.9, 0.97, 1.0}) {
    const std::vector<int64_t> steps = lowrank::allocate_global_energy(chains, e);
    double cost = 0, kept = 0, total = 0;
    for (std::size_t l = 0; l < chains.size(); ++l) {
      total += chains[l].total;
      for (int64_t i = 0; i < steps[l]; ++i) {
        cost += chains[l].costs[i];
        kept += chains[l].gains[i];
      }
    }
    EXPECT_GE(kept, e * total * (1 - 1e-12)) << e;
    for (int a = 1; a <= 5; ++a)
      for (int b = 1; b <= 4; ++b)
        for (int c = 1; c <= 6; ++c) {
          const int n[3] = {a, b, c};
          double cc = 0, kk = 0;
          for (int l = 0; l < 3; ++l)
            for (int i = 0; i < n[l]; ++i) {
              cc += chains[l].costs[i];
              kk += chains[l].gains[i];
            }
          if (cc <= cost) {
            EXPECT_LE(kk, kept * (1 + 1e-12)) << "energy " << e << " ranks " << a << b << c;
          }
        }
  }
}

TEST(GlobalEnergy, NormalizedIgnoresEachLayersScaleAndCapAtDense) {
  std::vector<EnergyChain> chains = {chain_of({3, 2, 1, .5}, 8), chain_of({4, 1, 1, .1}, 8)};
  const std::vector<int64_t> a = lowrank::allocate_global_energy(chains, 0.85, true);
  for (double& g : chains[1].gains) g *= 1e6;
  chains[1].total *= 1e6;
  EXPECT_EQ(lowrank::allocate_global_energy(chains, 0.85, true), a);
  // Raw energies: the scaled layer now takes everything it can, the other stays at rank 1.
  const std::vector<int64_t> raw = lowrank::allocate_global_energy(chains, 0.85);
  EXPECT_EQ(raw[0], 1);

  // cap_at_dense: a (6, 4) matrix costs 10 per rank, dense 24: ranks 1 and 2 stay (10, 20 < 24),
  // then one dense step with the remaining energy for the remaining 4 parameters.
  const EnergyChain c = lowrank::cap_at_dense(
      lowrank::matrix_energy_chain(std::vector<double>{4, 3, 2, 1}, 6, 4), 24.0);
  ASSERT_EQ(c.gains.size(), 3u);
  EXPECT_TRUE(c.last_is_dense);
  EXPECT_EQ(c.gains[2], 4.0 + 1.0);
  EXPECT_EQ(c.costs[2], 4.0);
  const EnergyChain one = lowrank::cap_at_dense(chain_of({1, 1}, 30), 24.0);
  ASSERT_EQ(one.gains.size(), 1u);
  EXPECT_TRUE(one.last_is_dense);
  EXPECT_EQ(one.gains[0], 2.0);
}

/// W with multilinear rank (r_out, r_in) in the channel modes plus a small perturbation.
Tensor tucker_kernel(int64_t co, int64_t ci, int64_t kh, int64_t kw, int64_t r1, int64_t r2,
                     double noise, uint64_t seed) {
  const std::vector<double> core = ref::gaussian(r1, r2 * kh * kw, seed);
  const std::vector<double> uo = ref::orthonormal_columns(co, r1, seed + 1);
  const std::vector<double> ui = ref::orthonormal_columns(ci, r2, seed + 2);
  std::vector<double> w = ref::tucker2_reconstruct(core, uo, ui, co, ci, r1, r2, kh, kw);
  const std::vector<double> e = ref::gaussian(co, ci * kh * kw, seed + 3);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] += noise * e[i];
  return Tensor::from_vector(w, {co, ci, kh, kw});
}

TEST(Tucker2CoreEnergy, TruncatedCoreEnergyIsTheKeptEnergy) {
  const Tensor w = tucker_kernel(6, 5, 3, 2, 3, 2, 0.05, 11);
  const Tensor e = lowrank::tucker2_core_energy(w);
  ASSERT_EQ(e.shape(), (Shape{6, 5}));
  const std::vector<double> ev = e.to_vector<double>();
  const double norm = lowrank::frobenius_norm_sq(w);
  EXPECT_NEAR(std::accumulate(ev.begin(), ev.end(), 0.0), norm, 1e-10 * norm);  // orthogonal
  for (auto [a, b] : {std::pair<int64_t, int64_t>{1, 1}, {3, 2}, {2, 4}, {6, 5}}) {
    double kept = 0;
    for (int64_t i = 0; i < a; ++i)
      for (int64_t j = 0; j < b; ++j) kept += ev[i * 5 + j];
    // Independent: the explicit residual of the truncated reconstruction.
    const lowrank::Tucker2Result t = lowrank::tucker2(w, a, b);
    const double res = lowrank::frobenius_norm_sq(sub(w, lowrank::tucker2_reconstruct(t)));
    EXPECT_NEAR(kept, norm - res, 1e-10 * norm) << a << "x" << b;  // f64 rounding
  }
  // Exact multilinear rank (3, 2): all of the energy at ranks (3, 2), the cheapest full pair.
  const Tensor exact = tucker_kernel(6, 5, 3, 2, 3, 2, 0.0, 12);
  const std::vector<double> ee = lowrank::tucker2_core_energy(exact).to_vector<double>();
  const lowrank::Tucker2Ranks r = lowrank::tucker2_ranks_for_core_energy(ee, 6, 5, 6, 5, 6, 1.0);
  EXPECT_EQ(r.out, 3);
  EXPECT_EQ(r.in, 2);
  // The chain walks from (1, 1) to (R_out, R_in) one rank at a time, total = all energy.
  const lowrank::Tucker2Chain c = lowrank::tucker2_energy_chain(ev, 6, 5, 6, 5, 6);
  ASSERT_EQ(c.ranks.size(), static_cast<std::size_t>(6 + 5 - 1));
  EXPECT_EQ(c.ranks.back().out, 6);
  EXPECT_EQ(c.ranks.back().in, 5);
  EXPECT_NEAR(std::accumulate(c.chain.gains.begin(), c.chain.gains.end(), 0.0), norm,
              1e-10 * norm);  // telescoping prefix sums
}

TEST(ConvSvd, ChannelAndSpatialFactorsReconstructTheTruncatedKernel) {
  const int64_t co = 5, ci = 3, kh = 3, kw = 2;
  const Tensor w = random_f64({co, ci, kh, kw}, 21);
  const std::vector<double> wv = w.to_vector<double>();
  auto at = [&](int64_t o, int64_t c, int64_t h, int64_t x) {
    return wv[((o * ci + c) * kh + h) * kw + x];
  };
  // Independent reshapings built by loops, truncated with Eigen's JacobiSVD in double.
  Mat mc(co, ci * kh * kw), ms(ci * kh, co * kw);
  for (int64_t o = 0; o < co; ++o)
    for (int64_t c = 0; c < ci; ++c)
      for (int64_t h = 0; h < kh; ++h)
        for (int64_t x = 0; x < kw; ++x) {
          mc(o, (c * kh + h) * kw + x) = at(o, c, h, x);
          ms(c * kh + h, o * kw + x) = at(o, c, h, x);
        }
  EXPECT_TRUE(to_mat(lowrank::spatial_unfold(w)).isApprox(ms, 1e-15));
  EXPECT_TRUE(to_mat(lowrank::channel_unfold(w)).isApprox(mc, 1e-15));
  for (int64_t r : {1, 2, 3}) {
    const lowrank::ConvSvdResult ch = lowrank::channel_svd(w, r);
    const lowrank::ConvSvdResult sp = lowrank::spatial_svd(w, r);
    EXPECT_EQ(ch.first.shape(), (Shape{r, ci, kh, kw}));
    EXPECT_EQ(ch.second.shape(), (Shape{co, r, 1, 1}));
    EXPECT_EQ(sp.first.shape(), (Shape{r, ci, kh, 1}));
    EXPECT_EQ(sp.second.shape(), (Shape{co, r, 1, kw}));
    // Kernels composed by the definition of the two convolutions.
    const std::vector<double> f1 = ch.first.to_vector<double>(), f2 = ch.second.to_vector<double>();
    const std::vector<double> v = sp.first.to_vector<double>(), hz = sp.second.to_vector<double>();
    Mat kc(co, ci * kh * kw), ks(ci * kh, co * kw);
    for (int64_t o = 0; o < co; ++o)
      for (int64_t c = 0; c < ci; ++c)
        for (int64_t h = 0; h < kh; ++h)
          for (int64_t x = 0; x < kw; ++x) {
            double a = 0, b = 0;
            for (int64_t q = 0; q < r; ++q) {
              a += f2[o * r + q] * f1[((q * ci + c) * kh + h) * kw + x];
              b += hz[(o * r + q) * kw + x] * v[(q * ci + c) * kh + h];
            }
            kc(o, (c * kh + h) * kw + x) = a;
            ks(c * kh + h, o * kw + x) = b;
          }
    for (auto [m, k, err] : {std::tuple{mc, kc, ch.relative_error}, {ms, ks, sp.relative_error}}) {
      Eigen::JacobiSVD<Mat> svd(m, Eigen::ComputeThinU | Eigen::ComputeThinV);
      const Mat best = svd.matrixU().leftCols(r) * svd.singularValues().head(r).asDiagonal() *
                       svd.matrixV().leftCols(r).transpose();
      EXPECT_LT((k - best).norm(), 1e-12 * m.norm());  // f64 rounding; distinct singular values
      EXPECT_NEAR(err, (m - best).norm() / m.norm(), 1e-12);
    }
  }
}

/// Eigen-decomposition in double of (Y - mean)^T (Y - mean): eigenvalues descending, vectors.
std::pair<Eigen::VectorXd, Mat> eig_of(const Mat& y, bool centered) {
  Mat d = y;
  if (centered) d.rowwise() -= y.colwise().mean();
  Eigen::SelfAdjointEigenSolver<Mat> es(d.transpose() * d);
  return {es.eigenvalues().reverse(), es.eigenvectors().rowwise().reverse()};
}

TEST(ResponseBasis, MatchesAnExplicitEigenDecompositionInDouble) {
  // Correlated inputs (a low-dimensional signal plus noise), as the activations of a network.
  const int64_t rows = 200, n = 12, m = 8;
  const Mat z = to_mat(random_f64({rows, 3}, 31)), mix = to_mat(random_f64({3, n}, 32));
  Mat x = z * mix + 0.05 * to_mat(random_f64({rows, n}, 33));
  x.array() += 0.7;  // a mean, so centering matters
  std::vector<double> xv(x.size());
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < n; ++j) xv[i * n + j] = x(i, j);
  const Tensor xt = Tensor::from_vector(xv, {rows, n});
  const Tensor w = random_f64({m, n}, 34);
  const Mat y = x * to_mat(w).transpose();
  for (bool centered : {false, true}) {
    const auto [lambda, vecs] = eig_of(y, centered);
    const lowrank::ResponseBasis a = lowrank::linear_response_basis(xt, w, centered);
    const lowrank::ResponseBasis b =
        lowrank::response_basis(gemm(xt, w, {.trans_b = true}), centered);
    for (const lowrank::ResponseBasis* p : {&a, &b}) {
      const std::vector<double> s = p->s.to_vector<double>();
      ASSERT_EQ(static_cast<int64_t>(s.size()), m);
      for (int64_t i = 0; i < m; ++i) {
        EXPECT_NEAR(s[i] * s[i], lambda(i), 1e-9 * lambda(0)) << i;  // f64 rounding of sums
      }
      // Same top-r subspaces (projectors), r where the spectrum has a gap.
      for (int64_t r : {1, 2, 3}) {
        const Mat u = to_mat(p->u).leftCols(r);
        const Mat v = vecs.leftCols(r);
        EXPECT_LT((u * u.transpose() - v * v.transpose()).norm(), 1e-8) << r;  // gap >> eps
      }
      // The 90% rank from the explicit eigenvalues.
      std::vector<double> root(m);
      for (int64_t i = 0; i < m; ++i) root[i] = std::sqrt(std::max(0.0, lambda(i)));
      EXPECT_EQ(lowrank::rank_for_energy(s, 0.9), lowrank::rank_for_energy(root, 0.9));
      const Eigen::VectorXd mean = y.colwise().mean().transpose();
      const Mat mu = to_mat(p->mean.reshape({m, 1}));
      EXPECT_LT((mu - (centered ? Mat(mean) : Mat::Zero(m, 1))).norm(), 1e-12 * mean.norm());
    }
    // Centered, the rank-3 signal leaves almost nothing in the other directions.
    if (centered) {
      EXPECT_LT(lambda(3), 0.01 * lambda(0));
    }
  }
}

TEST(ResponseBasis, ProjectOutputFactorsAndMeanShift) {
  const Tensor w = random_f64({6, 4, 3, 3}, 41);
  const Tensor q = lowrank::qr(random_f64({6, 2}, 42)).q;  // orthonormal (6, 2)
  const Tensor mean = random_f64({6}, 43);
  const lowrank::ProjectedFactors f = lowrank::project_output(w, q, mean);
  EXPECT_EQ(f.first.shape(), (Shape{2, 4, 3, 3}));
  const Mat u = to_mat(q), wm = to_mat(w.reshape({6, 36}));
  EXPECT_LT((to_mat(f.first.reshape({2, 36})) - u.transpose() * wm).norm(), 1e-13);
  const Mat mu = to_mat(mean.reshape({6, 1}));
  const Mat shift = mu - u * (u.transpose() * mu);
  EXPECT_LT((to_mat(f.bias_shift.reshape({6, 1})) - shift).norm(), 1e-13);  // f64 rounding
  EXPECT_NEAR(f.relative_error, (wm - u * u.transpose() * wm).norm() / wm.norm(), 1e-13);
}

TEST(RankRules, BadInput) {
  const std::vector<EnergyChain> none;
  expect_error([&] { lowrank::allocate_global_energy(none, 0.9); }, ErrorCode::kInvalidArgument,
               "allocate_global_energy");
  const std::vector<EnergyChain> one = {chain_of({1, 2}, 3)};
  expect_error([&] { lowrank::allocate_global_energy(one, 0.0); }, ErrorCode::kInvalidArgument,
               "allocate_global_energy");
  expect_error([&] { lowrank::allocate_global_energy(one, 1.5); }, ErrorCode::kInvalidArgument,
               "allocate_global_energy");
  std::vector<EnergyChain> bad = {chain_of({1, 2}, 3)};
  bad[0].costs[1] = 0;
  expect_error([&] { lowrank::allocate_global_energy(bad, 0.9); }, ErrorCode::kInvalidArgument,
               "allocate_global_energy");
  bad[0] = chain_of({1, 2}, 3);
  bad[0].gains[0] = std::numeric_limits<double>::quiet_NaN();
  expect_error([&] { lowrank::allocate_global_energy(bad, 0.9); }, ErrorCode::kInvalidArgument,
               "allocate_global_energy");
  bad[0] = chain_of({1, 2}, 3);
  bad[0].costs.pop_back();
  expect_error([&] { lowrank::allocate_global_energy(bad, 0.9); }, ErrorCode::kInvalidArgument,
               "allocate_global_energy");
  expect_error([&] { lowrank::cap_at_dense(one[0], 0.0); }, ErrorCode::kInvalidArgument,
               "cap_at_dense");
  const std::vector<double> e4 = {1, 2, 3, 4};
  expect_error([&] { lowrank::tucker2_ranks_for_core_energy(e4, 2, 3, 2, 3, 9, 0.9); },
               ErrorCode::kInvalidArgument, "tucker2_ranks_for_core_energy");
  expect_error([&] { lowrank::tucker2_ranks_for_core_energy(e4, 2, 2, 2, 3, 9, 0.0); },
               ErrorCode::kInvalidArgument, "tucker2_ranks_for_core_energy");
  const std::vector<double> eneg = {1, -2, 3, 4};
  expect_error([&] { lowrank::tucker2_energy_chain(eneg, 2, 2, 2, 3, 9); },
               ErrorCode::kInvalidArgument, "tucker2_energy_chain");

  const Tensor k = random_f64({4, 3, 3, 3}, 1);
  expect_error([&] { lowrank::channel_svd(k, 0); }, ErrorCode::kInvalidArgument, "channel_svd");
  expect_error([&] { lowrank::channel_svd(k, 5); }, ErrorCode::kInvalidArgument, "channel_svd");
  expect_error([&] { lowrank::spatial_svd(k, 10); }, ErrorCode::kInvalidArgument, "spatial_svd");
  expect_error(
      [&] {
        lowrank::spatial_svd(random_f64({4, 3}, 2), 1);
      },
      ErrorCode::kInvalidArgument, "spatial_svd");
  expect_error(
      [&] {
        lowrank::tucker2_core_energy(Tensor::zeros({0, 3, 3, 3}, DType::kF64));
      },
      ErrorCode::kInvalidArgument, "tucker2_core_energy");
  expect_error([&] { lowrank::channel_unfold(k.to(DType::kI32)); }, ErrorCode::kInvalidArgument,
               "channel_unfold");

  const Tensor x = random_f64({10, 5}, 3), w = random_f64({4, 5}, 4);
  expect_error(
      [&] {
        lowrank::linear_response_basis(x, random_f64({4, 6}, 5));
      },
      ErrorCode::kInvalidArgument, "linear_response_basis");
  expect_error([&] { lowrank::linear_response_basis(x, w.to(DType::kF32)); },
               ErrorCode::kInvalidArgument, "linear_response_basis");
  Tensor nan = x.clone();
  nan.view().data_as<double>()[3] = std::numeric_limits<double>::quiet_NaN();
  expect_error([&] { lowrank::linear_response_basis(nan, w); }, ErrorCode::kInvalidArgument,
               "linear_response_basis");
  expect_error(
      [&] {
        lowrank::response_basis(Tensor::zeros({0, 4}, DType::kF64));
      },
      ErrorCode::kInvalidArgument, "response_basis");
  expect_error(
      [&] {
        lowrank::response_basis(random_f64({3, 4, 2}, 6));
      },
      ErrorCode::kInvalidArgument, "response_basis");
  const Tensor q = lowrank::qr(random_f64({4, 2}, 7)).q;
  expect_error(
      [&] {
        lowrank::project_output(random_f64({5, 5}, 8), q);
      },
      ErrorCode::kInvalidArgument, "project_output");
  expect_error([&] { lowrank::project_output(w, q, random_f64({3}, 9)); },
               ErrorCode::kInvalidArgument, "project_output");
  expect_error([&] { lowrank::project_output(random_f64({4}, 8), q); }, ErrorCode::kInvalidArgument,
               "project_output");
}

}  // namespace
}  // namespace frugal
