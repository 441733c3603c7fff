// CUDA parity of the low-rank decompositions: cuSOLVER SVD / QR against the CPU (Eigen) on
// matrices with known singular values; randomized SVD (same Philox sketch) and Tucker-2 / CP on
// device tensors; factorized layers and factorize_model on a device model. Subspaces are
// compared up to the sign of each singular vector.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "frugal/core/ops.hpp"
#include "frugal/lowrank.hpp"
#include "frugal/nn/activation.hpp"
#include "frugal/nn/lowrank_layers.hpp"
#include "frugal/nn/models.hpp"
#include "frugal/nn/pool.hpp"
#include "frugal/ref/lowrank.hpp"
#include "support/gpu.hpp"
#include "support/tolerance.hpp"

namespace frugal {
namespace {

Tensor make(const std::vector<double>& v, Shape shape, DType dtype) {
  return Tensor::from_vector(v, shape).to(dtype);
}

std::vector<double> decaying(int64_t k, double base) {
  std::vector<double> s(static_cast<std::size_t>(k));
  for (int64_t i = 0; i < k; ++i)
    s[static_cast<std::size_t>(i)] = std::pow(base, static_cast<double>(i));
  return s;
}

/// max over columns j of | |<x_j, y_j>| - 1 |: 0 when each column of y is +-1 times x's.
double sign_free_column_defect(const Tensor& x, const Tensor& y) {
  const std::vector<double> g =
      gemm(x.to(DType::kF64), y.to(Device::cpu()).to(DType::kF64), GemmOptions{.trans_a = true})
          .to_vector<double>();
  const int64_t c = x.dim(1);
  double worst = 0.0;
  for (int64_t j = 0; j < c; ++j)
    worst = std::max(worst, std::fabs(std::fabs(g[static_cast<std::size_t>(j * c + j)]) - 1.0));
  return worst;
}

struct Case {
  int64_t m, n;
  DType dtype;
};

TEST(LowrankCuda, SvdMatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  for (const Case c : {Case{64, 40, DType::kF64}, Case{40, 64, DType::kF64},
                       Case{96, 96, DType::kF32}, Case{50, 120, DType::kF32}}) {
    const int64_t k = std::min(c.m, c.n);
    // Distinct singular values (ratio 0.9) so each singular vector is unique up to sign.
    const Tensor a =
        make(ref::matrix_with_singular_values(c.m, c.n, decaying(k, 0.9), 4), {c.m, c.n}, c.dtype);
    const lowrank::SvdResult cpu = lowrank::svd(a);
    const lowrank::SvdResult gpu = lowrank::svd(a.to(Device::cuda()));
    ASSERT_TRUE(gpu.converged) << gpu.info;
    EXPECT_EQ(gpu.u.device(), Device::cuda());
    // Both backward stable: values agree to a few eps of ||A|| = 1.
    const double tol = c.dtype == DType::kF64 ? 1e-12 : 2e-5;
    EXPECT_TRUE(testing::all_close(gpu.s.to(Device::cpu()), cpu.s, 0.0, tol));
    // Vectors: gap 0.1 between neighbours bounds the angle by eps / gap (Davis-Kahan).
    const double vtol = c.dtype == DType::kF64 ? 1e-9 : 2e-3;
    EXPECT_LT(sign_free_column_defect(cpu.u, gpu.u), vtol);
    EXPECT_LT(sign_free_column_defect(cpu.vt.t().contiguous(), gpu.vt.t().contiguous()), vtol);
    const Tensor rec = lowrank::reconstruct(gpu.u, gpu.s, gpu.vt).to(Device::cpu());
    EXPECT_TRUE(testing::all_close(rec, a, 0.0, 10 * tol));  // U S V^T = A to rounding
    // Full mode and values only.
    const lowrank::SvdResult full = lowrank::svd(a.to(Device::cuda()), lowrank::SvdMode::kFull);
    EXPECT_EQ(full.u.shape(), (Shape{c.m, c.m}));
    EXPECT_EQ(full.vt.shape(), (Shape{c.n, c.n}));
    EXPECT_TRUE(testing::all_close(lowrank::singular_values(a.to(Device::cuda())).to(Device::cpu()),
                                   cpu.s, 0.0, tol));
  }
}

TEST(LowrankCuda, QrMatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  for (const Case c :
       {Case{80, 30, DType::kF64}, Case{30, 80, DType::kF64}, Case{200, 74, DType::kF32}}) {
    const Tensor a = make(ref::gaussian(c.m, c.n, 3), {c.m, c.n}, c.dtype);
    const lowrank::QrResult cpu = lowrank::qr(a);
    const lowrank::QrResult gpu = lowrank::qr(a.to(Device::cuda()));
    const double tol = c.dtype == DType::kF64 ? 1e-11 : 1e-4;  // rounding of O(sqrt(n)) entries
    EXPECT_TRUE(testing::all_close(matmul(gpu.q, gpu.r).to(Device::cpu()), a, 0.0, tol));
    // Householder QR is unique up to the signs of R's rows / Q's columns.
    EXPECT_LT(sign_free_column_defect(cpu.q, gpu.q), tol);
    const std::vector<double> r = gpu.r.to_vector<double>();
    const int64_t k = std::min(c.m, c.n);
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < std::min(i, c.n); ++j)
        EXPECT_EQ(r[static_cast<std::size_t>(i * c.n + j)], 0.0);
  }
}

TEST(LowrankCuda, RandomizedSvdMatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  const int64_t m = 300, n = 200, rank = 10;
  const std::vector<double> s = decaying(n, 0.85);
  for (DType dt : {DType::kF64, DType::kF32}) {
    const Tensor a = make(ref::matrix_with_singular_values(m, n, s, 6), {m, n}, dt);
    const lowrank::RsvdOptions opt{.seed = 9, .error = lowrank::RsvdError::kExact};
    const auto cpu = lowrank::randomized_svd(a, rank, opt);
    const auto gpu = lowrank::randomized_svd(a.to(Device::cuda()), rank, opt);
    ASSERT_TRUE(gpu.converged);
    const double tol = dt == DType::kF64 ? 1e-10 : 1e-4;  // same sketch; backend rounding only
    EXPECT_TRUE(testing::all_close(gpu.s.to(Device::cpu()), cpu.s, 0.0, tol));
    EXPECT_NEAR(gpu.relative_error, cpu.relative_error, tol);
    EXPECT_LT(sign_free_column_defect(cpu.u, gpu.u), dt == DType::kF64 ? 1e-8 : 1e-3);
  }
}

TEST(LowrankCuda, Tucker2AndCpOnDevice) {
  FRUGAL_REQUIRE_GPU();
  const int64_t co = 12, ci = 10, kh = 3, kw = 3;
  const Tensor w = make(ref::gaussian(co * ci * kh * kw, 1, 5), {co, ci, kh, kw}, DType::kF64);
  const lowrank::Tucker2Result cpu = lowrank::tucker2(w, 4, 3);
  const lowrank::Tucker2Result gpu = lowrank::tucker2(w.to(Device::cuda()), 4, 3);
  EXPECT_EQ(gpu.core.device(), Device::cuda());
  EXPECT_NEAR(gpu.relative_error, cpu.relative_error, 1e-12);  // same projection, f64
  EXPECT_TRUE(testing::all_close(lowrank::tucker2_reconstruct(gpu).to(Device::cpu()),
                                 lowrank::tucker2_reconstruct(cpu), 0.0, 1e-11));
  const lowrank::CpResult cp = lowrank::cp_als(w.to(Device::cuda()), 3);
  EXPECT_EQ(cp.out.device(), Device::cuda());
  const lowrank::CpResult cp_cpu = lowrank::cp_als(w, 3);
  EXPECT_NEAR(cp.relative_error, cp_cpu.relative_error, 1e-12);  // same host computation
}

TEST(LowrankCuda, FactorizedLayersMatchCpu) {
  FRUGAL_REQUIRE_GPU();
  // The same f64 model on both devices, factorized at the same ranks: the device factors come
  // from cuSOLVER, the host ones from Eigen; the outputs agree up to rounding.
  auto cpu = nn::make_mlp({24, 32, 10}, 3, DType::kF64);
  auto gpu = nn::make_mlp({24, 32, 10}, 3, DType::kF64);
  gpu->to(Device::cuda());
  const auto rc = nn::factorize_model(*cpu, lowrank::RankPolicy::fixed(6));
  const auto rg = nn::factorize_model(*gpu, lowrank::RankPolicy::fixed(6));
  ASSERT_EQ(rg.size(), rc.size());
  for (std::size_t i = 0; i < rc.size(); ++i) {
    EXPECT_EQ(rg[i].factorized, rc[i].factorized);
    EXPECT_NEAR(rg[i].relative_error, rc[i].relative_error, 1e-12);  // same spectrum, f64
  }
  EXPECT_EQ((*gpu)[0].type_name(), "LowRankLinear");
  const Tensor x = make(ref::gaussian(5, 24, 7), {5, 24}, DType::kF64);
  // Distinct singular values of a random layer: the rank-6 truncation is unique, so only
  // rounding separates the two (f64).
  EXPECT_TRUE(testing::all_close(gpu->forward(x.to(Device::cuda())).to(Device::cpu()),
                                 cpu->forward(x), 1e-9, 1e-10));
  // Tucker-2 convolution on the device against the host.
  nn::Conv2d conv_c(6, 8, nn::Size2{3, 3}, nn::Conv2dOptions{.padding = 1}, 5, DType::kF64);
  nn::Conv2d conv_g(6, 8, nn::Size2{3, 3}, nn::Conv2dOptions{.padding = 1}, 5, DType::kF64);
  conv_g.to(Device::cuda());
  auto tc = nn::factorize_conv_tucker2(conv_c, 4, 3);
  auto tg = nn::factorize_conv_tucker2(conv_g, 4, 3);
  const Tensor img = make(ref::gaussian(2 * 6 * 5 * 5, 1, 8), {2, 6, 5, 5}, DType::kF64);
  EXPECT_TRUE(testing::all_close(tg->forward(img.to(Device::cuda())).to(Device::cpu()),
                                 tc->forward(img), 1e-9, 1e-10));  // f64 rounding, as above
}

TEST(LowrankCuda, RankRulesAndConvSvdOnDeviceMatchCpu) {
  FRUGAL_REQUIRE_GPU();
  // Response energy (centered; mean, gemm_into, qr, svd on the device), global energy and the
  // channel / spatial / core-energy kernel decompositions: same ranks, same outputs as the host.
  const Tensor calib = make(ref::gaussian(64, 24, 9), {64, 24}, DType::kF64);
  const Tensor x = make(ref::gaussian(5, 24, 7), {5, 24}, DType::kF64);
  for (const lowrank::RankPolicy policy :
       {lowrank::RankPolicy::energy(0.9), lowrank::RankPolicy::global_energy(0.8)}) {
    for (nn::EnergySource src : {nn::EnergySource::kWeights, nn::EnergySource::kResponses}) {
      auto cpu = nn::make_mlp({24, 32, 10}, 3, DType::kF64);
      auto gpu = nn::make_mlp({24, 32, 10}, 3, DType::kF64);
      gpu->to(Device::cuda());
      nn::FactorizeOptions oc, og;
      oc.energy_source = og.energy_source = src;
      oc.calibration = calib;
      og.calibration = calib.to(Device::cuda());
      const auto rc = nn::factorize_model(*cpu, policy, oc);
      const auto rg = nn::factorize_model(*gpu, policy, og);
      ASSERT_EQ(rg.size(), rc.size());
      for (std::size_t i = 0; i < rc.size(); ++i) {
        EXPECT_EQ(rg[i].factorized, rc[i].factorized) << i;
        EXPECT_EQ(rg[i].rank, rc[i].rank) << i;
      }
      EXPECT_TRUE(testing::all_close(gpu->forward(x.to(Device::cuda())).to(Device::cpu()),
                                     cpu->forward(x), 1e-9, 1e-10));  // f64 rounding
    }
  }
  const Tensor w = make(ref::gaussian(8 * 6 * 3 * 3, 1, 11), {8, 6, 3, 3}, DType::kF64);
  const Tensor wg = w.to(Device::cuda());
  EXPECT_TRUE(testing::all_close(lowrank::tucker2_core_energy(wg), lowrank::tucker2_core_energy(w),
                                 1e-10, 1e-12));  // f64, same projections
  for (int which = 0; which < 2; ++which) {
    const lowrank::ConvSvdResult c =
        which == 0 ? lowrank::channel_svd(w, 3) : lowrank::spatial_svd(w, 3);
    const lowrank::ConvSvdResult g =
        which == 0 ? lowrank::channel_svd(wg, 3) : lowrank::spatial_svd(wg, 3);
    EXPECT_EQ(g.first.device(), Device::cuda());
    EXPECT_NEAR(g.relative_error, c.relative_error, 1e-12);  // same spectrum, f64
  }
  nn::Conv2d conv_c(6, 8, nn::Size2{3, 3}, nn::Conv2dOptions{.padding = 1}, 5, DType::kF64);
  nn::Conv2d conv_g(6, 8, nn::Size2{3, 3}, nn::Conv2dOptions{.padding = 1}, 5, DType::kF64);
  conv_g.to(Device::cuda());
  const Tensor img = make(ref::gaussian(2 * 6 * 5 * 5, 1, 8), {2, 6, 5, 5}, DType::kF64);
  auto sc = nn::factorize_conv_spatial(conv_c, 4);
  auto sg = nn::factorize_conv_spatial(conv_g, 4);
  EXPECT_TRUE(testing::all_close(sg->forward(img.to(Device::cuda())).to(Device::cpu()),
                                 sc->forward(img), 1e-9, 1e-10));  // f64 rounding
  auto rc = nn::factorize_conv_response(conv_c, img, 4);
  auto rg = nn::factorize_conv_response(conv_g, img.to(Device::cuda()), 4);
  EXPECT_TRUE(testing::all_close(rg->forward(img.to(Device::cuda())).to(Device::cpu()),
                                 rc->forward(img), 1e-8, 1e-9));  // f64; subspace, not vectors
}

TEST(LowrankCuda, Tucker2ResponseOnDeviceMatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  // Data-aware Tucker-2 (response and input bases, the kept table from device Grams) and the
  // whole-model rule with the classifier read as a conv: same table, ranks and outputs as the host.
  nn::Conv2d conv_c(6, 8, nn::Size2{3, 3}, nn::Conv2dOptions{.padding = 1}, 5, DType::kF64);
  nn::Conv2d conv_g(6, 8, nn::Size2{3, 3}, nn::Conv2dOptions{.padding = 1}, 5, DType::kF64);
  conv_g.to(Device::cuda());
  const Tensor img = make(ref::gaussian(4 * 6 * 5 * 5, 1, 12), {4, 6, 5, 5}, DType::kF64);
  const nn::Tucker2ResponseTable tc = nn::tucker2_response_table(conv_c, img);
  const nn::Tucker2ResponseTable tg = nn::tucker2_response_table(conv_g, img.to(Device::cuda()));
  ASSERT_EQ(tg.kept.size(), tc.kept.size());
  for (std::size_t i = 0; i < tc.kept.size(); ++i)
    EXPECT_NEAR(tg.kept[i], tc.kept[i], 1e-9) << i;  // f64 Grams, another summation order
  auto fc = nn::factorize_conv_tucker2_response(conv_c, img, 4, 3);
  auto fg = nn::factorize_conv_tucker2_response(conv_g, img.to(Device::cuda()), 4, 3);
  EXPECT_TRUE(testing::all_close(fg->forward(img.to(Device::cuda())).to(Device::cpu()),
                                 fc->forward(img), 1e-8, 1e-9));  // f64; subspaces, not vectors
  const Tensor calib = make(ref::gaussian(32 * 64, 1, 13), {32, 1, 8, 8}, DType::kF64);
  auto build = [] {
    auto m = std::make_shared<nn::Sequential>();
    const nn::Conv2dOptions o{.padding = 1, .bias = false};
    m->add(std::make_shared<nn::Conv2d>(1, 4, nn::Size2{3, 3}, o, 1, DType::kF64));
    m->add(std::make_shared<nn::ReLU>());
    m->add(std::make_shared<nn::Conv2d>(4, 6, nn::Size2{3, 3}, o, 2, DType::kF64));
    m->add(std::make_shared<nn::ReLU>());
    m->add(std::make_shared<nn::MaxPool2d>(2));
    m->add(std::make_shared<nn::Flatten>(1));
    m->add(std::make_shared<nn::Linear>(6 * 4 * 4, 10, true, 3, DType::kF64));
    return m;
  };
  auto cpu = build();
  auto gpu = build();
  gpu->to(Device::cuda());
  nn::FactorizeOptions oc, og;
  oc.energy_source = og.energy_source = nn::EnergySource::kResponses;
  oc.linear_as_conv = og.linear_as_conv = true;
  oc.calibration = calib;
  og.calibration = calib.to(Device::cuda());
  const auto rc = nn::factorize_model(*cpu, lowrank::RankPolicy::energy(0.9), oc);
  const auto rg = nn::factorize_model(*gpu, lowrank::RankPolicy::energy(0.9), og);
  ASSERT_EQ(rg.size(), rc.size());
  for (std::size_t i = 0; i < rc.size(); ++i) {
    EXPECT_EQ(rg[i].factorized, rc[i].factorized) << i;
    EXPECT_EQ(rg[i].rank, rc[i].rank) << i;
    EXPECT_EQ(rg[i].rank_in, rc[i].rank_in) << i;
  }
  cpu->train(false);
  gpu->train(false);
  EXPECT_TRUE(testing::all_close(gpu->forward(calib.to(Device::cuda())).to(Device::cpu()),
                                 cpu->forward(calib), 1e-8, 1e-9));  // f64, as above
}

}  // namespace
}  // namespace frugal
