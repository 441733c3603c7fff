// ReLU and GELU on the CPU: values at known points, the double-precision reference, backward
// against central finite differences in double, thread-count invariance and bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "basic_test_util.hpp"
#include "frugal/ref/nn_basic.hpp"

namespace frugal::nn {
namespace {

using frugal::testing::all_close;
using testing::expect_error;
using testing::numeric_grad;
using testing::random_f64;

TEST(Gelu, KnownValues) {
  // GELU(x) = x Phi(x). Phi(1) = 0.8413447460685429 (standard normal CDF; tables / scipy),
  // Phi(-1) = 1 - Phi(1), Phi(0) = 1/2, Phi(2) = 0.9772498680518208.
  const Tensor x = Tensor::from_vector(std::vector<double>{1.0, -1.0, 0.0, 2.0}, {4});
  const std::vector<double> want = {0.8413447460685429, -(1 - 0.8413447460685429), 0.0,
                                    2 * 0.9772498680518208};
  // f64: erf from the C library, accurate to a few ulp.
  EXPECT_TRUE(frugal::testing::all_close(gelu(x).to_vector<double>(), want, 1e-15, 1e-15));
  // f32: the same within float rounding.
  EXPECT_TRUE(
      frugal::testing::all_close(gelu(x.to(DType::kF32)).to_vector<double>(), want, 1e-6, 1e-7));
  // Tanh form at 1: 0.5 (1 + tanh(sqrt(2/pi) * 1.044715)) = 0.8411919906082768 (computed from
  // the formula by hand with Python's math.tanh), close to but not equal to the erf form.
  EXPECT_NEAR(gelu(x, GeluApprox::kTanh).to_vector<double>()[0], 0.8411919906082768, 1e-15);
}

TEST(Activation, MatchReference) {
  for (DType dt : {DType::kF32, DType::kF64}) {
    const Tensor x = frugal::testing::random_uniform({3, 50}, 1, -6.f, 6.f).to(dt);
    // f32 erf / tanh: a few ulp of the result; f64: a few ulp.
    const double tol = dt == DType::kF32 ? 1e-6 : 1e-14;
    EXPECT_TRUE(all_close(relu(x), ref::map(x, [](double v) { return v > 0 ? v : 0.0; }), 0, 0));
    for (GeluApprox a : {GeluApprox::kNone, GeluApprox::kTanh}) {
      const Tensor y = gelu(x, a);
      EXPECT_EQ(y.dtype(), dt);
      EXPECT_TRUE(all_close(y, ref::map(x, [&](double v) { return ref::gelu(v, a); }), tol, tol));
    }
  }
}

TEST(Activation, BackwardMatchesFiniteDifferences) {
  // Keep away from 0, where ReLU is not differentiable.
  Tensor x = random_f64({4, 9}, 2, -4.f, 4.f);
  for (double& v : std::span<double>(x.data<double>(), 36)) {
    if (std::fabs(v) < 1e-3) v = 0.5;
  }
  const Tensor w = random_f64({4, 9}, 3);
  // Smooth functions at h = 1e-5: truncation ~h^2 |f'''| ~ 1e-10, cancellation ~1e-11.
  const double tol = 1e-8;
  {
    ReLU layer;
    layer.forward(x);
    const Tensor g = layer.backward(w);
    EXPECT_TRUE(all_close(g,
                          numeric_grad(
                              x, [&] { return layer.forward(x); }, w),
                          tol, tol));
  }
  for (GeluApprox a : {GeluApprox::kNone, GeluApprox::kTanh}) {
    GELU layer(a);
    EXPECT_EQ(layer.forward(x).shape(), x.shape());
    const Tensor g = layer.backward(w);
    EXPECT_TRUE(all_close(g,
                          numeric_grad(
                              x, [&] { return layer.forward(x); }, w),
                          tol, tol));
  }
}

TEST(Activation, ReluEdgeCases) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const Tensor x = Tensor::from_vector(std::vector<double>{-2.0, 0.0, 3.0, nan}, {4});
  const auto y = relu(x).to_vector<double>();
  EXPECT_EQ(y[0], 0.0);
  EXPECT_EQ(y[1], 0.0);
  EXPECT_EQ(y[2], 3.0);
  EXPECT_TRUE(std::isnan(y[3]));  // NaN propagates, as torch.relu
  const auto g = relu_backward(Tensor::full({4}, 1.0, DType::kF64), x).to_vector<double>();
  EXPECT_EQ(g[0], 0.0);
  EXPECT_EQ(g[1], 0.0);  // the subgradient at 0 is 0, as PyTorch
  EXPECT_EQ(g[2], 1.0);
}

TEST(Activation, StridedInputAndThreadCountInvariant) {
  const Tensor x = frugal::testing::random_uniform({300, 500}, 4, -3.f, 3.f);
  const Tensor xt = x.t();  // strided view
  EXPECT_TRUE(testing::same_bits(gelu(xt), gelu(xt.contiguous())));
  const Tensor g = frugal::testing::random_uniform({300, 500}, 5);
  for (GeluApprox a : {GeluApprox::kNone, GeluApprox::kTanh}) {
    EXPECT_TRUE(
        testing::same_bits(gelu(x, a, testing::threads(1)), gelu(x, a, testing::threads(2))));
    EXPECT_TRUE(testing::same_bits(gelu_backward(g, x, a, testing::threads(1)),
                                   gelu_backward(g, x, a, testing::threads(2))));
  }
}

TEST(Activation, BadInput) {
  expect_error([] { relu(Tensor::zeros({2}, DType::kI32)); }, ErrorCode::kInvalidArgument, "relu");
  expect_error([] { gelu(Tensor::zeros({2}, DType::kU8)); }, ErrorCode::kInvalidArgument, "gelu");
  expect_error([] { gelu_backward(Tensor::zeros({3}), Tensor::zeros({2})); },
               ErrorCode::kInvalidArgument, "gelu_backward");
  expect_error([] { relu_backward(Tensor::zeros({2}, DType::kF64), Tensor::zeros({2})); },
               ErrorCode::kInvalidArgument, "relu_backward");
  GELU layer;
  expect_error([&] { layer.backward(Tensor::zeros({2})); }, ErrorCode::kInvalidArgument,
               "GELU::backward");
  layer.forward(Tensor::zeros({2}));
  expect_error([&] { layer.backward(Tensor::zeros({3})); }, ErrorCode::kInvalidArgument,
               "GELU::backward");
  ReLU r;
  expect_error([&] { r.forward(Tensor::zeros({2}, DType::kI64)); }, ErrorCode::kInvalidArgument,
               "ReLU");
  // Empty tensors are fine and stay empty.
  EXPECT_EQ(gelu(Tensor::zeros({0, 3})).shape(), (Shape{0, 3}));
}

}  // namespace
}  // namespace frugal::nn
