// LayerNorm: forward against the scalar reference, gradients against central finite differences
// in double, thread-count determinism and bad input.
#include "frugal/nn/layer_norm.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "frugal/core/error.hpp"
#include "frugal/ref/nn_transformer.hpp"
#include "support/check.hpp"
#include "support/tolerance.hpp"

namespace frugal {
namespace {

using testing::all_close;
using testing::dot;
using testing::expect_error;
using testing::random_f64;
using testing::random_uniform;

/// Central differences of `loss` with respect to every element of the f64 host tensor `p`.
Tensor numeric_grad(Tensor& p, const std::function<double()>& loss, double h = 1e-6) {
  return testing::numeric_grad_scalar(p, loss, h);
}

TEST(LayerNorm, ForwardMatchesReference) {
  for (DType dt : {DType::kF32, DType::kF64}) {
    Tensor x = random_uniform({3, 4, 16}, 1, -2.f, 3.f).to(dt);
    Tensor w = random_uniform({16}, 2).to(dt);
    Tensor b = random_uniform({16}, 3).to(dt);
    nn::LayerNormForward r = nn::layer_norm_forward(x, w, b, 1e-5);
    ref::LayerNormResult e = ref::layer_norm_forward(x, w, b, 1e-5);
    // f32: the CPU path sums in double and rounds once, so only output rounding differs.
    const double tol = dt == DType::kF32 ? 1e-6 : 1e-13;
    EXPECT_TRUE(all_close(r.out, e.out, tol, tol));
    EXPECT_TRUE(all_close(r.mean, e.mean, tol, tol));
    EXPECT_TRUE(all_close(r.rstd, e.rstd, tol, tol));
    EXPECT_EQ(r.mean.shape(), Shape({3, 4}));
  }
}

TEST(LayerNorm, WithoutAffineRowsHaveZeroMeanUnitVariance) {
  Tensor x = random_f64({5, 32}, 4, -3.f, 5.f);
  Tensor y = nn::layer_norm_forward(x, {}, {}, 1e-12).out;
  const auto v = y.to_vector<double>();
  for (int i = 0; i < 5; ++i) {
    double m = 0, s = 0;
    for (int j = 0; j < 32; ++j) m += v[i * 32 + j] / 32;
    for (int j = 0; j < 32; ++j) s += (v[i * 32 + j] - m) * (v[i * 32 + j] - m) / 32;
    EXPECT_NEAR(m, 0.0, 1e-14);  // closed form: exact up to double rounding
    EXPECT_NEAR(s, 1.0, 1e-10);  // eps = 1e-12 against variances ~1
  }
}

TEST(LayerNorm, BackwardMatchesFiniteDifferences) {
  Tensor x = random_f64({2, 3, 7}, 5, -1.f, 2.f);
  Tensor w = random_f64({7}, 6);
  Tensor b = random_f64({7}, 7);
  Tensor r = random_f64({2, 3, 7}, 8);  // loss = sum(y * R)
  const double eps = 1e-5;
  auto loss = [&] { return dot(nn::layer_norm_forward(x, w, b, eps).out, r); };
  nn::LayerNormForward f = nn::layer_norm_forward(x, w, b, eps);
  Tensor gw = Tensor::zeros({7}, DType::kF64), gb = Tensor::zeros({7}, DType::kF64);
  Tensor gx = nn::layer_norm_backward(r, x, w, f.mean, f.rstd, gw.view(), gb.view());
  // Central differences with h = 1e-6 in double: truncation ~h^2 * f''' and rounding ~1e-16/h.
  EXPECT_TRUE(all_close(gx, numeric_grad(x, loss), 1e-6, 1e-8));
  EXPECT_TRUE(all_close(gw, numeric_grad(w, loss), 1e-6, 1e-8));
  EXPECT_TRUE(all_close(gb, numeric_grad(b, loss), 1e-6, 1e-8));
  // And against the closed-form reference.
  ref::LayerNormGrads e = ref::layer_norm_backward(r, x, w, eps);
  EXPECT_TRUE(all_close(gx, e.grad_input, 1e-12, 1e-13));  // same formula, other summation order
  EXPECT_TRUE(all_close(gw, e.grad_weight, 1e-12, 1e-13));
  EXPECT_TRUE(all_close(gb, e.grad_bias, 1e-12, 1e-13));
}

TEST(LayerNorm, ModuleAccumulatesGradientsAndNamesParameters) {
  nn::LayerNorm ln(6, 1e-5, true, DType::kF64);
  auto names = ln.named_parameters();
  ASSERT_EQ(names.size(), 2u);
  EXPECT_EQ(names[0].name, "weight");
  EXPECT_EQ(names[1].name, "bias");
  EXPECT_TRUE(all_close(ln.weight()->value, Tensor::full({6}, 1.0, DType::kF64), 0, 0));
  Tensor x = random_f64({4, 6}, 9), g = random_f64({4, 6}, 10);
  ln.forward(x);
  Tensor gx1 = ln.backward(g);
  Tensor gw1 = ln.weight()->grad.clone();
  ln.forward(x);
  Tensor gx2 = ln.backward(g);
  EXPECT_TRUE(all_close(gx1, gx2, 0, 0));
  // Accumulation: the second backward adds the same amount again (exactly 2x in binary).
  auto twice = gw1.to_vector<double>();
  for (auto& e : twice) e *= 2;
  EXPECT_TRUE(all_close(ln.weight()->grad, Tensor::from_vector(twice, {6}), 0, 0));
  nn::LayerNorm plain(6, 1e-5, false);
  EXPECT_TRUE(plain.named_parameters().empty());
  EXPECT_FALSE(plain.affine());
}

TEST(LayerNorm, ResultsDoNotDependOnThreadCount) {
  Tensor x = random_uniform({300, 100}, 11, -2.f, 2.f);
  Tensor w = random_uniform({100}, 12), b = random_uniform({100}, 13);
  Tensor g = random_uniform({300, 100}, 14);
  auto run = [&](int threads) {
    ExecContext ctx;
    ctx.num_threads = threads;
    nn::LayerNormForward f = nn::layer_norm_forward(x, w, b, 1e-5, ctx);
    Tensor gw = Tensor::zeros({100}), gb = Tensor::zeros({100});
    Tensor gx = nn::layer_norm_backward(g, x, w, f.mean, f.rstd, gw.view(), gb.view(), ctx);
    return std::vector<Tensor>{f.out, gx, gw, gb};
  };
  auto a = run(1), c = run(2);
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(testing::all_equal(a[i], c[i])) << i;
}

TEST(LayerNorm, StridedInputMatchesContiguous) {
  Tensor x = random_f64({8, 5}, 15);
  Tensor xt = x.t();  // (5, 8), strided
  Tensor y1 = nn::layer_norm_forward(xt, {}, {}, 1e-5).out;
  Tensor y2 = nn::layer_norm_forward(xt.contiguous(), {}, {}, 1e-5).out;
  EXPECT_TRUE(testing::all_equal(y1, y2));
}

TEST(LayerNorm, BadInput) {
  Tensor x = random_uniform({4, 8}, 16);
  Tensor w = random_uniform({8}, 17);
  const char* f = "layer_norm_forward";
  expect_error([&] { nn::layer_norm_forward(x, random_uniform({7}, 1), {}); },
               ErrorCode::kInvalidArgument, f);
  expect_error([&] { nn::layer_norm_forward(x, w.to(DType::kF64), {}); },
               ErrorCode::kInvalidArgument, f);
  expect_error([&] { nn::layer_norm_forward(x.to(DType::kI32), {}, {}); }, ErrorCode::kUnsupported,
               f);
  expect_error([&] { nn::layer_norm_forward(x.to(DType::kF16), {}, {}); }, ErrorCode::kUnsupported,
               f);
  expect_error([&] { nn::layer_norm_forward(Tensor::full({}, 1.0), {}, {}); },
               ErrorCode::kInvalidArgument, f);
  expect_error(
      [&] {
        nn::layer_norm_forward(Tensor::zeros({3, 0}), {}, {});
      },
      ErrorCode::kInvalidArgument, f);
  expect_error([&] { nn::layer_norm_forward(x, {}, {}, 0.0); }, ErrorCode::kInvalidArgument, f);
  nn::LayerNormForward r = nn::layer_norm_forward(x, w, {});
  const char* fb = "layer_norm_backward";
  expect_error(
      [&] {
        nn::layer_norm_backward(random_uniform({4, 7}, 1), x, w, r.mean, r.rstd);
      },
      ErrorCode::kInvalidArgument, fb);
  expect_error(
      [&] {
        nn::layer_norm_backward(x, x, w, r.rstd.reshape({2, 2}), r.rstd);
      },
      ErrorCode::kInvalidArgument, fb);
  Tensor gw = Tensor::zeros({9});
  expect_error([&] { nn::layer_norm_backward(x, x, w, r.mean, r.rstd, gw.view()); },
               ErrorCode::kInvalidArgument, fb);

  nn::LayerNorm ln(8);
  expect_error([&] { ln.backward(x); }, ErrorCode::kInvalidArgument, "LayerNorm::backward");
  expect_error(
      [&] {
        ln.forward(random_uniform({4, 6}, 1));
      },
      ErrorCode::kInvalidArgument, "LayerNorm::forward");
  expect_error([&] { nn::LayerNorm bad(0); }, ErrorCode::kInvalidArgument, "LayerNorm");
  expect_error([&] { nn::LayerNorm bad(4, 1e-5, true, DType::kI32); }, ErrorCode::kInvalidArgument,
               "LayerNorm");
}

}  // namespace
}  // namespace frugal
