// CUDA parity of the optimizers and gradient clipping: the same updates on CPU and CUDA from the
// same parameters and gradients, compared after several steps; CUDA run-to-run determinism; and
// a checkpoint of a CUDA optimizer.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "frugal/nn/checkpoint.hpp"
#include "frugal/nn/module.hpp"
#include "frugal/nn/optim.hpp"
#include "support/gpu.hpp"
#include "support/tolerance.hpp"

namespace frugal::nn {
namespace {

using frugal::testing::all_close;
using frugal::testing::random_uniform;

class Holder : public Module {
 public:
  Parameter& add(const std::string& name, Tensor value, bool trainable = true) {
    return register_parameter(name, std::move(value), trainable);
  }
  Tensor forward(const Tensor& x) override { return x; }
  Tensor backward(const Tensor& g) override { return g; }
  std::string type_name() const override { return "Holder"; }
};

Tensor grad_at(Shape shape, int t, DType dtype) {
  return random_uniform(shape, 500u + 13u * static_cast<uint32_t>(t)).to(dtype);
}

/// Two holders with the same parameters, one on the CPU and one on CUDA.
struct Pair {
  Holder cpu, gpu;
  Pair(DType dtype) {
    // Sizes: one below a block, one spanning many grid-stride iterations.
    for (auto [name, shape] : {std::pair<const char*, Shape>{"w", Shape{300, 257}},
                               std::pair<const char*, Shape>{"b", Shape{7}}}) {
      Tensor v = random_uniform(shape, 3).to(dtype);
      cpu.add(name, v.clone());
      gpu.add(name, v.clone());
    }
    gpu.to(Device::cuda());
  }
  void set_grads(int t) {
    auto pc = cpu.parameters();
    auto pg = gpu.parameters();
    for (std::size_t i = 0; i < pc.size(); ++i) {
      Tensor g = grad_at(pc[i]->value.shape(), t, pc[i]->value.dtype());
      pc[i]->grad.copy_from(g);
      pg[i]->grad.copy_from(g.to(Device::cuda()));
    }
  }
  void expect_close(double rtol, double atol) {
    auto pc = cpu.parameters();
    auto pg = gpu.parameters();
    for (std::size_t i = 0; i < pc.size(); ++i) {
      EXPECT_TRUE(all_close(pg[i]->value.to(Device::cpu()), pc[i]->value, rtol, atol));
    }
  }
};

TEST(OptimCuda, SgdMatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  const SgdOptions cases[] = {
      {0.1, 0, 0, false, 0}, {0.05, 0.9, 0.1, false, 0.01}, {0.05, 0.9, 0, true, 0.05}};
  for (DType dt : {DType::kF32, DType::kF64}) {
    for (const SgdOptions& o : cases) {
      Pair p(dt);
      SGD oc(p.cpu.named_parameters(), o), og(p.gpu.named_parameters(), o);
      for (int t = 0; t < 5; ++t) {
        p.set_grads(t);
        oc.step();
        og.step();
      }
      // Same formula and order; nvcc may fuse a * b + c into an fma: a few ulps per step.
      if (dt == DType::kF32) {
        p.expect_close(1e-5, 1e-6);
      } else {
        p.expect_close(1e-13, 1e-14);
      }
    }
  }
}

TEST(OptimCuda, AdamWMatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  const AdamWOptions cases[] = {{}, {3e-3, 0.3, 0.9, 1e-8, 0.1}};
  for (DType dt : {DType::kF32, DType::kF64}) {
    for (const AdamWOptions& o : cases) {
      Pair p(dt);
      AdamW oc(p.cpu.named_parameters(), o), og(p.gpu.named_parameters(), o);
      for (int t = 0; t < 5; ++t) {
        p.set_grads(t);
        oc.step();
        og.step();
      }
      // fma contraction and CUDA's sqrt / division (both correctly rounded) against the host's:
      // ulp-level differences in an update of size lr.
      if (dt == DType::kF32) {
        p.expect_close(1e-5, 1e-6);
      } else {
        p.expect_close(1e-13, 1e-14);
      }
      const OptimizerState sc = oc.state(), sg = og.state();
      for (const auto& [k, v] : sc.tensors) {
        EXPECT_EQ(sg.tensors.at(k).device(), Device::cuda());
        // Moments: same tolerance reasoning as the parameters.
        EXPECT_TRUE(all_close(sg.tensors.at(k).to(Device::cpu()), v, 1e-5, 1e-9)) << k;
      }
    }
  }
}

TEST(OptimCuda, AdamWBf16MomentsMatchCpu) {
  FRUGAL_REQUIRE_GPU();
  for (bool stochastic : {false, true}) {
    AdamWOptions o;
    o.lr = 3e-3;
    o.weight_decay = 0.1;
    o.moments_dtype = DType::kBF16;
    o.stochastic_rounding = stochastic;
    o.seed = 11;
    Pair p(DType::kF32);
    AdamW oc(p.cpu.named_parameters(), o), og(p.gpu.named_parameters(), o);
    for (int t = 0; t < 5; ++t) {
      p.set_grads(t);
      oc.step();
      og.step();
    }
    // Same per-element code (nn/optim_bf16.hpp) and the same Philox bits; nvcc's fma contraction
    // moves the fp32 moments by an ulp, which can flip a bf16 rounding: an update of size lr
    // then differs by ~2^-8 of itself, far inside these bounds.
    p.expect_close(1e-4, 1e-5);
    const OptimizerState sc = oc.state(), sg = og.state();
    for (const auto& [k, v] : sc.tensors) {
      const Tensor gv = sg.tensors.at(k);
      EXPECT_EQ(gv.device(), Device::cuda());
      EXPECT_EQ(gv.dtype(), DType::kBF16);
      // Moments: equal or one bf16 ulp apart (relative 2^-7) where a rounding flipped.
      EXPECT_TRUE(all_close(gv.to(Device::cpu()).to(DType::kF32), v.to(DType::kF32), 0x1p-7, 1e-30))
          << k << " stochastic " << stochastic;
    }
  }
}

TEST(OptimCuda, DeterministicRunToRun) {
  FRUGAL_REQUIRE_GPU();
  std::vector<float> out[2];
  for (int r = 0; r < 2; ++r) {
    Pair p(DType::kF32);
    AdamW og(p.gpu.named_parameters(), {});
    for (int t = 0; t < 3; ++t) {
      p.set_grads(t);
      clip_grad_norm(p.gpu.parameters(), 0.5);
      og.step();
    }
    out[r] = p.gpu.parameters()[0]->value.to_vector<float>();
  }
  EXPECT_EQ(out[0], out[1]);
}

TEST(OptimCuda, ClipGradNormMatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  for (DType dt : {DType::kF32, DType::kF64}) {
    Pair p(dt);
    p.set_grads(0);
    const double nc = clip_grad_norm(p.cpu.parameters(), 1.0);
    const double ng = clip_grad_norm(p.gpu.parameters(), 1.0);
    // Both sum squares of the same values in double, in different orders.
    EXPECT_NEAR(ng, nc, 1e-12 * nc);
    auto pc = p.cpu.parameters();
    auto pg = p.gpu.parameters();
    for (std::size_t i = 0; i < pc.size(); ++i) {
      // One multiplication by the same (rounded) coefficient: identical or 1 ulp apart when the
      // two norms round the coefficient differently.
      EXPECT_TRUE(all_close(pg[i]->grad.to(Device::cpu()), pc[i]->grad, 1e-6, 0));
    }
  }
  // Non-finite on CUDA as on the CPU.
  Holder h;
  Parameter& a = h.add("a", Tensor::zeros({3}));
  a.grad.copy_from(
      Tensor::from_vector(std::vector<float>{1, std::numeric_limits<float>::infinity(), 2}, {3}));
  h.to(Device::cuda());
  EXPECT_EQ(clip_grad_norm(h.parameters(), 1.0), std::numeric_limits<double>::infinity());
  const std::vector<float> g = h.parameters()[0]->grad.to_vector<float>();
  EXPECT_EQ(g[0], 0.f);
  EXPECT_TRUE(std::isnan(g[1]));
}

TEST(OptimCuda, CheckpointOfACudaOptimizerResumesOnCuda) {
  FRUGAL_REQUIRE_GPU();
  const std::string path =
      (std::filesystem::temp_directory_path() / "frugal_optim_cuda_ckpt.safetensors").string();
  Pair a(DType::kF32), b(DType::kF32);
  AdamW oa(a.gpu.named_parameters(), {}), ob(b.gpu.named_parameters(), {});
  a.set_grads(0);
  oa.step();
  save_checkpoint(path, a.gpu, &oa, {});
  load_checkpoint(path, b.gpu, &ob);
  for (int t = 1; t < 3; ++t) {
    a.set_grads(t);
    b.set_grads(t);
    oa.step();
    ob.step();
  }
  // Same kernels on the same device from the same state: identical.
  EXPECT_EQ(a.gpu.parameters()[0]->value.to_vector<float>(),
            b.gpu.parameters()[0]->value.to_vector<float>());
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace frugal::nn
