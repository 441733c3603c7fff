// nn layers under an AmpContext: Linear, Conv2d, activations and attention against references
// built from the operands rounded to the low dtype (exact products, fp32 or double accumulation),
// weight-copy refresh, the Inf-in-master-weights error, and the activation memory of a GPT step.
#include "frugal/amp/autocast.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "frugal/amp/policy.hpp"
#include "frugal/core.hpp"
#include "frugal/nn/activation.hpp"
#include "frugal/nn/attention.hpp"
#include "frugal/nn/batch_norm.hpp"
#include "frugal/nn/conv.hpp"
#include "frugal/nn/dropout.hpp"
#include "frugal/nn/gpt.hpp"
#include "frugal/nn/layer_norm.hpp"
#include "frugal/nn/linear.hpp"
#include "frugal/nn/loss.hpp"
#include "frugal/nn/models.hpp"
#include "frugal/nn/optim.hpp"
#include "frugal/nn/pool.hpp"
#include "support/check.hpp"
#include "support/tolerance.hpp"

namespace frugal::amp {
namespace {

using frugal::testing::all_close;
using frugal::testing::expect_error;
using frugal::testing::random_uniform;
using frugal::testing::same_bits;

/// x rounded to `low` (nearest even) and widened to f64: the operand a low-precision GEMM sees.
Tensor rounded(const Tensor& x, DType low) { return x.to(low).to(DType::kF64); }

/// op(a) op(b) in double (the core f64 GEMM: independent of the amp path).
Tensor ref_gemm(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  ::frugal::GemmOptions o;
  o.trans_a = ta;
  o.trans_b = tb;
  return ::frugal::gemm(a, b, o);
}

void check_linear(DType low) {
  nn::Linear lin(24, 16, true, 3);
  const Tensor x = random_uniform({2, 5, 24}, 1);
  const Tensor g = random_uniform({2, 5, 16}, 2);
  Tensor y, gx;
  {
    AmpContext ac(default_policy(low));
    y = lin.forward(x);
    gx = lin.backward(g);
  }
  EXPECT_EQ(y.dtype(), DType::kF32);
  EXPECT_EQ(gx.dtype(), DType::kF32);
  const Tensor xr = rounded(x.reshape({10, 24}), low);
  const Tensor wr = rounded(lin.weight().value, low);
  const Tensor gr = rounded(g.reshape({10, 16}), low);
  Tensor y_ref = ref_gemm(xr, wr, false, true);
  std::vector<double> yv = y_ref.to_vector<double>();
  const std::vector<float> b = lin.bias()->value.to_vector<float>();
  for (std::size_t i = 0; i < yv.size(); ++i) yv[i] += b[i % 16];
  // fp32 accumulation of 24 exact products of rounded operands vs double: a few fp32 ulps.
  EXPECT_TRUE(all_close(y.reshape({10, 16}), Tensor::from_vector(yv, {10, 16}), 1e-5, 1e-6));
  EXPECT_TRUE(all_close(gx.reshape({10, 24}), ref_gemm(gr, wr, false, false), 1e-5, 1e-6));
  EXPECT_TRUE(all_close(lin.weight().grad, ref_gemm(gr, xr, true, false), 1e-5, 1e-6));
  // The bias gradient is a column sum of the fp32 output gradient (not a GEMM).
  std::vector<double> gb(16, 0.0);
  const std::vector<float> gv = g.to_vector<float>();
  for (std::size_t i = 0; i < gv.size(); ++i) gb[i % 16] += gv[i];
  EXPECT_TRUE(all_close(lin.bias()->grad, Tensor::from_vector(gb, {16}), 1e-6, 1e-6));
}

TEST(Autocast, LinearBf16MatchesRoundedOperandReference) { check_linear(DType::kBF16); }
TEST(Autocast, LinearF16MatchesRoundedOperandReference) { check_linear(DType::kF16); }

TEST(Autocast, NoContextOrGemmOffIsBitIdenticalToFp32) {
  nn::Linear lin(32, 8, true, 5);
  const Tensor x = random_uniform({7, 32}, 3);
  const Tensor y0 = nn::linear(x, lin.weight().value, lin.bias()->value);
  EXPECT_TRUE(same_bits(lin.forward(x), y0));
  AutocastPolicy p = default_policy();
  p.low_precision[OpClass::kGemm] = false;  // an edited policy: GEMMs stay fp32
  AmpContext ac(p);
  EXPECT_EQ(autocast_dtype(OpClass::kGemm), DType::kF32);
  EXPECT_TRUE(same_bits(lin.forward(x), y0));
}

TEST(Autocast, F64LayersIgnoreTheContext) {
  nn::Linear lin(6, 4, true, 1, DType::kF64);
  const Tensor x = frugal::testing::random_f64({3, 6}, 4);
  const Tensor y0 = lin.forward(x);
  AmpContext ac;
  EXPECT_TRUE(same_bits(lin.forward(x), y0));
}

TEST(Autocast, WeightCopyRefreshesAfterOptimizerStep) {
  nn::Linear lin(16, 4, false, 2);
  nn::SGD opt(lin.named_parameters(), {.lr = 0.5});
  const Tensor x = random_uniform({3, 16}, 5);
  AmpContext ac;
  lin.forward(x);
  lin.backward(Tensor::full({3, 4}, 1.0));
  opt.step();  // bumps master_weights_version: the next forward recasts the weight
  const Tensor y = lin.forward(x);
  const Tensor y_ref =
      ref_gemm(rounded(x, DType::kBF16), rounded(lin.weight().value, DType::kBF16), false, true);
  // fp32 accumulation of 16 exact products vs double.
  EXPECT_TRUE(all_close(y, y_ref, 1e-5, 1e-6));
  // A change outside an optimizer needs invalidate_weight_copies().
  lin.weight().value.fill(0.25);
  invalidate_weight_copies();
  const std::vector<float> y2 = lin.forward(x).to_vector<float>();
  const std::vector<double> xr = rounded(x, DType::kBF16).to_vector<double>();
  for (int r = 0; r < 3; ++r) {
    double s = 0;
    for (int k = 0; k < 16; ++k) s += 0.25 * xr[static_cast<std::size_t>(r * 16 + k)];
    EXPECT_NEAR(y2[static_cast<std::size_t>(r * 4)], s, 1e-5);  // fp32 sum of 16 terms
  }
}

TEST(Autocast, InfInMasterWeightsIsAnError) {
  nn::Linear lin(4, 3, true, 0);
  std::vector<float> w = lin.weight().value.to_vector<float>();
  w[5] = std::numeric_limits<float>::infinity();
  lin.weight().value.copy_from(Tensor::from_vector(w, {3, 4}));
  invalidate_weight_copies();
  AmpContext ac;
  expect_error(
      [&] {
        lin.forward(random_uniform({2, 4}, 1));
      },
      ErrorCode::kInvalidArgument, "amp::autocast");
}

TEST(Autocast, ActivationsKeepTheirInputInTheLowDtype) {
  const Tensor x = random_uniform({4, 33}, 7, -3.f, 3.f);
  const Tensor g = random_uniform({4, 33}, 8);
  nn::GELU gelu(nn::GeluApprox::kTanh);
  nn::ReLU relu;
  Tensor yg, gg, yr, gr;
  {
    AmpContext ac;
    yg = gelu.forward(x);
    gg = gelu.backward(g);
    yr = relu.forward(x);
    gr = relu.backward(g);
  }
  // Forward: exact fp32; backward: the derivative at the bf16-rounded input (bitwise).
  // GELU hands its output to the next low-precision GEMM in bf16 (the fp32 value rounded).
  EXPECT_TRUE(same_bits(yg, nn::gelu(x, nn::GeluApprox::kTanh).to(DType::kBF16)));
  const Tensor xr = x.to(DType::kBF16).to(DType::kF32);
  EXPECT_TRUE(same_bits(gg, nn::gelu_backward(g, xr, nn::GeluApprox::kTanh)));
  EXPECT_TRUE(same_bits(yr, nn::relu(x)));
  EXPECT_TRUE(same_bits(gr, nn::relu_backward(g, x)));  // rounding keeps the sign
}

TEST(Autocast, Conv2dRunsOnRoundedOperands) {
  nn::Conv2d conv(3, 4, 3, {.padding = 1}, 9);
  const Tensor x = random_uniform({2, 3, 6, 6}, 10);
  const Tensor g = random_uniform({2, 4, 6, 6}, 11);
  Tensor y, gx;
  {
    AmpContext ac;
    y = conv.forward(x);
    gx = conv.backward(g);
  }
  const auto r32 = [](const Tensor& t) { return t.to(DType::kBF16).to(DType::kF32); };
  const nn::Conv2dParams p{1, 1, 1, 1};
  const Tensor wr = r32(conv.weight().value);
  // A bf16 kernel (oneDNN) on the same rounded values: the products are exact in fp32, only the
  // order of the fp32 sums differs; at most 72 terms of magnitude <= 1: 72 * 2^-24 * 72 < 4e-4.
  constexpr double kSumOrder = 4e-4;
  EXPECT_TRUE(all_close(y, nn::conv2d(r32(x), wr, conv.bias()->value, p), 0.0, kSumOrder));
  EXPECT_TRUE(all_close(gx, nn::conv2d_backward_input(r32(g), wr, x.shape(), p), 0.0, kSumOrder));
  Tensor gw = Tensor::zeros(conv.weight().value.shape());
  nn::conv2d_backward_weight(r32(g), r32(x), gw, p);
  EXPECT_TRUE(all_close(conv.weight().grad, gw, 0.0, kSumOrder));
}

TEST(Autocast, AttentionMatchesFp32WithinBf16Precision) {
  const Tensor x = random_uniform({2, 8, 16}, 12);
  const Tensor g = random_uniform({2, 8, 16}, 13);
  nn::CausalSelfAttention a32(16, 2, 4), a16(16, 2, 4);
  const Tensor y32 = a32.forward(x);
  const Tensor gx32 = a32.backward(g);
  Tensor y16, gx16;
  {
    AmpContext ac;
    y16 = a16.forward(x);
    gx16 = a16.backward(g);
  }
  // bf16 operands (8-bit mantissa, rel. error 2^-9 each) through two products and a softmax.
  EXPECT_TRUE(all_close(y16, y32, 3e-2, 3e-3));
  EXPECT_TRUE(all_close(gx16, gx32, 3e-2, 3e-3));
  EXPECT_TRUE(all_close(a16.c_attn().weight().grad, a32.c_attn().weight().grad, 3e-2, 3e-3));
}

/// Forward + backward of a GPT without blocks (logits = ln_f(wte[tok] + wpe[pos]) W_te^T) with
/// gradient `g`; returns the logits.
Tensor gpt_head_step(nn::GPT& model, const Tensor& tokens, const Tensor& g) {
  model.zero_grad();
  const Tensor logits = model.forward(tokens);
  model.backward(g);
  return logits;
}

TEST(Autocast, GptHeadFollowsTheGemmPolicy) {
  nn::GPTConfig cfg;
  cfg.vocab_size = 11;
  cfg.block_size = 8;
  cfg.n_layer = 0;  // the head alone behind ln_f
  cfg.n_head = 2;
  cfg.n_embd = 16;
  cfg.seed = 3;
  const int64_t b = 2, t = 5, c = 16, v = 11, n = b * t;
  std::vector<int64_t> ids(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>((i * 4 + 1) % v);
  const Tensor tokens = Tensor::from_vector(ids, {b, t});
  const Tensor g = random_uniform({b, t, v}, 21);
  nn::GPT model(cfg);
  const Tensor w = model.wte().weight().value.clone();  // (V, C)
  // ln_f's output h (N, C), by the same fp32 layers the model runs (autocast leaves them fp32).
  std::vector<int64_t> pos(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) pos[static_cast<std::size_t>(i)] = i % t;
  nn::LayerNorm ln(c);
  const Tensor x0 =
      add(model.wte().forward(tokens), model.wpe().forward(Tensor::from_vector(pos, {b, t})));
  const Tensor h = ln.forward(x0).reshape({n, c});

  // No context: the fp32 GEMM, bit for bit.
  ::frugal::GemmOptions nt;
  nt.trans_b = true;
  const Tensor plain = gpt_head_step(model, tokens, g);
  EXPECT_TRUE(same_bits(plain.reshape({n, v}), ::frugal::gemm(h, w, nt)));

  for (DType low : {DType::kBF16, DType::kF16}) {
    Tensor logits;
    {
      AmpContext ac(default_policy(low));
      logits = gpt_head_step(model, tokens, g);
    }
    EXPECT_EQ(logits.dtype(), DType::kF32);
    const Tensor hr = rounded(h, low), wr = rounded(w, low);
    const Tensor gr = rounded(g.reshape({n, v}), low);
    // fp32 accumulation of 16 exact products of rounded operands vs double: a few fp32 ulps.
    EXPECT_TRUE(all_close(logits.reshape({n, v}), ref_gemm(hr, wr, false, true), 1e-5, 1e-6))
        << dtype_name(low);
    // Backward: dh = g W (rounded operands) through ln_f into both embeddings; W_te's gradient
    // is the head's g^T h plus the embedding's scatter of dx0.
    const Tensor dh = ref_gemm(gr, wr, false, false).to(DType::kF32);  // (N, C)
    ln.forward(x0);
    const std::vector<float> dx0 = ln.backward(dh.reshape({b, t, c})).to_vector<float>();
    std::vector<double> gw = ref_gemm(gr, hr, true, false).to_vector<double>();  // (V, C)
    std::vector<double> gp(static_cast<std::size_t>(cfg.block_size * c), 0.0);
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t j = 0; j < c; ++j) {
        const double d = dx0[static_cast<std::size_t>(r * c + j)];
        gw[static_cast<std::size_t>(ids[static_cast<std::size_t>(r)] * c + j)] += d;
        gp[static_cast<std::size_t>((r % t) * c + j)] += d;
      }
    }
    // The fp32 dh (ulps off the double product) passes through LayerNorm's backward.
    EXPECT_TRUE(all_close(model.wte().weight().grad, Tensor::from_vector(gw, {v, c}), 1e-4, 1e-6))
        << dtype_name(low);
    EXPECT_TRUE(all_close(model.wpe().weight().grad, Tensor::from_vector(gp, {cfg.block_size, c}),
                          1e-4, 1e-6))
        << dtype_name(low);
  }
  // Back without a context: fp32 again, bit for bit.
  EXPECT_TRUE(same_bits(gpt_head_step(model, tokens, g), plain));
}

/// Peak frugal host bytes of one forward + backward of the small character GPT above what was
/// allocated before it (parameters, gradients, weight copies): the step's activation memory.
int64_t gpt_step_activation_bytes(bool autocast) {
  nn::GPT model(nn::char_gpt_config(65, nn::CharGptSize::kSmall, 0));
  const int64_t b = 16, t = 64, v = 65;
  std::vector<int64_t> ids(static_cast<std::size_t>(b * t));
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>((i * 7 + 3) % v);
  const Tensor tokens = Tensor::from_vector(ids, {b, t});
  const Tensor targets = Tensor::from_vector(ids, {b * t});
  nn::SoftmaxCrossEntropy loss;
  AutocastPolicy p = default_policy();
  if (!autocast) p.low_precision.clear(), p.low_saved_activations = false;
  AmpContext ac(p);
  // A one-token forward first creates the low-precision weight copies (kept across steps like
  // the parameters) and leaves only one-token activations behind.
  model.forward(Tensor::from_vector(std::vector<int64_t>{1}, {1, 1}));
  model.zero_grad();
  const int64_t before = host_allocated_bytes();
  reset_host_peak();
  const Tensor logits = model.forward(tokens);
  loss.forward(logits.reshape({b * t, v}), targets);
  model.backward(loss.backward().reshape({b, t, v}));
  const int64_t act = host_peak_bytes() - before;
  return act;
}

TEST(Autocast, GptStepActivationMemoryAtMostSixTenthsOfFp32) {
  const int64_t fp32 = gpt_step_activation_bytes(false);
  const int64_t bf16 = gpt_step_activation_bytes(true);
  RecordProperty("fp32_bytes", std::to_string(fp32));
  RecordProperty("bf16_bytes", std::to_string(bf16));
  EXPECT_LE(static_cast<double>(bf16), 0.6 * static_cast<double>(fp32))
      << "bf16 " << bf16 << " B vs fp32 " << fp32 << " B";
}

TEST(Autocast, ContextRejectsNonLowDtypes) {
  AutocastPolicy p = default_policy();
  p.low = DType::kF8E4M3;
  expect_error([&] { AmpContext ac(p); }, ErrorCode::kInvalidArgument, "amp::AmpContext");
}

TEST(Autocast, GeluOutputFeedsEveryFollowingLayer) {
  // Under autocast GELU hands its output over in the low dtype (for the next GEMM). Every layer
  // that may follow it takes that input as its exact f32 value: normalisations, dropout,
  // activations, pooling, GEMM layers, residual blocks, the losses. Reference: the same layers
  // (fresh, same seeds) with the GELU's output converted to f32 by hand; outputs and the
  // gradient that reaches the model's input must have the same bits.
  using Make = std::function<std::shared_ptr<nn::Module>()>;
  const auto run = [](const Tensor& x, const Make& first, const Make& next) {
    const std::string name = next()->type_name();
    Tensor y, gx, y_ref, gx_ref;
    try {
      AmpContext ac;
      nn::Sequential seq({first(), std::make_shared<nn::GELU>(nn::GeluApprox::kTanh), next()});
      y = seq.forward(x);
      gx = seq.backward(Tensor::full(y.shape(), 1.0, y.dtype()));
      const auto f = first(), n = next();
      nn::GELU gelu(nn::GeluApprox::kTanh);
      const Tensor z = gelu.forward(f->forward(x));
      ASSERT_EQ(z.dtype(), DType::kBF16);
      y_ref = n->forward(z.to(DType::kF32));
      gx_ref = f->backward(gelu.backward(n->backward(Tensor::full(y.shape(), 1.0, y.dtype()))));
    } catch (const Error& e) {
      ADD_FAILURE() << name << ": " << e.what();
      return;
    }
    // Layers that follow their input's dtype (dropout, activations, flatten) keep the low dtype:
    // compare values. A Linear hands its input gradient back in its input's dtype (bf16 here,
    // f32 in the reference), so that gradient is rounded once more than the reference's.
    EXPECT_TRUE(same_bits(y.to(DType::kF32), y_ref.to(DType::kF32))) << name;
    if (name == "Linear") {
      EXPECT_TRUE(all_close(gx, gx_ref, 1e-2, 1e-3)) << name;
    } else {
      EXPECT_TRUE(same_bits(gx.to(DType::kF32), gx_ref.to(DType::kF32))) << name;
    }
  };
  const Tensor x2 = random_uniform({4, 8}, 21, -2.f, 2.f);
  const Make lin = [] { return std::make_shared<nn::Linear>(8, 8, true, 3); };
  run(x2, lin, [] { return std::make_shared<nn::LayerNorm>(8); });
  run(x2, lin, [] { return std::make_shared<nn::Dropout>(0.5, 1); });
  run(x2, lin, [] { return std::make_shared<nn::ReLU>(); });
  run(x2, lin, [] { return std::make_shared<nn::GELU>(nn::GeluApprox::kTanh); });
  run(x2, lin, [] { return std::make_shared<nn::Linear>(8, 3, true, 4); });
  run(x2, lin, [] { return std::make_shared<nn::Residual>(std::make_shared<nn::LayerNorm>(8)); });
  const Tensor x4 = random_uniform({2, 3, 6, 6}, 22, -2.f, 2.f);
  const Make conv = [] {
    return std::make_shared<nn::Conv2d>(3, 4, 3, nn::Conv2dOptions{.padding = 1}, 5);
  };
  run(x4, conv, [] { return std::make_shared<nn::BatchNorm2d>(4); });
  run(x4, conv, [] { return std::make_shared<nn::MaxPool2d>(2); });
  run(x4, conv, [] { return std::make_shared<nn::AvgPool2d>(2); });
  run(x4, conv, [] { return std::make_shared<nn::GlobalAvgPool2d>(); });
  run(x4, conv,
      [] { return std::make_shared<nn::Conv2d>(4, 2, 3, nn::Conv2dOptions{.padding = 1}, 6); });
  run(x4, conv, [] { return std::make_shared<nn::Flatten>(); });
  // The losses take low-precision predictions: MSE against an f32 target as the f32 values,
  // cross-entropy on bf16 logits (computed in float) as on their f32 values.
  nn::Linear l(8, 5, true, 7);
  nn::GELU gelu(nn::GeluApprox::kTanh);
  AmpContext ac;
  const Tensor logits = gelu.forward(l.forward(x2));
  ASSERT_EQ(logits.dtype(), DType::kBF16);
  const Tensor target = random_uniform({4, 5}, 23);
  nn::MSELoss mse, mse_ref;
  EXPECT_EQ(mse.forward(logits, target), mse_ref.forward(logits.to(DType::kF32), target));
  EXPECT_TRUE(same_bits(mse.backward(), mse_ref.backward()));
  nn::SoftmaxCrossEntropy ce, ce_ref;
  const Tensor t = Tensor::from_vector<int64_t>({0, 1, 2, 3}, {4});
  EXPECT_EQ(ce.forward(logits, t), ce_ref.forward(logits.to(DType::kF32), t));
}

}  // namespace
}  // namespace frugal::amp
