// Causal self-attention: forward against the scalar reference, gradients (qkv, input and every
// weight) against central finite differences in double, causality, thread-count determinism
// and bad input.
#include "frugal/nn/attention.hpp"

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
using testing::all_equal;
using testing::dot;
using testing::expect_error;
using testing::random_f64;
using testing::random_uniform;

Tensor numeric_grad(Tensor& p, const std::function<double()>& loss, double h = 1e-6) {
  return testing::numeric_grad_scalar(p, loss, h);
}

TEST(CausalAttention, ForwardMatchesReference) {
  for (DType dt : {DType::kF32, DType::kF64}) {
    Tensor qkv = random_uniform({2, 5, 24}, 1, -2.f, 2.f).to(dt);
    nn::CausalAttentionForward r = nn::causal_attention_forward(qkv, 2);
    ref::AttentionResult e = ref::causal_attention_forward(qkv, 2);
    // f32 products and exp in float (Eigen) against double: a few ulps of values ~1.
    const double tol = dt == DType::kF32 ? 2e-6 : 1e-13;
    EXPECT_TRUE(all_close(r.out, e.out, tol, tol));
    EXPECT_TRUE(all_close(r.probs, e.probs, tol, tol));
  }
}

TEST(CausalAttention, ProbabilitiesAreCausalRowsSummingToOne) {
  Tensor qkv = random_f64({1, 6, 36}, 2);
  Tensor p = nn::causal_attention_forward(qkv, 3).probs;
  const auto v = p.to_vector<double>();
  for (int h = 0; h < 3; ++h) {
    for (int i = 0; i < 6; ++i) {
      double s = 0;
      for (int j = 0; j < 6; ++j) {
        const double x = v[(h * 6 + i) * 6 + j];
        if (j > i) {
          EXPECT_EQ(x, 0.0);
        }
        s += x;
      }
      EXPECT_NEAR(s, 1.0, 1e-14);  // a normalized softmax row, double rounding
    }
  }
}

TEST(CausalAttention, FunctionalBackwardMatchesFiniteDifferences) {
  Tensor qkv = random_f64({2, 5, 24}, 3, -1.5f, 1.5f);
  Tensor r = random_f64({2, 5, 8}, 4);
  auto loss = [&] { return dot(nn::causal_attention_forward(qkv, 2).out, r); };
  nn::CausalAttentionForward f = nn::causal_attention_forward(qkv, 2);
  Tensor g = nn::causal_attention_backward(r, qkv, f.probs, 2);
  // Central differences, h = 1e-6 in double: error ~1e-10 on gradients of size ~1.
  EXPECT_TRUE(all_close(g, numeric_grad(qkv, loss), 1e-6, 1e-8));
}

TEST(CausalAttention, ModuleBackwardMatchesFiniteDifferences) {
  nn::CausalSelfAttention attn(8, 2, 7, DType::kF64);
  Tensor x = random_f64({2, 5, 8}, 5);
  Tensor r = random_f64({2, 5, 8}, 6);
  auto loss = [&] { return dot(attn.forward(x), r); };
  attn.zero_grad();
  attn.forward(x);
  Tensor gx = attn.backward(r);
  EXPECT_TRUE(all_close(gx, numeric_grad(x, loss), 1e-6, 1e-8));  // h = 1e-6, double
  auto params = attn.named_parameters();
  ASSERT_EQ(params.size(), 4u);
  EXPECT_EQ(params[0].name, "c_attn.weight");
  EXPECT_EQ(params[1].name, "c_attn.bias");
  EXPECT_EQ(params[2].name, "c_proj.weight");
  EXPECT_EQ(params[3].name, "c_proj.bias");
  EXPECT_EQ(params[0].param->value.shape(), Shape({24, 8}));
  for (auto& np : params) {
    Tensor analytic = np.param->grad.clone();
    EXPECT_TRUE(all_close(analytic, numeric_grad(np.param->value, loss), 1e-6, 1e-8)) << np.name;
  }
}

TEST(CausalAttention, OutputAtTimeTIgnoresLaterInputs) {
  nn::CausalSelfAttention attn(8, 2, 11);
  Tensor x = random_uniform({2, 6, 8}, 7);
  const Tensor y = attn.forward(x).clone();
  for (int64_t t = 0; t + 1 < 6; ++t) {
    Tensor x2 = x.clone();
    float* p = x2.data<float>();
    for (int64_t b = 0; b < 2; ++b) {
      for (int64_t tt = t + 1; tt < 6; ++tt) {
        for (int64_t c = 0; c < 8; ++c) p[(b * 6 + tt) * 8 + c] += 3.0f * (1 + c);
      }
    }
    Tensor y2 = attn.forward(x2);
    EXPECT_TRUE(all_equal(y.slice(1, 0, t + 1), y2.slice(1, 0, t + 1))) << t;
    EXPECT_FALSE(all_close(y.slice(1, t + 1, 6), y2.slice(1, t + 1, 6), 0, 0)) << t;
  }
}

TEST(CausalAttention, ResultsDoNotDependOnThreadCount) {
  Tensor qkv = random_uniform({3, 17, 48}, 8);
  Tensor g = random_uniform({3, 17, 16}, 9);
  auto run = [&](int threads) {
    ExecContext ctx;
    ctx.num_threads = threads;
    nn::CausalAttentionForward f = nn::causal_attention_forward(qkv, 4, ctx);
    Tensor gq = nn::causal_attention_backward(g, qkv, f.probs, 4, ctx);
    return std::vector<Tensor>{f.out, f.probs, gq};
  };
  auto a = run(1), b = run(2);
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(all_equal(a[i], b[i])) << i;
}

TEST(CausalAttention, BadInput) {
  const char* f = "causal_attention_forward";
  expect_error(
      [&] {
        nn::causal_attention_forward(random_uniform({2, 5, 24}, 1), 5);
      },
      ErrorCode::kInvalidArgument, f);  // C = 8 not divisible by 5
  expect_error(
      [&] {
        nn::causal_attention_forward(random_uniform({2, 5, 25}, 1), 1);
      },
      ErrorCode::kInvalidArgument, f);  // 25 not divisible by 3
  expect_error(
      [&] {
        nn::causal_attention_forward(random_uniform({10, 24}, 1), 2);
      },
      ErrorCode::kInvalidArgument, f);
  expect_error(
      [&] {
        nn::causal_attention_forward(random_uniform({2, 5, 24}, 1), 0);
      },
      ErrorCode::kInvalidArgument, f);
  expect_error(
      [&] {
        nn::causal_attention_forward(random_uniform({2, 5, 24}, 1).to(DType::kI32), 2);
      },
      ErrorCode::kUnsupported, f);
  Tensor qkv = random_uniform({2, 5, 24}, 1);
  nn::CausalAttentionForward r = nn::causal_attention_forward(qkv, 2);
  const char* fb = "causal_attention_backward";
  expect_error(
      [&] {
        nn::causal_attention_backward(random_uniform({2, 5, 7}, 1), qkv, r.probs, 2);
      },
      ErrorCode::kInvalidArgument, fb);
  expect_error([&] { nn::causal_attention_backward(r.out, qkv, r.probs, 4); },
               ErrorCode::kInvalidArgument, fb);  // probs (2, 2, 5, 5) but 4 heads
  expect_error([&] { nn::causal_attention_backward(r.out.to(DType::kF64), qkv, r.probs, 2); },
               ErrorCode::kInvalidArgument, fb);

  expect_error([&] { nn::CausalSelfAttention bad(10, 3, 0); }, ErrorCode::kInvalidArgument,
               "CausalSelfAttention");
  nn::CausalSelfAttention attn(8, 2, 0);
  expect_error(
      [&] {
        attn.backward(random_uniform({2, 5, 8}, 1));
      },
      ErrorCode::kInvalidArgument, "CausalSelfAttention::backward");
  expect_error(
      [&] {
        attn.forward(random_uniform({2, 5, 6}, 1));
      },
      ErrorCode::kInvalidArgument, "CausalSelfAttention::forward");
  expect_error(
      [&] {
        attn.forward(random_uniform({5, 8}, 1));
      },
      ErrorCode::kInvalidArgument, "CausalSelfAttention::forward");
}

}  // namespace
}  // namespace frugal
