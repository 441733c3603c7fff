// Conv2d on the CPU: forward and the three gradients against the direct scalar convolution
// (ref::) over many geometries, finite differences in double through the layer, determinism
// across thread counts and seeds, initialisation bounds, and bad input.
#include "frugal/nn/conv.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "frugal/core/ops.hpp"
#include "frugal/ref/nn_conv.hpp"
#include "support/check.hpp"
#include "support/tolerance.hpp"

namespace frugal {
namespace {

using nn::Conv2dParams;
using nn::Size2;
using testing::all_close;
using testing::expect_error;
using testing::random_uniform;

struct ConvCase {
  int64_t n, c_in, c_out, h, w, kh, kw;
  Conv2dParams p;
  bool bias;
};

std::string describe(const ConvCase& c) {
  return detail::concat("n", c.n, " ci", c.c_in, " co", c.c_out, " ", c.h, "x", c.w, " k", c.kh,
                        "x", c.kw, " s", c.p.stride.h, ",", c.p.stride.w, " p", c.p.padding.h, ",",
                        c.p.padding.w, " d", c.p.dilation.h, ",", c.p.dilation.w, " g", c.p.groups,
                        c.bias ? " bias" : "");
}

Conv2dParams P(Size2 s, Size2 pad, Size2 d = 1, int64_t g = 1) { return {s, pad, d, g}; }

// Covers stride 1/2/3, padding 0/1/2 (and asymmetric), dilation 1/2, groups 1/2/depthwise,
// non-square kernels, 1x1 kernels (the no-im2col path), small planes (several samples per GEMM),
// large planes (one sample per GEMM, weight-gradient chunks) and a kernel as large as the
// padded input.
const std::vector<ConvCase> kCases = {
    {2, 3, 4, 7, 6, 3, 3, P(1, 0), true},
    {2, 3, 4, 7, 6, 3, 3, P(1, 1), false},
    {1, 4, 6, 9, 8, 3, 2, P(2, {1, 2}), true},
    {2, 4, 4, 9, 9, 3, 3, P(1, 2, 2, 2), true},
    {2, 6, 6, 8, 8, 3, 3, P(1, 1, 1, 6), true},
    {2, 6, 12, 8, 7, 3, 3, P(1, 1, 1, 6), false},
    {3, 4, 6, 10, 9, 2, 3, P({2, 1}, {1, 0}, {1, 2}, 2), true},
    {3, 8, 4, 5, 5, 1, 1, P(1, 0), true},
    {1, 8, 4, 5, 5, 1, 1, P(1, 0, 1, 2), true},
    {2, 8, 4, 6, 6, 1, 1, P(2, 1), false},
    {3, 2, 3, 20, 20, 3, 3, P(1, 1), true},
    {1, 2, 2, 3, 3, 5, 5, P(1, 1), true},
    {2, 2, 2, 9, 9, 2, 2, P(3, 0), true},
    {2, 3, 5, 11, 4, 5, 1, P({2, 1}, {2, 0}, {2, 1}), true},
    {40, 2, 2, 16, 16, 3, 3, P(1, 1), true},
};

struct ConvData {
  Tensor x, w, b, dy;
};

ConvData make_data(const ConvCase& c, DType dt, uint32_t seed) {
  ConvData d;
  d.x = random_uniform(Shape{c.n, c.c_in, c.h, c.w}, seed).to(dt);
  d.w = random_uniform(Shape{c.c_out, c.c_in / c.p.groups, c.kh, c.kw}, seed + 1).to(dt);
  if (c.bias) d.b = random_uniform(Shape{c.c_out}, seed + 2).to(dt);
  const Shape ys = nn::conv2d_output_shape(d.x.shape(), d.w.shape(), c.p);
  d.dy = random_uniform(ys, seed + 3).to(dt);
  return d;
}

ConstTensorView bias_view(const Tensor& b) { return b.defined() ? b.cview() : ConstTensorView{}; }

void check_against_ref(DType dt, double rtol, double atol) {
  for (const ConvCase& c : kCases) {
    SCOPED_TRACE(describe(c));
    const ConvData d = make_data(c, dt, 11);
    const Tensor y = nn::conv2d(d.x, d.w, bias_view(d.b), c.p);
    EXPECT_TRUE(all_close(y, ref::conv2d(d.x, d.w, d.b, c.p), rtol, atol));

    const Tensor dx = nn::conv2d_backward_input(d.dy, d.w, d.x.shape(), c.p);
    EXPECT_TRUE(all_close(dx, ref::conv2d_backward_input(d.dy, d.w, d.x.shape(), c.p), rtol, atol));

    // The weight gradient accumulates: start from ones and expect 1 + dL/dw.
    Tensor dw = Tensor::full(d.w.shape(), 1.0, dt);
    nn::conv2d_backward_weight(d.dy, d.x, dw, c.p);
    const Tensor dw_ref = add(ref::conv2d_backward_weight(d.dy, d.x, d.w.shape(), c.p),
                              Tensor::full(d.w.shape(), 1.0, DType::kF64));
    EXPECT_TRUE(all_close(dw, dw_ref, rtol, atol));

    Tensor db = Tensor::full(Shape{c.c_out}, -0.5, dt);
    nn::conv2d_backward_bias(d.dy, db);
    const Tensor db_ref =
        add(ref::conv2d_backward_bias(d.dy), Tensor::full(Shape{c.c_out}, -0.5, DType::kF64));
    EXPECT_TRUE(all_close(db, db_ref, rtol, atol));
  }
}

TEST(Conv2d, MatchesReferenceF64) {
  // Double GEMM against the direct double sum: only summation-order rounding (~1e-15).
  check_against_ref(DType::kF64, 1e-12, 1e-12);
}

TEST(Conv2d, MatchesReferenceF32) {
  // f32 GEMM over K <= 400 products of values in [-1, 1] (sums up to ~100): rounding ~1e-5.
  check_against_ref(DType::kF32, 1e-5, 1e-4);
}

TEST(Conv2d, StridedInputMatchesContiguous) {
  const ConvCase c{2, 3, 4, 7, 6, 3, 3, P(1, 1), true};
  const ConvData d = make_data(c, DType::kF32, 5);
  // A (N, C, W, H) tensor transposed to (N, C, H, W): same values, non-contiguous strides.
  const Tensor xt = d.x.transpose(2, 3).contiguous().transpose(2, 3);
  ASSERT_FALSE(xt.is_contiguous());
  EXPECT_TRUE(testing::all_equal(nn::conv2d(xt, d.w, d.b.cview(), c.p),
                                 nn::conv2d(d.x, d.w, d.b.cview(), c.p)));
}

TEST(Conv2d, ThreadCountDoesNotChangeResults) {
  // Many samples so the weight gradient splits into 16 chunks; results must be bit-identical.
  const ConvCase c{40, 3, 4, 12, 12, 3, 3, P(1, 1), true};
  const ConvData d = make_data(c, DType::kF32, 21);
  auto run = [&](int threads) {
    ExecContext ctx;
    ctx.num_threads = threads;
    std::vector<Tensor> out;
    out.push_back(nn::conv2d(d.x, d.w, d.b.cview(), c.p, ctx));
    out.push_back(nn::conv2d_backward_input(d.dy, d.w, d.x.shape(), c.p, ctx));
    Tensor dw = Tensor::zeros(d.w.shape());
    nn::conv2d_backward_weight(d.dy, d.x, dw, c.p, ctx);
    out.push_back(dw);
    Tensor db = Tensor::zeros(Shape{c.c_out});
    nn::conv2d_backward_bias(d.dy, db, ctx);
    out.push_back(db);
    return out;
  };
  const auto one = run(1);
  const auto two = run(2);
  for (std::size_t i = 0; i < one.size(); ++i) EXPECT_TRUE(testing::all_equal(one[i], two[i])) << i;
}

// Central finite differences of L = sum(y * r) through the layer, in double, for the input,
// weight and bias gradients.
void check_finite_differences(int64_t in, int64_t out, Size2 k, const nn::Conv2dOptions& opt,
                              Shape xs) {
  nn::Conv2d conv(in, out, k, opt, 3, DType::kF64);
  Tensor x = random_uniform(xs, 7).to(DType::kF64);
  const Tensor y0 = conv.forward(x);
  const Tensor r = random_uniform(y0.shape(), 8).to(DType::kF64);
  conv.zero_grad();
  const Tensor dx = conv.backward(r);

  auto loss = [&]() {
    const auto y = conv.forward(x).to_vector<double>();
    const auto rv = r.to_vector<double>();
    double s = 0;
    for (std::size_t i = 0; i < y.size(); ++i) s += y[i] * rv[i];
    return s;
  };
  // Central differences of a function that is linear in each variable: exact up to rounding of
  // ~1e-16 * |L| / h, so 1e-7 is ample.
  const double h = 1e-4;
  auto fd_check = [&](Tensor& t, const Tensor& grad, const char* what) {
    SCOPED_TRACE(what);
    double* p = t.data<double>();
    const auto g = grad.to_vector<double>();
    for (int64_t i = 0; i < t.numel(); ++i) {
      const double keep = p[i];
      p[i] = keep + h;
      const double lp = loss();
      p[i] = keep - h;
      const double lm = loss();
      p[i] = keep;
      EXPECT_NEAR(g[static_cast<std::size_t>(i)], (lp - lm) / (2 * h), 1e-7) << "element " << i;
    }
  };
  fd_check(x, dx, "input");
  fd_check(conv.weight().value, conv.weight().grad, "weight");
  if (conv.bias() != nullptr) fd_check(conv.bias()->value, conv.bias()->grad, "bias");
}

TEST(Conv2d, FiniteDifferences) {
  check_finite_differences(3, 4, 3, {.padding = 1}, Shape{2, 3, 5, 4});
  check_finite_differences(4, 4, {2, 3},
                           {.stride = 2, .padding = {1, 2}, .dilation = {2, 1}, .groups = 2},
                           Shape{2, 4, 7, 6});
  check_finite_differences(4, 4, 3, {.padding = 1, .groups = 4, .bias = false}, Shape{1, 4, 4, 4});
  check_finite_differences(6, 3, 1, {}, Shape{3, 6, 2, 3});
}

TEST(Conv2d, LayerAccumulatesGradients) {
  nn::Conv2d conv(2, 3, 3, {.padding = 1}, 1, DType::kF64);
  const Tensor x = random_uniform(Shape{2, 2, 5, 5}, 3).to(DType::kF64);
  const Tensor dy = random_uniform(Shape{2, 3, 5, 5}, 4).to(DType::kF64);
  conv.forward(x);
  conv.backward(dy);
  const auto once = conv.weight().grad.to_vector<double>();
  const auto once_b = conv.bias()->grad.to_vector<double>();
  conv.forward(x);
  conv.backward(dy);
  const auto twice = conv.weight().grad.to_vector<double>();
  const auto twice_b = conv.bias()->grad.to_vector<double>();
  for (std::size_t i = 0; i < once.size(); ++i) EXPECT_DOUBLE_EQ(twice[i], 2 * once[i]);
  for (std::size_t i = 0; i < once_b.size(); ++i) EXPECT_DOUBLE_EQ(twice_b[i], 2 * once_b[i]);
  EXPECT_TRUE(all_close(
      conv.weight().grad,
      scale(ref::conv2d_backward_weight(dy, x, conv.weight().value.shape(), conv.params()), 2.0),
      1e-12, 1e-12));  // double: summation order only
}

TEST(Conv2d, InitialisationIsSeededAndBounded) {
  const nn::Conv2dOptions opt{.groups = 2};
  nn::Conv2d a(4, 6, {3, 2}, opt, 42), b(4, 6, {3, 2}, opt, 42), c(4, 6, {3, 2}, opt, 43);
  EXPECT_TRUE(testing::all_equal(a.weight().value, b.weight().value));
  EXPECT_TRUE(testing::all_equal(a.bias()->value, b.bias()->value));
  EXPECT_FALSE(all_close(a.weight().value, c.weight().value, 0, 0));
  EXPECT_EQ(a.weight().value.shape(), (Shape{6, 2, 3, 2}));
  EXPECT_EQ(a.num_parameters(), 6 * 2 * 3 * 2 + 6);
  const double bound = 1.0 / std::sqrt(2.0 * 3 * 2);  // fan_in = in / groups * kh * kw
  for (double v : a.weight().value.to_vector<double>()) EXPECT_LE(std::fabs(v), bound);
  for (double v : a.bias()->value.to_vector<double>()) EXPECT_LE(std::fabs(v), bound);
  // The bias is not a copy of the weight's first draws.
  EXPECT_NE(a.bias()->value.to_vector<double>()[0], a.weight().value.to_vector<double>()[0]);
  nn::Conv2d nb(4, 6, 3, {.bias = false});
  EXPECT_EQ(nb.bias(), nullptr);
  EXPECT_EQ(nb.parameters().size(), 1u);
}

TEST(Conv2d, BadInput) {
  const Tensor x = Tensor::zeros(Shape{2, 4, 6, 6});
  const Tensor w = Tensor::zeros(Shape{6, 4, 3, 3});
  const Tensor b = Tensor::zeros(Shape{6});
  const Conv2dParams p{};
  const auto inv = ErrorCode::kInvalidArgument;
  expect_error([&] { nn::conv2d(Tensor::zeros(Shape{4, 6, 6}), w, b.cview(), p); }, inv, "conv2d");
  expect_error([&] { nn::conv2d(x, Tensor::zeros(Shape{6, 36}), b.cview(), p); }, inv, "conv2d");
  expect_error(
      [&] {
        nn::conv2d(x, Tensor::zeros(Shape{6, 3, 3, 3}), b.cview(), p);
      },
      inv, "conv2d");  // channel mismatch
  expect_error(
      [&] {
        nn::conv2d(x, Tensor::zeros(Shape{6, 4, 3, 3}), b.cview(), {.groups = 4});
      },
      inv, "conv2d");  // weight dim 1 must be 1 with 4 groups
  expect_error(
      [&] {
        nn::conv2d(x, Tensor::zeros(Shape{6, 1, 3, 3}), b.cview(), {.groups = 3});
      },
      inv, "conv2d");  // groups do not divide channels
  expect_error(
      [&] {
        nn::conv2d(x, Tensor::zeros(Shape{6, 4, 7, 3}), b.cview(), p);
      },
      inv, "conv2d");  // kernel larger than the (unpadded) input
  expect_error([&] { nn::conv2d(x, w, b.cview(), {.padding = 1, .dilation = 4}); }, inv,
               "conv2d");  // dilated kernel 9 > padded 8
  expect_error([&] { nn::conv2d(x, w, b.cview(), {.stride = 0}); }, inv, "conv2d");
  expect_error([&] { nn::conv2d(x, w, b.cview(), {.padding = -1}); }, inv, "conv2d");
  expect_error([&] { nn::conv2d(x, w, b.cview(), {.dilation = {1, 0}}); }, inv, "conv2d");
  expect_error([&] { nn::conv2d(x, w, Tensor::zeros(Shape{5}).cview(), p); }, inv, "conv2d");
  expect_error([&] { nn::conv2d(x, w.to(DType::kF64), b.cview(), p); }, inv, "conv2d");
  expect_error([&] { nn::conv2d(x.to(DType::kF16), w.to(DType::kF16), {}, p); }, inv, "conv2d");
  expect_error([&] { nn::conv2d(x.to(DType::kI32), w.to(DType::kI32), {}, p); }, inv, "conv2d");
  expect_error(
      [&] {
        nn::conv2d(Tensor::zeros(Shape{2, 4, 0, 6}), w, b.cview(), p);
      },
      inv, "conv2d");
  expect_error(
      [&] {
        nn::conv2d_backward_input(Tensor::zeros(Shape{2, 6, 3, 3}), w, x.shape(), p);
      },
      inv, "conv2d");  // grad_out shape should be (2, 6, 4, 4)
  Tensor dw = Tensor::zeros(Shape{6, 4, 3, 3});
  expect_error(
      [&] {
        nn::conv2d_backward_weight(Tensor::zeros(Shape{2, 6, 4, 5}), x, dw, p);
      },
      inv, "conv2d");
  Tensor db = Tensor::zeros(Shape{5});
  expect_error(
      [&] {
        nn::conv2d_backward_bias(Tensor::zeros(Shape{2, 6, 4, 4}), db);
      },
      inv, "conv2d");

  expect_error([] { nn::Conv2d(4, 6, 3, {.groups = 4}); }, inv, "Conv2d");
  expect_error([] { nn::Conv2d(0, 6, 3); }, inv, "Conv2d");
  expect_error([] { nn::Conv2d(4, 6, {3, 0}); }, inv, "Conv2d");
  expect_error([] { nn::Conv2d(4, 6, 3, {}, 0, DType::kF16); }, inv, "Conv2d");
  nn::Conv2d conv(4, 6, 3);
  expect_error([&] { conv.backward(Tensor::zeros(Shape{2, 6, 4, 4})); }, inv, "Conv2d");
  expect_error([&] { conv.forward(Tensor::zeros(Shape{2, 3, 6, 6})); }, inv, "Conv2d");
  expect_error([&] { conv.forward(Tensor::zeros(Shape{3, 6, 6})); }, inv, "Conv2d");
}

TEST(Conv2d, EmptyBatch) {
  const Tensor x = Tensor::zeros(Shape{0, 2, 5, 5});
  const Tensor w = Tensor::full(Shape{3, 2, 3, 3}, 1.0);
  const Tensor y = nn::conv2d(x, w, {}, {});
  EXPECT_EQ(y.shape(), (Shape{0, 3, 3, 3}));
  Tensor dw = Tensor::zeros(w.shape());
  nn::conv2d_backward_weight(y, x, dw, {});
  EXPECT_TRUE(testing::all_equal(dw, Tensor::zeros(w.shape())));
}

}  // namespace
}  // namespace frugal
