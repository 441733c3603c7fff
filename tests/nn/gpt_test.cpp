// GPT: parameter registry, gradients of every parameter tensor against central finite
// differences in double (a tiny config), causality, determinism and bad input.
#include "frugal/nn/gpt.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>

#include "frugal/core/error.hpp"
#include "support/check.hpp"
#include "support/tolerance.hpp"

namespace frugal {
namespace {

using testing::all_close;
using testing::all_equal;
using testing::dot;
using testing::expect_error;
using testing::random_uniform;

nn::GPTConfig tiny(DType dt = DType::kF64) {
  nn::GPTConfig c;
  c.vocab_size = 11;
  c.block_size = 6;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 8;
  c.seed = 1234;
  c.dtype = dt;
  return c;
}

Tensor tokens_of(const std::vector<int64_t>& v, Shape s) { return Tensor::from_vector(v, s); }

const Tensor kTokens = tokens_of({3, 1, 4, 1, 5, 9, 2, 6, 5, 3}, {2, 5});

TEST(GPT, RegistryFollowsGpt2Names) {
  nn::GPT gpt(tiny());
  std::map<std::string, Shape> shapes;
  for (auto& np : gpt.named_parameters()) shapes[np.name] = np.param->value.shape();
  const int64_t c = 8, v = 11, t = 6, l = 2;
  EXPECT_EQ(shapes.at("wte.weight"), Shape({v, c}));
  EXPECT_EQ(shapes.at("wpe.weight"), Shape({t, c}));
  EXPECT_EQ(shapes.at("h.0.ln_1.weight"), Shape({c}));
  EXPECT_EQ(shapes.at("h.1.attn.c_attn.weight"), Shape({3 * c, c}));
  EXPECT_EQ(shapes.at("h.1.attn.c_proj.bias"), Shape({c}));
  EXPECT_EQ(shapes.at("h.0.mlp.c_fc.weight"), Shape({4 * c, c}));
  EXPECT_EQ(shapes.at("h.0.mlp.c_proj.weight"), Shape({c, 4 * c}));
  EXPECT_EQ(shapes.at("ln_f.bias"), Shape({c}));
  // GPT-2's count: embeddings + L * (2 LN + attn + mlp) + ln_f (the head is tied, no extra).
  const int64_t per_block =
      2 * 2 * c + (3 * c * c + 3 * c) + (c * c + c) + (4 * c * c + 4 * c) + (4 * c * c + c);
  EXPECT_EQ(gpt.num_parameters(), v * c + t * c + l * per_block + 2 * c);
  EXPECT_EQ(shapes.size(), 2u + l * 12u + 2u);
}

TEST(GPT, InitialisationIsSeededAndGpt2Like) {
  nn::GPT a(tiny()), b(tiny());
  nn::GPTConfig other = tiny();
  other.seed = 99;
  nn::GPT c(other);
  auto pa = a.named_parameters(), pb = b.named_parameters(), pc = c.named_parameters();
  for (std::size_t i = 0; i < pa.size(); ++i) {
    EXPECT_TRUE(all_equal(pa[i].param->value, pb[i].param->value)) << pa[i].name;
  }
  EXPECT_FALSE(all_close(pa[0].param->value, pc[0].param->value, 0, 0));
  for (auto& np : pa) {
    const auto v = np.param->value.to_vector<double>();
    if (np.name.find("ln_") != std::string::npos) {
      const double want = np.name.ends_with("weight") ? 1.0 : 0.0;
      for (double x : v) EXPECT_EQ(x, want) << np.name;
    } else if (np.name.ends_with(".bias")) {
      for (double x : v) EXPECT_EQ(x, 0.0) << np.name;
    } else {
      // N(0, 0.02) (residual projections smaller): every |w| < 6 sigma = 0.12.
      for (double x : v) EXPECT_LT(std::fabs(x), 0.12) << np.name;
    }
  }
}

TEST(GPT, BackwardMatchesFiniteDifferences) {
  nn::GPT gpt(tiny());
  // Biases and LayerNorm parameters start at 0 / 1; move them off so their gradients are generic.
  std::mt19937 gen(5);
  std::uniform_real_distribution<double> jitter(-0.1, 0.1);
  for (nn::Parameter* p : gpt.parameters()) {
    double* v = p->value.data<double>();
    for (int64_t i = 0; i < p->value.numel(); ++i) v[i] += jitter(gen);
  }
  Tensor r = random_uniform({2, 5, 11}, 6).to(DType::kF64);  // loss = sum(logits * R)
  auto loss = [&] { return dot(gpt.forward(kTokens), r); };
  gpt.zero_grad();
  gpt.forward(kTokens);
  Tensor none = gpt.backward(r);
  EXPECT_FALSE(none.defined());
  // Three random elements of every parameter tensor (the tied wte gets head + embedding parts).
  const double h = 1e-6;
  int checked = 0;
  for (auto& np : gpt.named_parameters()) {
    Tensor& p = np.param->value;
    const auto grad = np.param->grad.to_vector<double>();
    std::uniform_int_distribution<int64_t> pick(0, p.numel() - 1);
    for (int k = 0; k < 3; ++k) {
      int64_t i = pick(gen);
      if (np.name == "wte.weight" && k == 0) i = 3 * 8 + 2;  // a token that occurs (id 3)
      double* v = p.data<double>();
      const double keep = v[i];
      v[i] = keep + h;
      const double up = loss();
      v[i] = keep - h;
      const double down = loss();
      v[i] = keep;
      const double numeric = (up - down) / (2 * h);
      // Central differences in double, h = 1e-6: truncation + rounding well below 1e-7.
      EXPECT_NEAR(grad[i], numeric, 1e-7 + 1e-6 * std::fabs(numeric)) << np.name << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_EQ(checked, 3 * 28);
}

TEST(GPT, GradientsAccumulateAcrossBackwardCalls) {
  nn::GPT gpt(tiny());
  Tensor r = random_uniform({2, 5, 11}, 8).to(DType::kF64);
  gpt.forward(kTokens);
  gpt.backward(r);
  std::vector<Tensor> once;
  for (nn::Parameter* p : gpt.parameters()) once.push_back(p->grad.clone());
  gpt.forward(kTokens);
  gpt.backward(r);
  auto params = gpt.parameters();
  for (std::size_t i = 0; i < params.size(); ++i) {
    auto v = once[i].to_vector<double>();
    for (auto& x : v) x *= 2;
    // a + a computed the same way twice: exact except where accumulation rounds (wte: two adds).
    EXPECT_TRUE(all_close(params[i]->grad, Tensor::from_vector(v, once[i].shape()), 1e-14, 1e-16));
  }
}

TEST(GPT, LogitsAtTimeTIgnoreLaterTokens) {
  nn::GPT gpt(tiny(DType::kF32));
  const Tensor y = gpt.forward(kTokens).clone();
  for (int64_t t = 0; t + 1 < 5; ++t) {
    Tensor tok = kTokens.clone();
    int64_t* p = tok.data<int64_t>();
    for (int64_t b = 0; b < 2; ++b) {
      for (int64_t tt = t + 1; tt < 5; ++tt) p[b * 5 + tt] = (p[b * 5 + tt] + 1 + tt) % 11;
    }
    Tensor y2 = gpt.forward(tok);
    EXPECT_TRUE(all_equal(y.slice(1, 0, t + 1), y2.slice(1, 0, t + 1))) << t;
  }
}

TEST(GPT, ResultsDoNotDependOnThreadCount) {
  nn::GPTConfig cfg = tiny(DType::kF32);
  cfg.n_embd = 32;
  cfg.n_head = 4;
  cfg.vocab_size = 50;
  auto run = [&](int threads) {
    nn::GPT gpt(cfg);
    Tensor r = random_uniform({2, 5, 50}, 9);
    std::vector<Tensor> out;
    ExecContext ctx;
    ctx.num_threads = threads;
    gpt.set_context(ctx);  // every child op runs in an arena of `threads`
    out.push_back(gpt.forward(kTokens));
    gpt.backward(r);
    for (nn::Parameter* p : gpt.parameters()) out.push_back(p->grad.clone());
    return out;
  };
  auto a = run(1), b = run(2);
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(all_equal(a[i], b[i])) << i;
}

TEST(GPT, BadInput) {
  nn::GPT gpt(tiny(DType::kF32));
  const char* f = "GPT::forward";
  expect_error(
      [&] {
        gpt.forward(tokens_of({1, 2, 3, 4, 5, 6, 7}, {1, 7}));
      },
      ErrorCode::kInvalidArgument, f);  // T = 7 > block_size 6
  expect_error([&] { gpt.forward(tokens_of({1, 2}, {2})); }, ErrorCode::kInvalidArgument, f);
  expect_error([&] { gpt.forward(Tensor::zeros({1, 3})); }, ErrorCode::kInvalidArgument, f);
  expect_error(
      [&] {
        gpt.forward(tokens_of({1, 11}, {1, 2}));
      },
      ErrorCode::kInvalidArgument, "embedding_forward");  // id 11 >= vocab_size
  expect_error(
      [&] {
        gpt.backward(Tensor::zeros({2, 5, 11}));
      },
      ErrorCode::kInvalidArgument, "GPT::backward");  // before forward
  gpt.forward(kTokens);
  expect_error(
      [&] {
        gpt.backward(Tensor::zeros({2, 5, 10}));
      },
      ErrorCode::kInvalidArgument, "GPT::backward");
  expect_error(
      [&] {
        gpt.backward(Tensor::zeros({2, 5, 11}, DType::kF64));
      },
      ErrorCode::kInvalidArgument, "GPT::backward");
  nn::GPTConfig bad = tiny();
  bad.n_head = 3;
  expect_error([&] { nn::GPT g(bad); }, ErrorCode::kInvalidArgument, "GPT");
  bad = tiny();
  bad.dtype = DType::kF16;
  expect_error([&] { nn::GPT g(bad); }, ErrorCode::kInvalidArgument, "GPT");
}

}  // namespace
}  // namespace frugal
