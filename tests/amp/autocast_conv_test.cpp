// nn::Conv2d under autocast (bf16: oneDNN's bf16 convolution; f16: the operands widened to f32)
// against the scalar double reference (frugal/ref/nn_conv.hpp) of the operands rounded to the low
// dtype: forward, grad_input, grad_weight (accumulated) and grad_bias, over odd shapes, strides,
// padding, dilation and groups.
//
// Tolerance: the products of bf16 / f16 values are exact in fp32, so the only error is the fp32
// summation of K terms (in any order): |sum_fp32 - sum| <= K u sum |terms| (Higham's gamma_K,
// u = 2^-24). sum |terms| is the reference convolution of |x| and |w| (or |dy|); K is the number
// of terms of one output plus one for the bias or the accumulation into the gradient.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

#include "amp/conv_bound.hpp"
#include "frugal/amp.hpp"
#include "frugal/core.hpp"
#include "frugal/nn/conv.hpp"
#include "frugal/ref/nn_conv.hpp"
#include "support/check.hpp"
#include "support/tolerance.hpp"

namespace frugal::amp {
namespace {

using frugal::testing::expect_error;
using frugal::testing::random_uniform;
using frugal::testing::same_bits;

struct Case {
  const char* name;
  int64_t n, c_in, c_out, h, w;
  nn::Size2 kernel;
  nn::Conv2dOptions opt;
};

std::string describe(const Case& c, DType low) {
  std::ostringstream s;
  s << c.name << " " << dtype_name(low);
  return s.str();
}

/// One autocast forward + backward of a fresh Conv2d, checked against the double reference.
void check_case(const Case& c, DType low, uint64_t seed) {
  SCOPED_TRACE(describe(c, low));
  nn::Conv2d conv(c.c_in, c.c_out, c.kernel, c.opt, seed);
  const Tensor x = random_uniform({c.n, c.c_in, c.h, c.w}, seed + 1);
  const nn::Conv2dParams p = c.opt.params();
  const Shape ys = nn::conv2d_output_shape(x.shape(), conv.weight().value.shape(), p);
  const Tensor g = random_uniform(ys, seed + 2);
  // Accumulation: the gradients start from 0.5, as after an earlier micro-batch.
  conv.weight().grad = Tensor::full(conv.weight().value.shape(), 0.5);
  if (conv.bias() != nullptr) conv.bias()->grad = Tensor::full(Shape{c.c_out}, 0.5);
  Tensor y, gx;
  {
    AmpContext ac(default_policy(low));
    y = conv.forward(x);
    gx = conv.backward(g);
  }
  ASSERT_EQ(y.dtype(), DType::kF32);
  ASSERT_EQ(gx.dtype(), DType::kF32);
  const Tensor xr = rounded(x, low), wr = rounded(conv.weight().value, low);
  const Tensor gr = rounded(g, low);
  const Tensor bias = conv.bias() != nullptr ? conv.bias()->value : Tensor();
  const Tensor abias = bias.defined() ? abs_of(bias) : Tensor();
  const int64_t kh = c.kernel.h, kw = c.kernel.w, groups = c.opt.groups;
  // Forward: C_in / groups * kh * kw products, plus the bias.
  const double k_fwd = static_cast<double>(c.c_in / groups * kh * kw + 1);
  EXPECT_TRUE(within_sum_bound(y, ref::conv2d(xr, wr, bias, p),
                               ref::conv2d(abs_of(xr), abs_of(wr), abias, p), k_fwd));
  // grad_input: at most C_out / groups * kh * kw taps reach one input element.
  const double k_data = static_cast<double>(c.c_out / groups * kh * kw);
  EXPECT_TRUE(within_sum_bound(gx, ref::conv2d_backward_input(gr, wr, x.shape(), p),
                               ref::conv2d_backward_input(abs_of(gr), abs_of(wr), x.shape(), p),
                               k_data));
  // grad_weight: N * H_out * W_out products, then one addition into the 0.5 already there.
  const Shape ws = conv.weight().value.shape();
  const double k_filt = static_cast<double>(ys[0] * ys[2] * ys[3] + 1);
  EXPECT_TRUE(within_sum_bound(
      conv.weight().grad, plus(ref::conv2d_backward_weight(gr, xr, ws, p), 0.5),
      plus(ref::conv2d_backward_weight(abs_of(gr), abs_of(xr), ws, p), 0.5), k_filt));
  // grad_bias: from the f32 grad_out (not rounded), N * H_out * W_out terms summed in double,
  // stored in f32 after adding 0.5: one f32 rounding.
  if (conv.bias() != nullptr) {
    const auto db = ref::conv2d_backward_bias(g).to_vector<double>();
    const auto got = conv.bias()->grad.to_vector<double>();
    for (std::size_t i = 0; i < db.size(); ++i) {
      EXPECT_NEAR(got[i], db[i] + 0.5, 2 * kU * (std::fabs(db[i]) + 0.5)) << "channel " << i;
    }
  }
}

// The digits CNN's two convolutions (no bias), odd extents with stride, padding, dilation and a
// non-square kernel, and groups with stride.
const Case kCases[] = {
    {"digits conv1", 5, 1, 16, 8, 8, {3, 3}, {.padding = 1, .bias = false}},
    {"digits conv2", 4, 16, 32, 8, 8, {3, 3}, {.padding = 1, .bias = false}},
    {"odd", 3, 5, 7, 9, 11, {3, 2}, {.stride = {2, 1}, .padding = {1, 0}, .dilation = {1, 2}}},
    {"groups", 2, 6, 4, 7, 5, {3, 3}, {.stride = 2, .padding = 1, .groups = 2}},
    {"pointwise", 3, 8, 5, 4, 6, {1, 1}, {}},
};

TEST(AutocastConv, Bf16MatchesDoubleReferenceOfRoundedOperands) {
  uint64_t seed = 100;
  for (const Case& c : kCases) check_case(c, DType::kBF16, seed += 10);
}

TEST(AutocastConv, F16MatchesDoubleReferenceOfRoundedOperands) {
  uint64_t seed = 200;
  for (const Case& c : kCases) check_case(c, DType::kF16, seed += 10);
}

TEST(AutocastConv, SavedActivationDtypeDoesNotChangeResults) {
  // The input kept for backward is the rounded input, in bf16 or (exactly) in f32.
  const Tensor x = random_uniform({3, 4, 7, 7}, 31);
  const Tensor g = random_uniform({3, 6, 4, 4}, 32);
  Tensor y[2], gx[2], gw[2];
  for (int i = 0; i < 2; ++i) {
    nn::Conv2d conv(4, 6, 3, {.stride = 2, .padding = 1}, 33);
    AutocastPolicy pol = default_policy(DType::kBF16);
    pol.low_saved_activations = i == 0;
    AmpContext ac(pol);
    y[i] = conv.forward(x);
    gx[i] = conv.backward(g);
    gw[i] = conv.weight().grad;
  }
  EXPECT_TRUE(same_bits(y[0], y[1]));
  EXPECT_TRUE(same_bits(gx[0], gx[1]));
  EXPECT_TRUE(same_bits(gw[0], gw[1]));
}

TEST(AutocastConv, FrozenWeightGetsNoGradient) {
  nn::Conv2d conv(3, 4, 3, {.padding = 1}, 41);
  conv.weight().trainable = false;
  const Tensor x = random_uniform({2, 3, 5, 5}, 42);
  const Tensor g = random_uniform({2, 4, 5, 5}, 43);
  AmpContext ac;
  conv.forward(x);
  const Tensor gx = conv.backward(g);
  EXPECT_EQ(gx.shape(), x.shape());
  for (double v : conv.weight().grad.to_vector<double>()) EXPECT_EQ(v, 0.0);
}

TEST(AutocastConv, BadInput) {
  nn::Conv2d conv(3, 4, 3, {.padding = 1}, 51);
  const Tensor x = random_uniform({2, 3, 5, 5}, 52);
  AmpContext ac;
  expect_error(
      [&] {
        conv.backward(random_uniform({2, 4, 5, 5}, 53));
      },
      ErrorCode::kInvalidArgument, "Conv2d");  // before any forward
  expect_error(
      [&] {
        conv.forward(random_uniform({2, 5, 5, 5}, 54));
      },
      ErrorCode::kInvalidArgument, "Conv2d");  // wrong channel count
  conv.forward(x);
  expect_error(
      [&] {
        conv.backward(random_uniform({2, 4, 4, 5}, 55));
      },
      ErrorCode::kInvalidArgument, "Conv2d");  // grad_out of the wrong shape
  expect_error(
      [&] {
        conv.backward(random_uniform({2, 4, 5, 5}, 56).to(DType::kF64));
      },
      ErrorCode::kInvalidArgument, "Conv2d");  // grad_out not f32
}

}  // namespace
}  // namespace frugal::amp
