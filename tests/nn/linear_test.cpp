// Linear, Flatten and the bias ops on the CPU: forward against the scalar reference, backward
// against central finite differences in double, PyTorch's initialisation bounds, gradient
// accumulation, thread-count invariance and bad input.
#include <gtest/gtest.h>

#include <cmath>

#include "basic_test_util.hpp"
#include "frugal/ref/nn_basic.hpp"

namespace frugal::nn {
namespace {

using frugal::testing::all_close;
using testing::expect_error;
using testing::numeric_grad;
using testing::random_f64;

TEST(Linear, RegistersWeightAndBias) {
  Linear lin(5, 3, true, 7);
  const auto np = lin.named_parameters();
  ASSERT_EQ(np.size(), 2u);
  EXPECT_EQ(np[0].name, "weight");
  EXPECT_EQ(np[0].param->value.shape(), (Shape{3, 5}));
  EXPECT_EQ(np[1].name, "bias");
  EXPECT_EQ(np[1].param->value.shape(), (Shape{3}));
  EXPECT_EQ(lin.num_parameters(), 18);
  Linear nob(5, 3, false);
  EXPECT_EQ(nob.parameters().size(), 1u);
  EXPECT_EQ(nob.bias(), nullptr);
}

TEST(Linear, InitIsPyTorchUniformBoundAndSeeded) {
  const int64_t in = 64, out = 256;
  Linear a(in, out, true, 42), b(in, out, true, 42), c(in, out, true, 43);
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  const auto w = a.weight().value.to_vector<double>();
  double sum = 0, sq = 0;
  for (double v : w) {
    EXPECT_LE(std::fabs(v), bound);
    sum += v;
    sq += v * v;
  }
  const double n = static_cast<double>(w.size());
  // U(-b, b) has mean 0 and variance b^2 / 3; with n = 16384 samples the standard error of the
  // mean is b / sqrt(3 n) ~ 0.0045 b and of the variance ~ 0.9% relative: 5 sigma bounds.
  EXPECT_NEAR(sum / n, 0.0, 5 * bound / std::sqrt(3 * n));
  EXPECT_NEAR(sq / n, bound * bound / 3, 0.05 * bound * bound / 3);
  for (double v : a.bias()->value.to_vector<double>()) EXPECT_LE(std::fabs(v), bound);
  EXPECT_TRUE(testing::same_bits(a.weight().value, b.weight().value));
  EXPECT_TRUE(testing::same_bits(a.bias()->value, b.bias()->value));
  EXPECT_FALSE(testing::same_bits(a.weight().value, c.weight().value));
  // Weight and bias come from disjoint parts of the stream: the bias is not the weight's start.
  EXPECT_NE(a.bias()->value.to_vector<double>()[0], w[0]);
  // Gradients start at zero.
  for (double v : a.weight().grad.to_vector<double>()) EXPECT_EQ(v, 0.0);
}

TEST(Linear, ForwardMatchesReference) {
  for (DType dt : {DType::kF32, DType::kF64}) {
    for (bool bias : {true, false}) {
      Linear lin(7, 5, bias, 3, dt);
      const Tensor x = frugal::testing::random_uniform({2, 3, 7}, 11).to(dt);
      const Tensor y = lin.forward(x);
      EXPECT_EQ(y.shape(), (Shape{2, 3, 5}));
      EXPECT_EQ(y.dtype(), dt);
      const Tensor want = ref::linear(x, lin.weight().value, bias ? lin.bias()->value : Tensor());
      // f32: a 7-term dot product of values below 1 rounds to within a few 1e-7; f64 ~1e-16.
      const double tol = dt == DType::kF32 ? 1e-6 : 1e-14;
      EXPECT_TRUE(all_close(y, want, tol, tol));
      // The functional form gives the same result.
      EXPECT_TRUE(all_close(linear(x, lin.weight().value, bias ? lin.bias()->value : Tensor()),
                            want, tol, tol));
    }
  }
}

/// Checks every gradient of a Linear layer against central differences of L = sum(y * w).
void check_linear_grads(Shape x_shape, bool bias) {
  const int64_t in = x_shape[x_shape.rank() - 1], out = 4;
  Linear lin(in, out, bias, 5, DType::kF64);
  Tensor x = random_f64(x_shape, 1);
  Shape y_shape = x_shape;
  y_shape[y_shape.rank() - 1] = out;
  const Tensor w = random_f64(y_shape, 2);
  lin.forward(x);
  const Tensor gx = lin.backward(w);
  auto f = [&] { return lin.forward(x); };
  // Central differences of a function linear in each coordinate are exact up to rounding:
  // |L| ~ 10, h = 1e-5 gives ~1e-16 * 10 / 1e-5 = 1e-10 of cancellation error.
  const double tol = 1e-8;
  EXPECT_TRUE(all_close(gx, numeric_grad(x, f, w), tol, tol));
  EXPECT_TRUE(all_close(lin.weight().grad, numeric_grad(lin.weight().value, f, w), tol, tol));
  if (bias) {
    EXPECT_TRUE(all_close(lin.bias()->grad, numeric_grad(lin.bias()->value, f, w), tol, tol));
  }
}

TEST(Linear, BackwardMatchesFiniteDifferences) {
  check_linear_grads({3, 5}, true);
  check_linear_grads({2, 3, 5}, true);
  check_linear_grads({4, 6}, false);
  check_linear_grads({6}, true);  // a single vector: one row
}

TEST(Linear, BackwardAccumulatesParameterGradients) {
  Linear lin(6, 3, true, 9, DType::kF64);
  const Tensor x = random_f64({4, 6}, 3);
  const Tensor g = random_f64({4, 3}, 4);
  lin.forward(x);
  lin.backward(g);
  const Tensor w1 = lin.weight().grad.clone();
  const Tensor b1 = lin.bias()->grad.clone();
  lin.forward(x);
  lin.backward(g);
  // Twice the same gradient: exact doubling up to one rounding per element.
  EXPECT_TRUE(all_close(lin.weight().grad, scale(w1, 2.0), 1e-15, 1e-15));
  EXPECT_TRUE(all_close(lin.bias()->grad, scale(b1, 2.0), 1e-15, 1e-15));
  // Closed forms: grad_W = g^T x, grad_b = column sums of g (each accumulated twice).
  EXPECT_TRUE(
      all_close(w1, ref::linear(g.t().contiguous(), x.t().contiguous(), Tensor()), 1e-14, 1e-14));
  EXPECT_TRUE(all_close(b1, ref::column_sum(g), 1e-14, 1e-14));
  lin.zero_grad();
  for (double v : lin.weight().grad.to_vector<double>()) EXPECT_EQ(v, 0.0);
}

TEST(Linear, FrozenParametersKeepTheirGradient) {
  Linear lin(4, 2, true, 1, DType::kF64);
  lin.weight().trainable = false;
  lin.forward(random_f64({3, 4}, 5));
  lin.backward(random_f64({3, 2}, 6));
  for (double v : lin.weight().grad.to_vector<double>()) EXPECT_EQ(v, 0.0);
  EXPECT_NE(lin.bias()->grad.to_vector<double>()[0], 0.0);
}

TEST(Linear, ThreadCountInvariant) {
  // Big enough that GEMM, bias add and column sum all split into several tasks.
  const Tensor x = frugal::testing::random_uniform({256, 128}, 21);
  const Tensor g = frugal::testing::random_uniform({256, 96}, 22);
  Tensor y[2], gx[2], gw[2], gb[2];
  for (int t = 0; t < 2; ++t) {
    Linear lin(128, 96, true, 8);
    lin.set_context(testing::threads(t + 1));
    y[t] = lin.forward(x);
    gx[t] = lin.backward(g);
    gw[t] = lin.weight().grad;
    gb[t] = lin.bias()->grad;
  }
  EXPECT_TRUE(testing::same_bits(y[0], y[1]));
  EXPECT_TRUE(testing::same_bits(gx[0], gx[1]));
  EXPECT_TRUE(testing::same_bits(gw[0], gw[1]));
  EXPECT_TRUE(testing::same_bits(gb[0], gb[1]));
}

TEST(Linear, BadInput) {
  EXPECT_THROW(Linear(0, 3), Error);
  expect_error([] { Linear(4, 3, true, 0, DType::kI32); }, ErrorCode::kInvalidArgument, "Linear");
  Linear lin(4, 3);
  expect_error([&] { lin.forward(Tensor::zeros({2, 5})); }, ErrorCode::kInvalidArgument, "Linear");
  expect_error(
      [&] {
        lin.forward(Tensor::zeros({2, 4}, DType::kF64));
      },
      ErrorCode::kInvalidArgument, "Linear");
  expect_error([&] { lin.forward(Tensor::zeros({})); }, ErrorCode::kInvalidArgument, "Linear");
  expect_error(
      [&] {
        lin.backward(Tensor::zeros({2, 3}));
      },
      ErrorCode::kInvalidArgument, "Linear::backward");
  lin.forward(Tensor::zeros({2, 4}));
  expect_error(
      [&] {
        lin.backward(Tensor::zeros({2, 4}));
      },
      ErrorCode::kInvalidArgument, "Linear::backward");
  expect_error(
      [&] {
        lin.backward(Tensor::zeros({2, 3}, DType::kF64));
      },
      ErrorCode::kInvalidArgument, "Linear::backward");
  expect_error(
      [&] {
        linear(Tensor::zeros({2, 5}), Tensor::zeros({3, 4}), Tensor());
      },
      ErrorCode::kInvalidArgument, "linear");
}

TEST(Linear, EmptyBatch) {
  Linear lin(4, 3, true, 0, DType::kF64);
  const Tensor y = lin.forward(Tensor::zeros({0, 4}, DType::kF64));
  EXPECT_EQ(y.shape(), (Shape{0, 3}));
  const Tensor gx = lin.backward(Tensor::zeros({0, 3}, DType::kF64));
  EXPECT_EQ(gx.shape(), (Shape{0, 4}));
  for (double v : lin.weight().grad.to_vector<double>()) EXPECT_EQ(v, 0.0);
}

TEST(LinearBias, AddAndColumnSumMatchReference) {
  for (DType dt : {DType::kF32, DType::kF64}) {
    const Tensor y0 = frugal::testing::random_uniform({37, 150}, 1).to(dt);
    const Tensor b = frugal::testing::random_uniform({150}, 2).to(dt);
    Tensor y = y0.clone();
    linear_add_bias(y, b);
    std::vector<double> want = y0.to_vector<double>();
    const auto bv = b.to_vector<double>();
    for (int64_t r = 0; r < 37; ++r) {
      for (int64_t c = 0; c < 150; ++c) want[r * 150 + c] += bv[c];
    }
    // One addition, one rounding to the dtype.
    const double tol = dt == DType::kF32 ? 2e-7 : 1e-15;
    EXPECT_TRUE(all_close(y.to_vector<double>(), want, tol, tol));

    Tensor gb = Tensor::full({150}, 0.5, dt);
    linear_bias_grad(y0, gb);
    const Tensor cs = ref::column_sum(y0);
    std::vector<double> want_gb = cs.to_vector<double>();
    for (double& v : want_gb) v += 0.5;
    // Summed in double, one rounding to the dtype at the end.
    EXPECT_TRUE(all_close(gb.to_vector<double>(), want_gb, tol, tol));
  }
}

TEST(LinearBias, ColumnSumThreadCountInvariantAndStrided) {
  const Tensor g = frugal::testing::random_uniform({300, 1000}, 3);
  Tensor a = Tensor::zeros({1000}), b = Tensor::zeros({1000});
  linear_bias_grad(g, a, testing::threads(1));
  linear_bias_grad(g, b, testing::threads(2));
  EXPECT_TRUE(testing::same_bits(a, b));
  // A strided (transposed) gradient is summed like its contiguous copy.
  const Tensor gt = frugal::testing::random_uniform({1000, 300}, 4).t();
  Tensor c = Tensor::zeros({1000}), d = Tensor::zeros({1000});
  linear_bias_grad(gt, c);
  linear_bias_grad(gt.contiguous(), d);
  EXPECT_TRUE(testing::same_bits(c, d));
}

TEST(LinearBias, BadInput) {
  Tensor y = Tensor::zeros({2, 3});
  expect_error([&] { linear_add_bias(y, Tensor::zeros({4})); }, ErrorCode::kInvalidArgument,
               "linear_add_bias");
  expect_error([&] { linear_add_bias(y, Tensor::zeros({3}, DType::kF64)); },
               ErrorCode::kInvalidArgument, "linear_add_bias");
  Tensor y1 = Tensor::zeros({6});
  expect_error([&] { linear_add_bias(y1, Tensor::zeros({6})); }, ErrorCode::kInvalidArgument,
               "linear_add_bias");
  Tensor yi = Tensor::zeros({2, 3}, DType::kI32);
  expect_error([&] { linear_add_bias(yi, Tensor::zeros({3}, DType::kI32)); },
               ErrorCode::kInvalidArgument, "linear_add_bias");
  Tensor gb = Tensor::zeros({2});
  expect_error(
      [&] {
        linear_bias_grad(Tensor::zeros({2, 3}), gb);
      },
      ErrorCode::kInvalidArgument, "linear_bias_grad");
  Tensor gb64 = Tensor::zeros({3}, DType::kF64);
  expect_error(
      [&] {
        linear_bias_grad(Tensor::zeros({2, 3}), gb64);
      },
      ErrorCode::kInvalidArgument, "linear_bias_grad");
}

TEST(Flatten, ReshapesAndRestores) {
  Flatten f;
  const Tensor x = random_f64({2, 3, 4, 5}, 1);
  const Tensor y = f.forward(x);
  EXPECT_EQ(y.shape(), (Shape{2, 60}));
  EXPECT_EQ(y.to_vector<double>(), x.to_vector<double>());
  const Tensor g = random_f64({2, 60}, 2);
  const Tensor gx = f.backward(g);
  EXPECT_EQ(gx.shape(), x.shape());
  EXPECT_EQ(gx.to_vector<double>(), g.to_vector<double>());
  // A contiguous input is flattened without a copy.
  EXPECT_EQ(y.storage(), x.storage());

  Flatten f2(-2);
  EXPECT_EQ(f2.forward(x).shape(), (Shape{2, 3, 20}));
  Flatten f0(0);
  EXPECT_EQ(f0.forward(x).shape(), (Shape{120}));
  // A strided input is copied in row-major order of its logical shape.
  const Tensor xt = random_f64({4, 3}, 3).t();
  EXPECT_EQ(f0.forward(xt).to_vector<double>(), xt.contiguous().to_vector<double>());
}

TEST(Flatten, BadInput) {
  Flatten f(4);
  expect_error([&] { f.forward(Tensor::zeros({2, 3})); }, ErrorCode::kInvalidArgument, "Flatten");
  Flatten g;
  expect_error(
      [&] {
        g.backward(Tensor::zeros({2, 3}));
      },
      ErrorCode::kInvalidArgument, "Flatten::backward");
  g.forward(Tensor::zeros({2, 3, 4}));
  expect_error(
      [&] {
        g.backward(Tensor::zeros({2, 3, 4}));
      },
      ErrorCode::kInvalidArgument, "Flatten::backward");
}

TEST(Linear, ComposesInASequentialWithGelu) {
  // Linear -> GELU(tanh) -> Linear composed in a Sequential: the whole-model input gradient matches
  // finite differences in double.
  Sequential net;
  net.add(std::make_shared<Linear>(5, 8, true, 1, DType::kF64));
  net.add(std::make_shared<GELU>(GeluApprox::kTanh));
  net.add(std::make_shared<Linear>(8, 3, true, 2, DType::kF64));
  Tensor x = random_f64({4, 5}, 7);
  const Tensor w = random_f64({4, 3}, 8);
  net.forward(x);
  const Tensor gx = net.backward(w);
  // Smooth composition: central differences at h = 1e-5 are accurate to ~1e-9.
  EXPECT_TRUE(all_close(gx,
                        numeric_grad(
                            x, [&] { return net.forward(x); }, w),
                        1e-7, 1e-8));
}

}  // namespace
}  // namespace frugal::nn
