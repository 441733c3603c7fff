// CUDA parity of the layers under autocast: the attention products (amp::gemm on cuBLAS, the
// causal softmax kernels that store bf16 / f16 probabilities) and the GPT head against the CPU
// (amp::gemm on oneDNN / Eigen) from the same parameters and inputs.
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "frugal/amp.hpp"
#include "frugal/core.hpp"
#include "frugal/nn/activation.hpp"
#include "frugal/nn/attention.hpp"
#include "frugal/nn/batch_norm.hpp"
#include "frugal/nn/conv.hpp"
#include "frugal/nn/gpt.hpp"
#include "frugal/nn/pool.hpp"
#include "support/check.hpp"
#include "support/gpu.hpp"
#include "support/tolerance.hpp"

namespace frugal::amp {
namespace {

using frugal::testing::all_close;
using frugal::testing::random_uniform;

TEST(AutocastCuda, AttentionMatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  for (DType low : {DType::kBF16, DType::kF16}) {
    const Tensor x = random_uniform({2, 40, 32}, 12);
    const Tensor g = random_uniform({2, 40, 32}, 13);
    nn::CausalSelfAttention ac(32, 4, 4), ag(32, 4, 4);
    ag.to(Device::cuda());
    Tensor yc, gc, yg, gg;
    {
      AmpContext ctx(default_policy(low));
      yc = ac.forward(x);
      gc = ac.backward(g);
      yg = ag.forward(x.to(Device::cuda()));
      gg = ag.backward(g.to(Device::cuda()));
    }
    EXPECT_EQ(yg.dtype(), DType::kF32);
    // Same rounded operands; the fp32 accumulation order and the softmax (fp32 on the GPU,
    // double on the host) differ by fp32 ulps, which can move a stored probability or score
    // gradient by one low-precision ulp (2^-8 bf16, 2^-11 f16 relative) in a few entries.
    const double tol = low == DType::kBF16 ? 2e-2 : 4e-3;
    EXPECT_TRUE(all_close(yg.to(Device::cpu()), yc, tol, tol / 10)) << dtype_name(low);
    EXPECT_TRUE(all_close(gg.to(Device::cpu()), gc, tol, tol / 10)) << dtype_name(low);
    EXPECT_TRUE(all_close(ag.c_attn().weight().grad.to(Device::cpu()), ac.c_attn().weight().grad,
                          tol, tol / 10))
        << dtype_name(low);
  }
}

TEST(AutocastCuda, GptHeadMatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  nn::GPTConfig cfg;
  cfg.vocab_size = 11;
  cfg.block_size = 8;
  cfg.n_layer = 1;
  cfg.n_head = 2;
  cfg.n_embd = 16;
  cfg.seed = 3;
  nn::GPT mc(cfg), mg(cfg);
  mg.to(Device::cuda());
  std::vector<int64_t> ids(10);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>((i * 4 + 1) % 11);
  const Tensor tokens = Tensor::from_vector(ids, {2, 5});
  const Tensor g = random_uniform({2, 5, 11}, 21);
  Tensor lc, lg;
  {
    AmpContext ctx;
    lc = mc.forward(tokens);
    mc.backward(g);
    lg = mg.forward(tokens.to(Device::cuda()));
    mg.backward(g.to(Device::cuda()));
  }
  // bf16 operands on both devices; accumulation order and the attention softmax differ (see
  // AttentionMatchesCpu): a bf16 ulp in a few intermediate entries.
  EXPECT_TRUE(all_close(lg.to(Device::cpu()), lc, 2e-2, 2e-3));
  EXPECT_TRUE(
      all_close(mg.wte().weight().grad.to(Device::cpu()), mc.wte().weight().grad, 2e-2, 2e-3));
}

TEST(AutocastCuda, GeluOutputFeedsTheFp32LayersAsOnTheCpu) {
  // A GELU's bf16 output reaching the f32 layers (amp::autocast_fp32): the same layers on both
  // devices from the same parameters give the same outputs and input gradients, up to the fp32
  // sums of the GEMM before the GELU.
  FRUGAL_REQUIRE_GPU();
  const Tensor x = random_uniform({2, 3, 6, 6}, 31, -2.f, 2.f);
  for (int which = 0; which < 3; ++which) {
    const auto make = [&] {
      auto seq = std::make_shared<nn::Sequential>();
      seq->add(std::make_shared<nn::Conv2d>(3, 4, 3, nn::Conv2dOptions{.padding = 1}, 5));
      seq->add(std::make_shared<nn::GELU>(nn::GeluApprox::kTanh));
      if (which == 0) seq->add(std::make_shared<nn::BatchNorm2d>(4));
      if (which == 1) seq->add(std::make_shared<nn::MaxPool2d>(2));
      if (which == 2) seq->add(std::make_shared<nn::Residual>(std::make_shared<nn::ReLU>()));
      return seq;
    };
    auto mc = make(), mg = make();
    mg->to(Device::cuda());
    Tensor yc, gc, yg, gg;
    {
      AmpContext ac;
      yc = mc->forward(x);
      gc = mc->backward(Tensor::full(yc.shape(), 1.0, yc.dtype()));
      yg = mg->forward(x.to(Device::cuda()));
      gg = mg->backward(Tensor::full(yg.shape(), 1.0, yg.dtype(), Device::cuda()));
    }
    EXPECT_TRUE(all_close(yg.to(Device::cpu()), yc, 2e-2, 2e-2)) << which;
    EXPECT_TRUE(all_close(gg.to(Device::cpu()), gc, 2e-2, 2e-2)) << which;
  }
}

}  // namespace
}  // namespace frugal::amp
