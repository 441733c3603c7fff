// CUDA parity of the spatial layers: Conv2d (cuDNN), pooling and batch norm (own kernels) against
// the CPU path and the scalar references, f32 (and f64 where cheap), forward and backward, plus
// run-to-run determinism on the device and layers moved with Module::to.
#include <gtest/gtest.h>

#include <vector>

#include "frugal/core/ops.hpp"
#include "frugal/nn/batch_norm.hpp"
#include "frugal/nn/conv.hpp"
#include "frugal/nn/pool.hpp"
#include "frugal/ref/nn_conv.hpp"
#include "support/gpu.hpp"
#include "support/tolerance.hpp"

namespace frugal {
namespace {

using nn::Conv2dParams;
using testing::all_close;
using testing::all_equal;
using testing::random_uniform;

const Device kGpu = Device::cuda(0);

struct ConvCase {
  Shape x;
  int64_t c_out, kh, kw;
  Conv2dParams p;
  bool bias;
};

const std::vector<ConvCase> kConvCases = {
    {Shape{4, 8, 16, 16}, 16, 3, 3, {1, 1, 1, 1}, true},
    {Shape{2, 3, 9, 8}, 4, 3, 2, {2, {1, 2}, 1, 1}, true},
    {Shape{2, 4, 9, 9}, 4, 3, 3, {1, 2, 2, 2}, false},
    {Shape{2, 6, 8, 8}, 6, 3, 3, {1, 1, 1, 6}, true},
    {Shape{3, 8, 5, 5}, 4, 1, 1, {1, 0, 1, 1}, true},
    {Shape{2, 4, 10, 9}, 6, 2, 3, {{2, 1}, {1, 0}, {1, 2}, 2}, true},
};

TEST(SpatialCuda, Conv2dMatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  for (const ConvCase& c : kConvCases) {
    SCOPED_TRACE(::testing::Message() << c.x << " co" << c.c_out << " g" << c.p.groups);
    const Tensor x = random_uniform(c.x, 1);
    const Tensor w = random_uniform(Shape{c.c_out, c.x[1] / c.p.groups, c.kh, c.kw}, 2);
    const Tensor b = c.bias ? random_uniform(Shape{c.c_out}, 3) : Tensor();
    const ConstTensorView bv = c.bias ? b.cview() : ConstTensorView{};
    const Tensor xg = x.to(kGpu), wg = w.to(kGpu), bg = c.bias ? b.to(kGpu) : Tensor();
    const ConstTensorView bgv = c.bias ? bg.cview() : ConstTensorView{};

    // f32 with FMA math (no TF32) against the CPU f32 path: both within f32 rounding of the
    // exact sums (K <= 72 products of values in [-1, 1]).
    const Tensor y = nn::conv2d(x, w, bv, c.p);
    const Tensor yg = nn::conv2d(xg, wg, bgv, c.p);
    EXPECT_TRUE(all_close(yg.to(Device::cpu()), y, 1e-5, 1e-5));

    const Tensor dy = random_uniform(y.shape(), 4);
    const Tensor dyg = dy.to(kGpu);
    EXPECT_TRUE(all_close(nn::conv2d_backward_input(dyg, wg, c.x, c.p).to(Device::cpu()),
                          nn::conv2d_backward_input(dy, w, c.x, c.p), 1e-5, 1e-5));
    // Weight gradients sum N * H_out * W_out products (up to 1024): a looser absolute bound.
    Tensor dw = Tensor::full(w.shape(), 1.0), dwg = dw.to(kGpu);
    nn::conv2d_backward_weight(dy, x, dw, c.p);
    nn::conv2d_backward_weight(dyg, xg, dwg, c.p);
    EXPECT_TRUE(all_close(dwg.to(Device::cpu()), dw, 1e-5, 1e-4));
    Tensor db = Tensor::full(Shape{c.c_out}, 1.0), dbg = db.to(kGpu);
    nn::conv2d_backward_bias(dy, db);
    nn::conv2d_backward_bias(dyg, dbg);
    EXPECT_TRUE(all_close(dbg.to(Device::cpu()), db, 1e-5, 1e-4));
  }
}

TEST(SpatialCuda, Conv2dF64MatchesReference) {
  FRUGAL_REQUIRE_GPU();
  const ConvCase c = kConvCases[1];
  const Tensor x = random_uniform(c.x, 5).to(DType::kF64);
  const Tensor w = random_uniform(Shape{c.c_out, c.x[1], c.kh, c.kw}, 6).to(DType::kF64);
  const Tensor yg = nn::conv2d(x.to(kGpu), w.to(kGpu), {}, c.p);
  // Double on both sides: summation order only.
  EXPECT_TRUE(all_close(yg.to(Device::cpu()), ref::conv2d(x, w, Tensor(), c.p), 1e-12, 1e-12));
}

TEST(SpatialCuda, Conv2dLayerMovesToDeviceAndRepeats) {
  FRUGAL_REQUIRE_GPU();
  nn::Conv2d cpu(8, 16, 3, {.padding = 1}, 9);
  nn::Conv2d gpu(8, 16, 3, {.padding = 1}, 9);
  gpu.to(kGpu);
  ASSERT_EQ(gpu.device(), kGpu);
  const Tensor x = random_uniform(Shape{4, 8, 12, 12}, 10);
  const Tensor dy = random_uniform(Shape{4, 16, 12, 12}, 11);
  const Tensor y = cpu.forward(x);
  const Tensor dx = cpu.backward(dy);
  std::vector<Tensor> runs;
  for (int r = 0; r < 2; ++r) {
    gpu.zero_grad();
    const Tensor yg = gpu.forward(x.to(kGpu));
    const Tensor dxg = gpu.backward(dy.to(kGpu));
    EXPECT_TRUE(all_close(yg.to(Device::cpu()), y, 1e-5, 1e-5));    // f32 rounding, K = 72
    EXPECT_TRUE(all_close(dxg.to(Device::cpu()), dx, 1e-5, 1e-5));  // f32 rounding, K = 144
    runs.push_back(gpu.weight().grad.to(Device::cpu()));
    runs.push_back(gpu.bias()->grad.to(Device::cpu()));
  }
  // Deterministic algorithms only: the second run repeats the first bit for bit.
  EXPECT_TRUE(all_equal(runs[0], runs[2]));
  EXPECT_TRUE(all_equal(runs[1], runs[3]));
}

TEST(SpatialCuda, PoolingMatchesCpuExactly) {
  FRUGAL_REQUIRE_GPU();
  const std::vector<std::pair<Shape, nn::Pool2dParams>> cases = {
      {Shape{2, 3, 8, 8}, {2, 0, 0}},
      {Shape{2, 3, 9, 9}, {3, 2, 1}},
      {Shape{1, 2, 9, 7}, {{3, 2}, {2, 1}, {1, 0}}},
      {Shape{2, 2, 7, 6}, {3, 1, 1}},
  };
  for (DType dt : {DType::kF32, DType::kF64}) {
    for (const auto& [xs, p] : cases) {
      const Tensor x = random_uniform(xs, 12).to(dt);
      const Tensor xg = x.to(kGpu);
      const auto m = nn::max_pool2d(x, p);
      const auto mg = nn::max_pool2d(xg, p);
      // Same comparisons, same double sums and same gather order as the CPU: identical bits.
      EXPECT_TRUE(all_equal(mg.output.to(Device::cpu()), m.output));
      EXPECT_TRUE(all_equal(mg.indices.to(Device::cpu()), m.indices));
      const Tensor dy = random_uniform(m.output.shape(), 13).to(dt);
      EXPECT_TRUE(
          all_equal(nn::max_pool2d_backward(dy.to(kGpu), mg.indices, xs, p).to(Device::cpu()),
                    nn::max_pool2d_backward(dy, m.indices, xs, p)));
      for (bool inc : {true, false}) {
        EXPECT_TRUE(
            all_equal(nn::avg_pool2d(xg, p, inc).to(Device::cpu()), nn::avg_pool2d(x, p, inc)));
        EXPECT_TRUE(all_equal(nn::avg_pool2d_backward(dy.to(kGpu), xs, p, inc).to(Device::cpu()),
                              nn::avg_pool2d_backward(dy, xs, p, inc)));
      }
    }
  }
  const Tensor x = random_uniform(Shape{3, 5, 7, 6}, 14);
  EXPECT_TRUE(
      all_equal(nn::global_avg_pool2d(x.to(kGpu)).to(Device::cpu()), nn::global_avg_pool2d(x)));
  const Tensor dy = random_uniform(Shape{3, 5}, 15);
  EXPECT_TRUE(all_equal(nn::global_avg_pool2d_backward(dy.to(kGpu), x.shape()).to(Device::cpu()),
                        nn::global_avg_pool2d_backward(dy, x.shape())));
}

TEST(SpatialCuda, BatchNormMatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  for (DType dt : {DType::kF32, DType::kF64}) {
    // Block-tree double sums vs sequential double sums, results rounded to the dtype: f32 within
    // an ulp or two (~2e-7 relative), f64 within ~1e-14.
    const double tol = dt == DType::kF32 ? 1e-5 : 1e-12;
    const Tensor x = random_uniform(Shape{6, 5, 9, 7}, 16, -2.f, 3.f).to(dt);
    const Tensor w = random_uniform(Shape{5}, 17).to(dt);
    const Tensor b = random_uniform(Shape{5}, 18).to(dt);
    Tensor rm = random_uniform(Shape{5}, 19).to(dt);
    Tensor rv = random_uniform(Shape{5}, 20, 0.5f, 2.f).to(dt);
    Tensor rmg = rm.to(kGpu), rvg = rv.to(kGpu);
    const auto r = nn::batch_norm2d(x, w, b, rm, rv, true, 0.1, 1e-5);
    const auto rg = nn::batch_norm2d(x.to(kGpu), w.to(kGpu), b.to(kGpu), rmg, rvg, true, 0.1, 1e-5);
    EXPECT_TRUE(all_close(rg.output.to(Device::cpu()), r.output, tol, tol));
    EXPECT_TRUE(all_close(rg.mean.to(Device::cpu()), r.mean, tol, tol));
    EXPECT_TRUE(all_close(rg.invstd.to(Device::cpu()), r.invstd, tol, tol));
    EXPECT_TRUE(all_close(rmg.to(Device::cpu()), rm, tol, tol));
    EXPECT_TRUE(all_close(rvg.to(Device::cpu()), rv, tol, tol));

    const Tensor dy = random_uniform(x.shape(), 21).to(dt);
    for (bool training : {true, false}) {
      Tensor gw = Tensor::zeros(Shape{5}, dt), gb = Tensor::zeros(Shape{5}, dt);
      Tensor gwg = gw.to(kGpu), gbg = gb.to(kGpu);
      const auto s = training ? r : nn::batch_norm2d(x, w, b, rm, rv, false);
      const auto sg =
          training ? rg : nn::batch_norm2d(x.to(kGpu), w.to(kGpu), b.to(kGpu), rmg, rvg, false);
      if (!training) {
        EXPECT_TRUE(all_close(sg.output.to(Device::cpu()), s.output, tol, tol));
      }
      const Tensor dx = nn::batch_norm2d_backward(dy, x, w, s.mean, s.invstd, training, gw, gb);
      const Tensor dxg = nn::batch_norm2d_backward(dy.to(kGpu), x.to(kGpu), w.to(kGpu), sg.mean,
                                                   sg.invstd, training, gwg, gbg);
      EXPECT_TRUE(all_close(dxg.to(Device::cpu()), dx, tol, tol));
      // Gradient sums over 378 elements: absolute error scales with the sum.
      EXPECT_TRUE(all_close(gwg.to(Device::cpu()), gw, tol, 10 * tol));
      EXPECT_TRUE(all_close(gbg.to(Device::cpu()), gb, tol, 10 * tol));
    }
  }
}

TEST(SpatialCuda, BatchNormLayerRepeats) {
  FRUGAL_REQUIRE_GPU();
  nn::BatchNorm2d bn(4);
  bn.to(kGpu);
  const Tensor x = random_uniform(Shape{8, 4, 6, 6}, 22).to(kGpu);
  const Tensor dy = random_uniform(Shape{8, 4, 6, 6}, 23).to(kGpu);
  const Tensor y1 = bn.forward(x), dx1 = bn.backward(dy);
  const Tensor y2 = bn.forward(x), dx2 = bn.backward(dy);
  // Fixed per-channel trees: bit-identical run to run.
  EXPECT_TRUE(all_equal(y1.to(Device::cpu()), y2.to(Device::cpu())));
  EXPECT_TRUE(all_equal(dx1.to(Device::cpu()), dx2.to(Device::cpu())));
}

TEST(SpatialCuda, DeviceMismatchIsAnError) {
  FRUGAL_REQUIRE_GPU();
  const Tensor x = Tensor::zeros(Shape{1, 2, 4, 4});
  const Tensor w = Tensor::zeros(Shape{2, 2, 3, 3}).to(kGpu);
  try {
    nn::conv2d(x, w, {}, {});
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(std::string(e.what()).rfind("[conv2d]", 0), 0u) << e.what();
  }
}

}  // namespace
}  // namespace frugal
