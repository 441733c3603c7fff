// The rank rules and decompositions of factorize_model beyond per-layer weight energy: channel /
// spatial SVD convolutions, response (data-aware) factorizations and the global energy budget,
// each against its reconstructed dense layer built independently (Eigen in double).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <eigen3/Eigen/Dense>
#include <vector>

#include "frugal/core/ops.hpp"
#include "frugal/lowrank/rank.hpp"
#include "frugal/lowrank/svd.hpp"
#include "frugal/nn/activation.hpp"
#include "frugal/nn/lowrank_layers.hpp"
#include "frugal/nn/models.hpp"
#include "frugal/nn/pool.hpp"
#include "support/check.hpp"
#include "support/tolerance.hpp"

namespace frugal::nn {
namespace {

using frugal::testing::all_close;
using frugal::testing::expect_error;
using frugal::testing::random_f64;
using Mat = Eigen::MatrixXd;

Mat to_mat(const Tensor& t) {
  const std::vector<double> v = t.contiguous().to_vector<double>();
  Mat m(t.dim(0), t.numel() / t.dim(0));
  for (Eigen::Index i = 0; i < m.rows(); ++i)
    for (Eigen::Index j = 0; j < m.cols(); ++j) m(i, j) = v[i * m.cols() + j];
  return m;
}

Tensor to_tensor(const Mat& m, Shape shape) {
  std::vector<double> v(m.size());
  for (Eigen::Index i = 0; i < m.rows(); ++i)
    for (Eigen::Index j = 0; j < m.cols(); ++j) v[i * m.cols() + j] = m(i, j);
  return Tensor::from_vector(v, shape);
}

Tensor dense_conv(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& p) {
  return conv2d(x, w, bias.defined() ? bias.cview() : ConstTensorView{}, p);
}

/// Top-r eigenvectors (descending) of the (centered) second moment of y's rows, in double.
Mat top_directions(const Mat& y, bool centered, int64_t r, Eigen::VectorXd* lambda = nullptr) {
  Mat d = y;
  if (centered) d.rowwise() -= y.colwise().mean();
  Eigen::SelfAdjointEigenSolver<Mat> es(d.transpose() * d);
  if (lambda != nullptr) *lambda = es.eigenvalues().reverse();
  return es.eigenvectors().rowwise().reverse().leftCols(r);
}

/// Rows sharing a 3-dimensional signal plus noise and a mean (correlated activations).
Tensor correlated(int64_t rows, int64_t n, uint32_t seed) {
  const Mat z = to_mat(random_f64({rows, 3}, seed)), mix = to_mat(random_f64({3, n}, seed + 1));
  Mat x = z * mix + 0.05 * to_mat(random_f64({rows, n}, seed + 2));
  x.array() += 0.5;
  return to_tensor(x, {rows, n});
}

TEST(FactorizeConv, ChannelAndSpatialMatchTheirReconstructedDenseConv) {
  // Different stride, padding and dilation per axis, so the kx1 / 1xk split is exercised.
  const Conv2dOptions o{.stride = Size2{2, 1}, .padding = Size2{1, 2}, .dilation = Size2{1, 2}};
  Conv2d conv(3, 5, Size2{3, 2}, o, 9, DType::kF64);
  const Tensor w = conv.weight().value;
  const Tensor x = random_f64({2, 3, 8, 7}, 3);
  for (int64_t r : {2, 4}) {
    auto ch = factorize_conv_channel(conv, r);
    auto sp = factorize_conv_spatial(conv, r);
    EXPECT_EQ(ch->type_name(), "ChannelConv2d");
    EXPECT_EQ(sp->type_name(), "SpatialConv2d");
    // Independent truncations in double of the two reshapings, built by loops.
    const std::vector<double> wv = w.to_vector<double>();
    Mat mc(5, 18), ms(9, 10);
    for (int64_t oc = 0; oc < 5; ++oc)
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t h = 0; h < 3; ++h)
          for (int64_t q = 0; q < 2; ++q) {
            const double v = wv[((oc * 3 + c) * 3 + h) * 2 + q];
            mc(oc, (c * 3 + h) * 2 + q) = v;
            ms(c * 3 + h, oc * 2 + q) = v;
          }
    auto trunc = [&](const Mat& m) {
      Eigen::JacobiSVD<Mat> s(m, Eigen::ComputeThinU | Eigen::ComputeThinV);
      return Mat(s.matrixU().leftCols(r) * s.singularValues().head(r).asDiagonal() *
                 s.matrixV().leftCols(r).transpose());
    };
    const Mat tc = trunc(mc), ts = trunc(ms);
    std::vector<double> kc(wv.size()), ks(wv.size());
    for (int64_t oc = 0; oc < 5; ++oc)
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t h = 0; h < 3; ++h)
          for (int64_t q = 0; q < 2; ++q) {
            kc[((oc * 3 + c) * 3 + h) * 2 + q] = tc(oc, (c * 3 + h) * 2 + q);
            ks[((oc * 3 + c) * 3 + h) * 2 + q] = ts(c * 3 + h, oc * 2 + q);
          }
    const Tensor b = conv.bias()->value;
    EXPECT_TRUE(all_close(ch->forward(x),
                          dense_conv(x, Tensor::from_vector(kc, w.shape()), b, conv.params()), 0.0,
                          1e-12));  // f64, another summation order
    EXPECT_TRUE(all_close(sp->forward(x),
                          dense_conv(x, Tensor::from_vector(ks, w.shape()), b, conv.params()), 0.0,
                          1e-12));  // f64, another summation order
  }
  // Full rank reproduces the layer.
  EXPECT_TRUE(all_close(factorize_conv_channel(conv, 5)->forward(x), conv.forward(x), 0.0, 1e-12));
  EXPECT_TRUE(all_close(factorize_conv_spatial(conv, 9)->forward(x), conv.forward(x), 0.0, 1e-12));
}

TEST(FactorizeResponse, LinearMatchesItsProjectedDenseLayer) {
  const int64_t in = 10, out = 7, r = 3;
  Linear lin(in, out, true, 4, DType::kF64);
  const Tensor calib = correlated(120, in, 5);
  const Mat w = to_mat(lin.weight().value), b = to_mat(lin.bias()->value.reshape({out, 1}));
  const Mat y = to_mat(calib) * w.transpose();
  const Tensor x = random_f64({6, in}, 8);
  for (bool centered : {true, false}) {
    auto seq = factorize_linear_response(lin, calib, r, centered);
    EXPECT_EQ(seq->type_name(), "LowRankLinear");
    const Mat u = top_directions(y, centered, r);
    const Mat p = u * u.transpose();
    Mat bias = b;
    if (centered) bias += (Mat::Identity(out, out) - p) * y.colwise().mean().transpose();
    const Mat want = (to_mat(x) * (p * w).transpose()).rowwise() + bias.col(0).transpose();
    EXPECT_TRUE(all_close(seq->forward(x), to_tensor(want, {6, out}), 0.0,
                          1e-10));  // eigenvectors of a gapped spectrum, f64
  }
  // The calibration outputs themselves are reproduced at full rank.
  auto full = factorize_linear_response(lin, calib, out);
  EXPECT_TRUE(all_close(full->forward(x), lin.forward(x), 0.0, 1e-12));  // f64 rounding
}

TEST(FactorizeResponse, ConvMatchesItsProjectedDenseConv) {
  const int64_t ci = 2, co = 6, r = 2;
  Conv2d conv(ci, co, Size2{3, 3}, Conv2dOptions{.padding = 1, .bias = false}, 6, DType::kF64);
  const Tensor calib = random_f64({4, ci, 5, 5}, 7, 0.f, 1.f);
  // Responses (N H W, C_out) by an explicit permutation of the dense conv's outputs.
  const Tensor yc = dense_conv(calib, conv.weight().value, {}, conv.params());  // (4, 6, 5, 5)
  const std::vector<double> yv = yc.to_vector<double>();
  Mat y(4 * 25, co);
  for (int64_t n = 0; n < 4; ++n)
    for (int64_t c = 0; c < co; ++c)
      for (int64_t s = 0; s < 25; ++s) y(n * 25 + s, c) = yv[(n * co + c) * 25 + s];
  auto seq = factorize_conv_response(conv, calib, r);
  EXPECT_EQ(seq->type_name(), "ChannelConv2d");
  const Mat u = top_directions(y, true, r);
  const Mat p = u * u.transpose();
  const Mat wp = p * to_mat(conv.weight().value);
  const Mat shift = (Mat::Identity(co, co) - p) * y.colwise().mean().transpose();
  const Tensor x = random_f64({2, ci, 5, 5}, 9);
  EXPECT_TRUE(
      all_close(seq->forward(x),
                dense_conv(x, to_tensor(wp, {co, ci, 3, 3}), to_tensor(shift, {co}), conv.params()),
                0.0, 1e-10));  // eigenvectors of a gapped spectrum, f64
}

/// Squared singular values (descending) of the three Linear layers of `model` (Eigen, double).
std::vector<std::vector<double>> energies(Sequential& model) {
  std::vector<std::vector<double>> e;
  for (int i = 0; i < 3; ++i) {
    Eigen::JacobiSVD<Mat> svd(to_mat(dynamic_cast<Linear&>(model[i]).weight().value));
    std::vector<double> v;
    for (Eigen::Index k = 0; k < svd.singularValues().size(); ++k)
      v.push_back(svd.singularValues()(k) * svd.singularValues()(k));
    e.push_back(v);
  }
  return e;
}

/// By an independent count: every layer keeps its largest value (rank >= 1), then the largest
/// remaining s_i^2 of all layers together until `energy` of the summed energy (one threshold).
std::vector<int64_t> threshold_ranks(const std::vector<std::vector<double>>& e, double energy) {
  double total = 0, kept = 0;
  std::vector<std::pair<double, int>> rest;
  for (int i = 0; i < 3; ++i) {
    for (std::size_t k = 0; k < e[i].size(); ++k) {
      total += e[i][k];
      if (k == 0)
        kept += e[i][k];
      else
        rest.push_back({e[i][k], i});
    }
  }
  std::sort(rest.rbegin(), rest.rend());
  std::vector<int64_t> ranks(3, 1);
  for (std::size_t k = 0; k < rest.size() && kept < energy * total; ++k) {
    kept += rest[k].first;
    ++ranks[rest[k].second];
  }
  return ranks;
}

TEST(FactorizeModel, GlobalEnergyOnEqualShapesIsOneThresholdAndCanKeepLayersDense) {
  Sequential model;
  for (uint64_t seed : {1, 2, 3})
    model.add(std::make_shared<Linear>(24, 24, true, seed, DType::kF64));
  // Different scales, so the raw-energy threshold gives different ranks per layer.
  for (int i : {1, 2}) {
    auto& l = dynamic_cast<Linear&>(model[i]);
    l.weight().value.copy_from(scale(l.weight().value, 1.0 + 0.4 * i));
  }
  const std::vector<std::vector<double>> e = energies(model);
  const std::vector<int64_t> want = threshold_ranks(e, 0.6);
  for (int64_t r : want) ASSERT_LT(r * 48, 24 * 24) << "every share must save parameters";
  EXPECT_LT(want[0], want[2]);
  Sequential copy;
  for (int i = 0; i < 3; ++i) {
    auto& l = dynamic_cast<Linear&>(model[i]);
    auto c = std::make_shared<Linear>(24, 24, true, 0, DType::kF64);
    c->weight().value.copy_from(l.weight().value);
    copy.add(c);
  }
  const auto reports = factorize_model(model, lowrank::RankPolicy::global_energy(0.6));
  ASSERT_EQ(reports.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(reports[i].factorized) << i;
    EXPECT_EQ(reports[i].rank, want[i]) << i;
  }
  // At 97% a rank of 12 or more would cost as much as the dense (24, 24) weight: such layers
  // are kept dense (at least the largest), and the total energy kept still reaches 97%.
  const auto dense = factorize_model(copy, lowrank::RankPolicy::global_energy(0.97));
  ASSERT_EQ(dense.size(), 3u);
  EXPECT_FALSE(dense[2].factorized);
  double kept = 0, total = 0;
  for (int i = 0; i < 3; ++i) {
    double layer = 0, top = 0;
    for (std::size_t k = 0; k < e[i].size(); ++k) {
      layer += e[i][k];
      if (static_cast<int64_t>(k) < dense[i].rank) top += e[i][k];
    }
    total += layer;
    if (dense[i].factorized) {
      EXPECT_LT(dense[i].rank * 48, 24 * 24) << i;
      kept += top;
    } else {
      EXPECT_EQ(dense[i].reason, "the global energy allocation keeps it dense") << i;
      kept += layer;
    }
  }
  EXPECT_GE(kept, 0.97 * total * (1 - 1e-12));
}

TEST(FactorizeModel, ResponseEnergyUsesEachLayersRecordedInputs) {
  auto model = make_mlp({12, 16, 8, 4}, 3, DType::kF64);
  const Tensor calib = correlated(64, 12, 11);
  // Inputs of the second Linear ("2"): the first layers of the original model, run here.
  const Tensor h = (*model)[1].forward((*model)[0].forward(calib));
  const Mat y2 = to_mat(h) * to_mat(dynamic_cast<Linear&>((*model)[2]).weight().value).transpose();
  Eigen::VectorXd lambda;
  (void)top_directions(y2, true, 1, &lambda);
  std::vector<double> root(lambda.size());
  for (Eigen::Index i = 0; i < lambda.size(); ++i) root[i] = std::sqrt(std::max(0.0, lambda(i)));
  const int64_t want = lowrank::rank_for_energy(root, 0.9);
  const Tensor x = random_f64({5, 12}, 12);
  model->train(true);
  FactorizeOptions opt;
  opt.energy_source = EnergySource::kResponses;
  opt.calibration = calib;
  const auto reports = factorize_model(*model, lowrank::RankPolicy::energy(0.9), opt);
  ASSERT_EQ(reports.size(), 3u);
  EXPECT_EQ(reports[1].name, "2");
  EXPECT_EQ(reports[1].method, "response");
  EXPECT_EQ(reports[1].rank, want);
  for (const auto& r : reports) {
    if (r.factorized) {
      EXPECT_GE(r.energy_kept, 0.9 * (1 - 1e-12)) << r.name;
    }
  }
  EXPECT_TRUE(model->is_training());  // the calibration pass restores the mode
  EXPECT_EQ(model->forward(x).shape(), (Shape{5, 4}));
}

TEST(FactorizeModel, Tucker2CoreEnergyAndConvAlternativesKeepTheirEnergy) {
  for (ConvFactorization kind :
       {ConvFactorization::kTucker2, ConvFactorization::kChannel, ConvFactorization::kSpatial}) {
    Sequential model;
    model.add(
        std::make_shared<Conv2d>(8, 12, Size2{3, 3}, Conv2dOptions{.padding = 1}, 1, DType::kF64));
    FactorizeOptions opt;
    opt.conv = kind;
    opt.tucker2_energy = Tucker2Energy::kCore;
    const Tensor x = random_f64({1, 8, 5, 5}, 2);
    const Tensor before = model.forward(x);
    const auto rep = factorize_model(model, lowrank::RankPolicy::energy(0.7), opt);
    ASSERT_EQ(rep.size(), 1u);
    ASSERT_TRUE(rep[0].factorized) << rep[0].reason;
    // energy_kept = 1 - relative_error^2, both from the kernel: >= the asked 70%.
    EXPECT_GE(rep[0].energy_kept, 0.7 - 1e-12);
    EXPECT_NEAR(rep[0].energy_kept, 1 - rep[0].relative_error * rep[0].relative_error, 1e-12);
    EXPECT_LT(rep[0].params_after, rep[0].params_before);
    EXPECT_EQ(model.forward(x).shape(), before.shape());
  }
}

/// Rows (N H W, C) of maps (N, C, H, W), by explicit loops.
Mat map_rows(const Tensor& t) {
  const int64_t n = t.dim(0), c = t.dim(1), hw = t.dim(2) * t.dim(3);
  const std::vector<double> v = t.contiguous().to_vector<double>();
  Mat m(n * hw, c);
  for (int64_t a = 0; a < n; ++a)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t q = 0; q < hw; ++q) m(a * hw + q, ch) = v[(a * c + ch) * hw + q];
  return m;
}

/// Maps (N, C, H, W) with a 2-dimensional channel signal plus noise, positive (ReLU-like).
Tensor correlated_maps(int64_t n, int64_t c, int64_t h, uint32_t seed) {
  const Mat rows = to_mat(correlated(n * h * h, c, seed));  // (N H W, C), rank-3 signal
  std::vector<double> v(static_cast<std::size_t>(n * c * h * h));
  for (int64_t a = 0; a < n; ++a)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t q = 0; q < h * h; ++q)
        v[(a * c + ch) * h * h + q] = std::max(0.0, rows(a * h * h + q, ch));
  return Tensor::from_vector(v, {n, c, h, h});
}

int64_t count_params(Module& m) {
  int64_t n = 0;
  for (Parameter* p : m.parameters()) n += p->value.numel();
  return n;
}

TEST(Tucker2Response, TableIsTheVarianceTheFactorizedLayerKeeps) {
  const int64_t ci = 4, co = 6;
  Conv2d conv(ci, co, Size2{3, 3}, Conv2dOptions{.padding = 1, .bias = true}, 4, DType::kF64);
  const Tensor calib = correlated_maps(6, ci, 5, 21);
  const Tucker2ResponseTable t = tucker2_response_table(conv, calib);
  ASSERT_EQ(t.r_out_max, co);
  ASSERT_EQ(t.r_in_max, ci);
  ASSERT_EQ(t.kept.size(), static_cast<std::size_t>(co * ci));
  // Reference: the bias-free responses Y by the dense conv, and their centered variance.
  const Tensor bias = conv.bias()->value;
  const Mat y = map_rows(dense_conv(calib, conv.weight().value, {}, conv.params()));
  Mat yc = y;
  yc.rowwise() -= y.colwise().mean();
  const double total = yc.squaredNorm();
  Eigen::VectorXd lambda;
  (void)top_directions(y, true, 1, &lambda);
  for (int64_t a = 1; a <= co; ++a) {
    for (int64_t b = 1; b <= ci; ++b) {
      // The factorized layer itself, run on the calibration batch: 1 - ||Y + b - Yhat||^2 /
      // ||Yc||^2 is what the table must hold.
      auto seq = factorize_conv_tucker2_response(conv, calib, a, b);
      const std::size_t layers = 1 + (a < co ? 1 : 0) + (b < ci ? 1 : 0);
      EXPECT_EQ(seq->children().size(), layers) << a << "x" << b;
      EXPECT_EQ(count_params(*seq), lowrank::tucker2_folded_params(co, ci, 9, a, b) + co);
      Mat r = map_rows(seq->forward(calib)) - y;
      r.rowwise() -= to_mat(bias.reshape({1, co})).row(0);
      const double kept = t.kept[static_cast<std::size_t>((a - 1) * ci + (b - 1))];
      EXPECT_NEAR(kept, 1.0 - r.squaredNorm() / total, 1e-9) << a << "x" << b;  // f64 Grams
      if (b == ci) {
        // No input projection: the variance of the top-a response directions (eigenvalues).
        EXPECT_NEAR(kept, lambda.head(a).sum() / total, 1e-9) << a;  // f64 eigen vs SVD
      }
    }
  }
  // Full ranks: the dense layer (the mean shift is zero).
  EXPECT_NEAR(t.kept.back(), 1.0, 1e-12);  // f64 rounding
  const Tensor x = random_f64({2, ci, 5, 5}, 22);
  EXPECT_TRUE(all_close(factorize_conv_tucker2_response(conv, calib, co, ci)->forward(x),
                        conv.forward(x), 0.0, 1e-10));  // f64, another summation order
  // Ranks (3, 2) against the closed form built here: kernel U U^T W (P P^T on the input
  // channels) with U, P from Eigen's eigen-decompositions, bias b + ybar - U U^T zbar.
  const Mat u = top_directions(y, true, 3);
  const Mat p = top_directions(map_rows(calib), false, 2);
  const Mat pu = u * u.transpose(), pp = p * p.transpose();
  const std::vector<double> wv = conv.weight().value.to_vector<double>();
  std::vector<double> wp(wv.size()), wr(wv.size());
  for (int64_t o = 0; o < co; ++o)
    for (int64_t c = 0; c < ci; ++c)
      for (int64_t k = 0; k < 9; ++k) {
        double acc = 0;
        for (int64_t d = 0; d < ci; ++d) acc += wv[(o * ci + d) * 9 + k] * pp(d, c);
        wp[(o * ci + c) * 9 + k] = acc;
      }
  for (int64_t o = 0; o < co; ++o)
    for (int64_t c = 0; c < ci; ++c)
      for (int64_t k = 0; k < 9; ++k) {
        double acc = 0;
        for (int64_t q = 0; q < co; ++q) acc += pu(o, q) * wp[(q * ci + c) * 9 + k];
        wr[(o * ci + c) * 9 + k] = acc;
      }
  const Mat z = map_rows(
      dense_conv(calib, Tensor::from_vector(wp, conv.weight().value.shape()), {}, conv.params()));
  const Eigen::VectorXd c = y.colwise().mean().transpose() - pu * z.colwise().mean().transpose();
  const Eigen::VectorXd b_ref = to_mat(bias.reshape({co, 1})).col(0) + c;
  const Tensor want = dense_conv(x, Tensor::from_vector(wr, conv.weight().value.shape()),
                                 to_tensor(b_ref, {co}), conv.params());
  EXPECT_TRUE(all_close(factorize_conv_tucker2_response(conv, calib, 3, 2)->forward(x), want, 0.0,
                        1e-9));  // f64; gapped spectra, projectors not vectors
}

TEST(Tucker2Response, CheapestRanksForKeptIsTheBruteForceMinimum) {
  // Parameter counts by hand: (32, 16, 3x3) at (20, 10): 16*10 + 10*20*9 + 20*32; a full input
  // rank drops the input 1x1, a full output rank the output 1x1.
  EXPECT_EQ(lowrank::tucker2_folded_params(32, 16, 9, 20, 10), 160 + 1800 + 640);
  EXPECT_EQ(lowrank::tucker2_folded_params(10, 32, 16, 10, 8), 256 + 1280);
  EXPECT_EQ(lowrank::tucker2_folded_params(16, 1, 9, 5, 1), 45 + 80);
  EXPECT_EQ(lowrank::tucker2_folded_params(4, 4, 9, 4, 4), 144);
  for (uint32_t seed : {1u, 2u, 3u}) {
    const int64_t ro = 6, ri = 5, co = 6, ci = 7, hw = 9;
    const std::vector<double> kept = random_f64({ro, ri}, seed, 0.f, 1.f).to_vector<double>();
    for (double e : {0.3, 0.8, 0.99}) {
      const lowrank::Tucker2Ranks got =
          lowrank::tucker2_ranks_for_kept(kept, ro, ri, co, ci, hw, e);
      // Brute force with the cost written out here.
      int64_t best = -1, ba = ro, bb = ri;
      for (int64_t a = 1; a <= ro; ++a)
        for (int64_t b = 1; b <= ri; ++b) {
          if (kept[(a - 1) * ri + (b - 1)] < e) continue;
          const int64_t cost = (b < ci ? ci * b : 0) + a * b * hw + (a < co ? a * co : 0);
          if (best < 0 || cost < best) {
            best = cost;
            ba = a;
            bb = b;
          }
        }
      EXPECT_EQ(got.out, ba) << seed << " " << e;
      EXPECT_EQ(got.in, bb) << seed << " " << e;
    }
  }
}

TEST(FactorizeModel, Tucker2ResponseReadsTheClassifierAsAConvOverItsMap) {
  auto build = [] {
    auto m = std::make_shared<Sequential>();
    m->add(std::make_shared<Conv2d>(1, 4, Size2{3, 3}, Conv2dOptions{.padding = 1, .bias = false},
                                    1, DType::kF64));
    m->add(std::make_shared<ReLU>());
    m->add(std::make_shared<Conv2d>(4, 6, Size2{3, 3}, Conv2dOptions{.padding = 1, .bias = false},
                                    2, DType::kF64));
    m->add(std::make_shared<ReLU>());
    m->add(std::make_shared<MaxPool2d>(2));
    m->add(std::make_shared<Flatten>(1));
    m->add(std::make_shared<Linear>(6 * 2 * 2, 5, true, 3, DType::kF64));
    return m;
  };
  const Tensor calib = random_f64({16, 1, 4, 4}, 31, 0.f, 1.f);
  FactorizeOptions opt;
  opt.energy_source = EnergySource::kResponses;
  opt.calibration = calib;
  opt.linear_as_conv = true;
  // Independent expectation for the classifier: its input map recorded by running the dense
  // prefix here, the Linear rebuilt as a 2x2 conv by hand, its table, and a brute-force search.
  auto dense = build();
  Tensor map = calib;
  for (std::size_t i = 0; i < 5; ++i) map = (*dense)[i].forward(map);  // (16, 6, 2, 2)
  auto& lin = dynamic_cast<Linear&>((*dense)[6]);
  Conv2d as_conv(6, 5, Size2{2, 2}, Conv2dOptions{}, 0, DType::kF64);
  as_conv.weight().value.copy_from(lin.weight().value.reshape({5, 6, 2, 2}));
  as_conv.bias()->value.copy_from(lin.bias()->value);
  const Tucker2ResponseTable t = tucker2_response_table(as_conv, map);
  int64_t best = -1, ba = 0, bb = 0;
  for (int64_t a = 1; a <= t.r_out_max; ++a)
    for (int64_t b = 1; b <= t.r_in_max; ++b) {
      if (t.kept[(a - 1) * t.r_in_max + (b - 1)] < 0.8) continue;
      const int64_t cost = (b < 6 ? 6 * b : 0) + a * b * 4 + (a < 5 ? a * 5 : 0);
      if (best < 0 || cost < best) {
        best = cost;
        ba = a;
        bb = b;
      }
    }
  ASSERT_GT(best, 0);
  ASSERT_LT(best + 5, 5 * 24 + 5) << "the test needs a saving classifier";
  // Only the classifier factorized (the convs skipped), so its input is the recorded map.
  auto model = build();
  FactorizeOptions only_fc = opt;
  only_fc.skip = {"0", "2"};
  const auto rep = factorize_model(*model, lowrank::RankPolicy::energy(0.8), only_fc);
  ASSERT_EQ(rep.size(), 1u);
  EXPECT_EQ(rep[0].name, "6");
  EXPECT_EQ(rep[0].method, "tucker2_response");
  ASSERT_TRUE(rep[0].factorized) << rep[0].reason;
  EXPECT_EQ(rep[0].rank, ba);
  EXPECT_EQ(rep[0].rank_in, bb);
  EXPECT_EQ(rep[0].params_after, best + 5);
  EXPECT_EQ((*model)[6].type_name(), "Tucker2Linear");
  EXPECT_EQ(count_params((*model)[6]), best + 5);
  // energy_kept = the variance of the logits the factorized classifier keeps, measured here.
  const Mat y = to_mat(dense->forward(calib)), yh = to_mat(model->forward(calib));
  Mat yc = y;
  yc.rowwise() -= y.colwise().mean();
  EXPECT_NEAR(rep[0].energy_kept, 1.0 - (y - yh).squaredNorm() / yc.squaredNorm(), 1e-9);
  EXPECT_GE(rep[0].energy_kept, 0.8);
  // The whole model: convs by data-aware Tucker-2 too, each keeping >= 80% of its variance;
  // training still works through Unflatten / Flatten (backward returns the input's shape).
  auto all = build();
  const auto reps = factorize_model(*all, lowrank::RankPolicy::energy(0.8), opt);
  ASSERT_EQ(reps.size(), 3u);
  for (const auto& r : reps) {
    EXPECT_EQ(r.method, "tucker2_response") << r.name;
    if (r.factorized) {
      EXPECT_GE(r.energy_kept, 0.8 * (1 - 1e-12)) << r.name;
    }
  }
  all->train(true);
  const Tensor out = all->forward(calib);
  EXPECT_EQ(out.shape(), (Shape{16, 5}));
  EXPECT_EQ(all->backward(Tensor::full({16, 5}, 1.0, DType::kF64)).shape(), calib.shape());
  // A Linear after a Flatten of 1 x 1 maps is a 1x1 conv: it keeps the response SVD.
  Sequential pooled;
  pooled.add(std::make_shared<Flatten>(1));
  pooled.add(std::make_shared<Linear>(6, 4, true, 5, DType::kF64));
  FactorizeOptions po = opt;
  po.calibration = correlated_maps(32, 6, 1, 41);
  const auto pr = factorize_model(pooled, lowrank::RankPolicy::energy(0.9), po);
  ASSERT_EQ(pr.size(), 1u);
  EXPECT_EQ(pr[0].method, "response");
}

TEST(LowRankRules, BadInput) {
  Sequential model;
  model.add(std::make_shared<Linear>(6, 4, true, 1, DType::kF64));
  FactorizeOptions resp;
  resp.energy_source = EnergySource::kResponses;
  expect_error([&] { factorize_model(model, lowrank::RankPolicy::energy(0.9), resp); },
               ErrorCode::kInvalidArgument, "factorize_model", "calibration");
  resp.calibration = random_f64({5, 6}, 1);
  resp.conv = ConvFactorization::kSpatial;
  Sequential convs;
  convs.add(std::make_shared<Conv2d>(2, 4, Size2{3, 3}, Conv2dOptions{}, 1, DType::kF64));
  resp.calibration = random_f64({1, 2, 5, 5}, 1);
  expect_error([&] { factorize_model(convs, lowrank::RankPolicy::energy(0.9), resp); },
               ErrorCode::kInvalidArgument, "factorize_model", "kChannel");
  EXPECT_EQ(convs[0].type_name(), "Conv2d");  // nothing replaced
  expect_error(
      [&] {
        factorize_model(model, lowrank::RankPolicy::global_energy(0.9),
                        FactorizeOptions{.conv = ConvFactorization::kCp});
      },
      ErrorCode::kInvalidArgument, "factorize_model", "CP");
  expect_error([&] { factorize_model(model, lowrank::RankPolicy::global_energy(1.5)); },
               ErrorCode::kInvalidArgument, "select_rank");
  Linear lin(6, 4, true, 1, DType::kF64);
  const Tensor x = random_f64({5, 6}, 2);
  expect_error([&] { factorize_linear_response(lin, x, 0); }, ErrorCode::kInvalidArgument,
               "factorize_linear_response");
  expect_error([&] { factorize_linear_response(lin, x, 5); }, ErrorCode::kInvalidArgument,
               "factorize_linear_response");
  expect_error(
      [&] {
        factorize_linear_response(lin, random_f64({5, 7}, 3), 2);
      },
      ErrorCode::kInvalidArgument, "factorize_linear_response");
  expect_error([&] { factorize_linear_response(lin, Tensor(), 2); }, ErrorCode::kInvalidArgument,
               "factorize_linear_response");
  expect_error([&] { factorize_linear_response(lin, x.to(DType::kF32), 2); },
               ErrorCode::kInvalidArgument, "linear_response_basis");
  Conv2d conv(2, 4, Size2{3, 3}, Conv2dOptions{}, 1, DType::kF64);
  expect_error(
      [&] {
        factorize_conv_response(conv, random_f64({2, 3, 5, 5}, 4), 2);
      },
      ErrorCode::kInvalidArgument, "factorize_conv_response");
  expect_error(
      [&] {
        factorize_conv_response(conv, random_f64({2, 2, 5, 5}, 4), 5);
      },
      ErrorCode::kInvalidArgument, "factorize_conv_response");
  Conv2d dw(4, 4, Size2{3, 3}, Conv2dOptions{.groups = 4}, 1, DType::kF64);
  expect_error([&] { factorize_conv_channel(dw, 2); }, ErrorCode::kInvalidArgument,
               "factorize_conv_channel");
  expect_error([&] { factorize_conv_spatial(dw, 2); }, ErrorCode::kInvalidArgument,
               "factorize_conv_spatial");
  expect_error(
      [&] {
        factorize_conv_response(dw, random_f64({1, 4, 5, 5}, 5), 2);
      },
      ErrorCode::kInvalidArgument, "factorize_conv_response");
  expect_error([&] { factorize_conv_channel(conv, 5); }, ErrorCode::kInvalidArgument,
               "channel_svd");
  // Data-aware Tucker-2.
  resp.conv = ConvFactorization::kTucker2;
  expect_error([&] { factorize_model(convs, lowrank::RankPolicy::global_energy(0.9), resp); },
               ErrorCode::kInvalidArgument, "factorize_model", "kGlobalEnergy");
  EXPECT_EQ(convs[0].type_name(), "Conv2d");
  expect_error(
      [&] {
        factorize_model(model, lowrank::RankPolicy::energy(0.9),
                        FactorizeOptions{.linear_as_conv = true});
      },
      ErrorCode::kInvalidArgument, "factorize_model", "linear_as_conv");
  const Tensor maps = random_f64({2, 2, 5, 5}, 6);
  expect_error(
      [&] {
        tucker2_response_table(conv, random_f64({2, 3, 5, 5}, 4));
      },
      ErrorCode::kInvalidArgument, "tucker2_response_table");
  expect_error([&] { tucker2_response_table(conv, maps.to(DType::kF32)); },
               ErrorCode::kInvalidArgument, "tucker2_response_table", "dtype");
  expect_error([&] { tucker2_response_table(conv, Tensor()); }, ErrorCode::kInvalidArgument,
               "tucker2_response_table");
  expect_error(
      [&] {
        tucker2_response_table(dw, random_f64({1, 4, 5, 5}, 5));
      },
      ErrorCode::kInvalidArgument, "tucker2_response_table");
  expect_error([&] { factorize_conv_tucker2_response(conv, maps, 0, 1); },
               ErrorCode::kInvalidArgument, "factorize_conv_tucker2_response");
  expect_error([&] { factorize_conv_tucker2_response(conv, maps, 2, 3); },
               ErrorCode::kInvalidArgument, "factorize_conv_tucker2_response");
  expect_error([&] { factorize_conv_tucker2_response(conv, maps, 5, 1); },
               ErrorCode::kInvalidArgument, "factorize_conv_tucker2_response");
  // One image of one position gives one response direction and one input direction.
  Conv2d one(2, 4, Size2{1, 1}, Conv2dOptions{}, 1, DType::kF64);
  expect_error(
      [&] {
        factorize_conv_tucker2_response(one, random_f64({1, 2, 1, 1}, 7), 2, 1);
      },
      ErrorCode::kInvalidArgument, "factorize_conv_tucker2_response", "directions");
  const std::vector<double> kept(6, 0.5), nan_kept{0.5, std::nan(""), 0.5, 0.5, 0.5, 0.5};
  expect_error([&] { lowrank::tucker2_ranks_for_kept(kept, 2, 2, 4, 4, 9, 0.9); },
               ErrorCode::kInvalidArgument, "tucker2_ranks_for_kept", "entries");
  expect_error([&] { lowrank::tucker2_ranks_for_kept(nan_kept, 2, 3, 4, 4, 9, 0.9); },
               ErrorCode::kInvalidArgument, "tucker2_ranks_for_kept");
  expect_error([&] { lowrank::tucker2_ranks_for_kept(kept, 2, 3, 4, 4, 9, 0.0); },
               ErrorCode::kInvalidArgument, "tucker2_ranks_for_kept");
  expect_error([&] { lowrank::tucker2_ranks_for_kept(kept, 2, 3, 4, 4, 9, 1.5); },
               ErrorCode::kInvalidArgument, "tucker2_ranks_for_kept");
  expect_error([&] { lowrank::tucker2_ranks_for_kept(kept, 2, 3, 4, 2, 9, 0.9); },
               ErrorCode::kInvalidArgument, "tucker2_ranks_for_kept");
  expect_error([&] { lowrank::tucker2_folded_params(4, 4, 9, 0, 1); }, ErrorCode::kInvalidArgument,
               "tucker2_folded_params");
  expect_error([&] { lowrank::tucker2_folded_params(4, 4, 9, 2, 5); }, ErrorCode::kInvalidArgument,
               "tucker2_folded_params");
  expect_error([&] { Unflatten(0, 2, 2); }, ErrorCode::kInvalidArgument, "Unflatten");
  Unflatten un(2, 2, 2);
  expect_error(
      [&] {
        un.forward(random_f64({3, 7}, 8));
      },
      ErrorCode::kInvalidArgument, "Unflatten");
  EXPECT_EQ(un.forward(random_f64({3, 8}, 8)).shape(), (Shape{3, 2, 2, 2}));
}

}  // namespace
}  // namespace frugal::nn
