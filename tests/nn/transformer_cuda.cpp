// CUDA parity of the transformer ops (LayerNorm, Embedding, causal attention, GPT): inputs are
// built on the CPU, moved to the GPU, and every result is compared with the CPU path.
#include <gtest/gtest.h>

#include <random>

#include "frugal/core/error.hpp"
#include "frugal/nn/attention.hpp"
#include "frugal/nn/embedding.hpp"
#include "frugal/nn/gpt.hpp"
#include "frugal/nn/layer_norm.hpp"
#include "support/gpu.hpp"
#include "support/tolerance.hpp"

namespace frugal {
namespace {

using testing::all_close;
using testing::all_equal;
using testing::random_uniform;

const Device kGpu = Device::cuda(0);

Tensor random_ids(Shape s, int64_t v, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int64_t> dist(0, v - 1);
  std::vector<int64_t> ids(static_cast<std::size_t>(s.numel()));
  for (auto& x : ids) x = dist(gen);
  return Tensor::from_vector(ids, s);
}

TEST(TransformerCuda, LayerNormMatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  for (int64_t c : {7, 100, 1000}) {
    for (DType dt : {DType::kF32, DType::kF64}) {
      Tensor x = random_uniform({37, c}, 1, -2.f, 3.f).to(dt);
      Tensor w = random_uniform({c}, 2).to(dt), b = random_uniform({c}, 3).to(dt);
      Tensor g = random_uniform({37, c}, 4).to(dt);
      nn::LayerNormForward fc = nn::layer_norm_forward(x, w, b);
      Tensor gwc = Tensor::zeros({c}, dt), gbc = Tensor::zeros({c}, dt);
      Tensor gxc = nn::layer_norm_backward(g, x, w, fc.mean, fc.rstd, gwc.view(), gbc.view());

      Tensor xd = x.to(kGpu), wd = w.to(kGpu), bd = b.to(kGpu), gd = g.to(kGpu);
      nn::LayerNormForward fd = nn::layer_norm_forward(xd, wd, bd);
      Tensor gwd = Tensor::zeros({c}, dt, kGpu), gbd = Tensor::zeros({c}, dt, kGpu);
      Tensor gxd = nn::layer_norm_backward(gd, xd, wd, fd.mean, fd.rstd, gwd.view(), gbd.view());
      // f32: the GPU sums rows in float (warp order), the CPU in double: ~sqrt(C) ulps.
      const double tol = dt == DType::kF32 ? 3e-5 : 1e-12;
      EXPECT_TRUE(all_close(fd.out, fc.out, tol, tol)) << c;
      EXPECT_TRUE(all_close(fd.mean, fc.mean, tol, tol)) << c;
      EXPECT_TRUE(all_close(fd.rstd, fc.rstd, tol, tol)) << c;
      EXPECT_TRUE(all_close(gxd, gxc, tol, tol)) << c;
      EXPECT_TRUE(all_close(gwd, gwc, tol, tol)) << c;
      EXPECT_TRUE(all_close(gbd, gbc, tol, tol)) << c;
      // Deterministic: a second backward gives the same bits.
      Tensor gwd2 = Tensor::zeros({c}, dt, kGpu), gbd2 = Tensor::zeros({c}, dt, kGpu);
      Tensor gxd2 = nn::layer_norm_backward(gd, xd, wd, fd.mean, fd.rstd, gwd2.view(), gbd2.view());
      EXPECT_TRUE(all_equal(gxd, gxd2));
      EXPECT_TRUE(all_equal(gwd, gwd2));
      EXPECT_TRUE(all_equal(gbd, gbd2));
    }
  }
}

TEST(TransformerCuda, EmbeddingMatchesCpuExactly) {
  FRUGAL_REQUIRE_GPU();
  Tensor ids = random_ids({8, 300}, 97, 5);  // many repeats per id
  Tensor w = random_uniform({97, 40}, 6);
  Tensor g = random_uniform({8, 300, 40}, 7);
  Tensor yc = nn::embedding_forward(ids, w);
  Tensor yd = nn::embedding_forward(ids.to(kGpu), w.to(kGpu));
  EXPECT_TRUE(all_equal(yd, yc));  // a gather: exact
  Tensor gwc = Tensor::zeros({97, 40});
  nn::embedding_backward(g, ids, gwc.view());
  Tensor gwd = Tensor::zeros({97, 40}, DType::kF32, kGpu);
  nn::embedding_backward(g.to(kGpu), ids.to(kGpu), gwd.view());
  // Both backends sum each id's rows in double in index order, then round once: identical.
  EXPECT_TRUE(all_equal(gwd, gwc));
}

TEST(TransformerCuda, EmbeddingRejectsOutOfRangeIds) {
  FRUGAL_REQUIRE_GPU();
  Tensor w = random_uniform({5, 4}, 8).to(kGpu);
  Tensor ids = Tensor::from_vector(std::vector<int64_t>{0, 5, -1}, {3}).to(kGpu);
  try {
    nn::embedding_forward(ids, w);
    ADD_FAILURE() << "expected InvalidArgument";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(std::string(e.what()).rfind("[embedding_forward]", 0), 0u) << e.what();
  }
}

TEST(TransformerCuda, CausalAttentionMatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  for (DType dt : {DType::kF32, DType::kF64}) {
    for (int64_t t : {5, 70}) {
      Tensor qkv = random_uniform({3, t, 96}, 9, -2.f, 2.f).to(dt);
      Tensor g = random_uniform({3, t, 32}, 10).to(dt);
      nn::CausalAttentionForward fc = nn::causal_attention_forward(qkv, 4);
      Tensor gc = nn::causal_attention_backward(g, qkv, fc.probs, 4);
      Tensor qd = qkv.to(kGpu);
      nn::CausalAttentionForward fd = nn::causal_attention_forward(qd, 4);
      Tensor gd = nn::causal_attention_backward(g.to(kGpu), qd, fd.probs, 4);
      // f32: cuBLAS vs Eigen summation order and expf vs std::exp: a few ulps of O(1) values.
      const double tol = dt == DType::kF32 ? 2e-5 : 1e-12;
      EXPECT_TRUE(all_close(fd.out, fc.out, tol, tol)) << t;
      EXPECT_TRUE(all_close(fd.probs, fc.probs, tol, tol)) << t;
      EXPECT_TRUE(all_close(gd, gc, tol, tol)) << t;
    }
  }
}

TEST(TransformerCuda, GptMatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  nn::GPTConfig cfg;
  cfg.vocab_size = 61;
  cfg.block_size = 16;
  cfg.n_layer = 2;
  cfg.n_head = 4;
  cfg.n_embd = 32;
  cfg.seed = 3;
  nn::GPT cpu(cfg), gpu(cfg);
  gpu.to(kGpu);
  Tensor tokens = random_ids({2, 12}, 61, 11);
  Tensor r = random_uniform({2, 12, 61}, 12);
  Tensor lc = cpu.forward(tokens);
  cpu.backward(r);
  Tensor ld = gpu.forward(tokens.to(kGpu));
  gpu.backward(r.to(kGpu));
  // f32 through two blocks: per-op differences of a few ulps compound; logits are O(0.1).
  EXPECT_TRUE(all_close(ld, lc, 1e-4, 1e-5));
  auto pc = cpu.named_parameters(), pd = gpu.named_parameters();
  ASSERT_EQ(pc.size(), pd.size());
  for (std::size_t i = 0; i < pc.size(); ++i) {
    EXPECT_TRUE(all_close(pd[i].param->grad, pc[i].param->grad, 1e-3, 1e-5)) << pc[i].name;
  }
  // Causal on the GPU too: changing the last token leaves earlier logits bit-identical.
  Tensor tok2 = tokens.clone();
  tok2.data<int64_t>()[11] = (tok2.data<int64_t>()[11] + 1) % 61;
  Tensor ld2 = gpu.forward(tok2.to(kGpu));
  EXPECT_TRUE(all_equal(ld2.slice(1, 0, 11), ld.slice(1, 0, 11)));
}

}  // namespace
}  // namespace frugal
