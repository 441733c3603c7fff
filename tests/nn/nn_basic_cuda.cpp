// CUDA parity of the basic nn layers and losses: inputs built on the CPU, moved to the GPU, and
// the results compared with the CPU path (or exactly, for masks and integer outputs). Also the
// determinism of the CUDA reductions and the device-mismatch errors.
#include <gtest/gtest.h>

#include <cmath>

#include "basic_test_util.hpp"
#include "frugal/ref/nn_basic.hpp"
#include "support/gpu.hpp"

namespace frugal::nn {
namespace {

using frugal::testing::all_close;
using frugal::testing::all_equal;
using frugal::testing::random_uniform;
using testing::expect_error;
using testing::same_bits;

const Device kGpu = Device::cuda();

Tensor host(const Tensor& t) { return t.to(Device::cpu()); }

TEST(NnBasicCuda, LinearForwardBackwardParity) {
  FRUGAL_REQUIRE_GPU();
  for (DType dt : {DType::kF32, DType::kF64}) {
    Linear cpu_layer(96, 40, true, 3, dt), gpu_layer(96, 40, true, 3, dt);
    gpu_layer.to(kGpu);
    EXPECT_EQ(gpu_layer.weight().value.device(), kGpu);
    const Tensor x = random_uniform({2, 33, 96}, 1).to(dt);
    const Tensor g = random_uniform({2, 33, 40}, 2).to(dt);
    const Tensor y = cpu_layer.forward(x);
    const Tensor gx = cpu_layer.backward(g);
    const Tensor yd = gpu_layer.forward(x.to(kGpu));
    const Tensor gxd = gpu_layer.backward(g.to(kGpu));
    EXPECT_EQ(yd.device(), kGpu);
    // f32: cuBLAS and Eigen order the 96- or 66-term sums differently (TF32 is off): ~1e-6
    // relative per sum of |terms| ~ 10. f64: ~1e-15.
    const double tol = dt == DType::kF32 ? 2e-5 : 1e-12;
    EXPECT_TRUE(all_close(host(yd), y, tol, tol));
    EXPECT_TRUE(all_close(host(gxd), gx, tol, tol));
    EXPECT_TRUE(all_close(host(gpu_layer.weight().grad), cpu_layer.weight().grad, tol, tol));
    EXPECT_TRUE(all_close(host(gpu_layer.bias()->grad), cpu_layer.bias()->grad, tol, tol));
  }
}

TEST(NnBasicCuda, BiasOpsParityAndDeterminism) {
  FRUGAL_REQUIRE_GPU();
  const Tensor g = random_uniform({1000, 300}, 3);  // several row chunks
  const Tensor b0 = random_uniform({300}, 4);
  Tensor cpu_b = b0.clone();
  linear_bias_grad(g, cpu_b);
  const Tensor gd = g.to(kGpu);
  Tensor d1 = b0.to(kGpu), d2 = b0.to(kGpu);
  linear_bias_grad(gd, d1);
  linear_bias_grad(gd, d2);
  // Both sum in double and round once: the order differs, the float result rarely does (1 ulp).
  EXPECT_TRUE(all_close(host(d1), cpu_b, 2.5e-7, 1e-6));
  EXPECT_TRUE(same_bits(host(d1), host(d2)));  // fixed-order reduction, no atomics
  Tensor y = g.clone(), yd = gd.clone();
  linear_add_bias(y, b0);
  linear_add_bias(yd, b0.to(kGpu));
  EXPECT_TRUE(same_bits(host(yd), y));  // one float addition: exact on both
}

TEST(NnBasicCuda, ActivationParity) {
  FRUGAL_REQUIRE_GPU();
  for (DType dt : {DType::kF32, DType::kF64}) {
    const Tensor x = random_uniform({64, 129}, 5, -6.f, 6.f).to(dt);
    const Tensor g = random_uniform({64, 129}, 6).to(dt);
    const Tensor xd = x.to(kGpu), gd = g.to(kGpu);
    // ReLU is exact. erf / tanh / exp of CUDA's math library against the host libm: a few ulp.
    const double tol = dt == DType::kF32 ? 1e-6 : 1e-14;
    EXPECT_TRUE(all_equal(host(relu(xd)), relu(x)));
    EXPECT_TRUE(all_equal(host(relu_backward(gd, xd)), relu_backward(g, x)));
    for (GeluApprox a : {GeluApprox::kNone, GeluApprox::kTanh}) {
      EXPECT_TRUE(all_close(host(gelu(xd, a)), gelu(x, a), tol, tol));
      EXPECT_TRUE(all_close(host(gelu_backward(gd, xd, a)), gelu_backward(g, x, a), tol, tol));
    }
  }
}

TEST(NnBasicCuda, DropoutSameMaskAsCpu) {
  FRUGAL_REQUIRE_GPU();
  const Tensor x = random_uniform({123, 457}, 7);  // not a multiple of 4
  for (uint64_t step : {uint64_t{0}, uint64_t{5}, (uint64_t{1} << 33) + 1}) {
    const DropoutResult c = dropout(x, 0.35, 99, step);
    const DropoutResult d = dropout(x.to(kGpu), 0.35, 99, step);
    EXPECT_TRUE(all_equal(host(d.mask), c.mask));
    EXPECT_TRUE(same_bits(host(d.output), c.output));  // x * scale in float on both
  }
  Dropout layer(0.35, 99);
  layer.to(kGpu);
  const Tensor yd = layer.forward(x.to(kGpu));
  const Tensor g = random_uniform({123, 457}, 8);
  const Tensor gxd = layer.backward(g.to(kGpu));
  const Tensor mask = ref::dropout_mask(x.shape(), 0.35, 99, 0);
  EXPECT_TRUE(same_bits(host(gxd), dropout_backward(g, mask, 0.35)));
}

TEST(NnBasicCuda, CrossEntropyParityAndDeterminism) {
  FRUGAL_REQUIRE_GPU();
  // Small rows (one warp), medium and vocabulary-sized rows (256 threads, several per thread).
  for (int64_t c : {int64_t{10}, int64_t{100}, int64_t{5003}}) {
    for (double eps : {0.0, 0.1}) {
      const int64_t n = 67;
      const Tensor logits = random_uniform({n, c}, 9, -8.f, 8.f);
      std::vector<int64_t> t(n);
      for (int64_t i = 0; i < n; ++i) t[i] = (i * 7919) % c;
      t[3] = -100;
      t[40] = -100;
      const Tensor tt = Tensor::from_vector(t, {n});
      SoftmaxCrossEntropy cpu_ce(eps), gpu_ce(eps);
      const float lc = cpu_ce.forward(logits, tt);
      const float ld = gpu_ce.forward(logits.to(kGpu), tt.to(kGpu));
      EXPECT_EQ(gpu_ce.num_valid(), n - 2);
      // Float exp and sums over up to 5003 classes in a different order: ~1e-6 relative.
      EXPECT_NEAR(ld, lc, 2e-6 * std::fabs(lc)) << "C = " << c;
      const Tensor gd = gpu_ce.backward();
      EXPECT_EQ(gd.device(), kGpu);
      EXPECT_TRUE(all_close(host(gd), cpu_ce.backward(), 1e-5, 1e-9)) << "C = " << c;
      // Same inputs, same bits.
      SoftmaxCrossEntropy again(eps);
      EXPECT_EQ(again.forward(logits.to(kGpu), tt.to(kGpu)), ld);
      EXPECT_TRUE(same_bits(host(again.backward()), host(gd)));
    }
  }
}

TEST(NnBasicCuda, CrossEntropyEdgeCases) {
  FRUGAL_REQUIRE_GPU();
  SoftmaxCrossEntropy ce;
  const Tensor big =
      Tensor::from_vector(std::vector<float>{1e4f, 0, -1e4f, 0, 1e4f, -1e4f}, {2, 3}).to(kGpu);
  const Tensor t = Tensor::from_vector(std::vector<int64_t>{0, 2}, {2}).to(kGpu);
  EXPECT_EQ(ce.forward(big, t), 1e4f);  // see the CPU test: exact
  EXPECT_TRUE(all_close(host(ce.backward()),
                        Tensor::from_vector(std::vector<double>{0, 0, 0, 0, 0.5, -0.5}, {2, 3}), 0,
                        1e-30));
  const Tensor bad = Tensor::from_vector(std::vector<int64_t>{0, 3}, {2}).to(kGpu);
  expect_error([&] { ce.forward(big, bad); }, ErrorCode::kInvalidArgument, "SoftmaxCrossEntropy");
  const Tensor ignored = Tensor::from_vector(std::vector<int64_t>{-100, -100}, {2}).to(kGpu);
  EXPECT_EQ(ce.forward(big, ignored), 0.f);
  expect_error(
      [&] {
        ce.forward(big, Tensor::from_vector(std::vector<int64_t>{0, 1}, {2}));
      },
      ErrorCode::kInvalidArgument, "SoftmaxCrossEntropy");  // targets on the CPU
}

TEST(NnBasicCuda, MseParityAndDeterminism) {
  FRUGAL_REQUIRE_GPU();
  const Tensor p = random_uniform({1000, 513}, 10);
  const Tensor t = random_uniform({1000, 513}, 11);
  MSELoss a, b, c;
  const float lc = a.forward(p, t);
  const float ld = b.forward(p.to(kGpu), t.to(kGpu));
  EXPECT_NEAR(ld, lc, 1e-7 * lc);                            // double sums, one rounding each
  EXPECT_TRUE(same_bits(host(b.backward()), a.backward()));  // (p - t) * (2/n) in float
  EXPECT_EQ(c.forward(p.to(kGpu), t.to(kGpu)), ld);
}

TEST(NnBasicCuda, DeviceMismatch) {
  FRUGAL_REQUIRE_GPU();
  Linear lin(4, 3);
  expect_error(
      [&] {
        lin.forward(Tensor::zeros({2, 4}, DType::kF32, kGpu));
      },
      ErrorCode::kInvalidArgument, "Linear");
  Tensor y = Tensor::zeros({2, 3}, DType::kF32, kGpu);
  expect_error([&] { linear_add_bias(y, Tensor::zeros({3})); }, ErrorCode::kInvalidArgument,
               "linear_add_bias");
  expect_error([&] { gelu_backward(Tensor::zeros({3}), Tensor::zeros({3}, DType::kF32, kGpu)); },
               ErrorCode::kInvalidArgument, "gelu_backward");
  MSELoss mse;
  expect_error([&] { mse.forward(Tensor::zeros({3}), Tensor::zeros({3}, DType::kF32, kGpu)); },
               ErrorCode::kInvalidArgument, "MSELoss");
}

}  // namespace
}  // namespace frugal::nn
