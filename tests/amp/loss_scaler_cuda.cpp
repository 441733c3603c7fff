// CUDA parity of the multi-tensor unscale-and-check: many gradients of sizes 0 to several 64K
// chunks in one launch give the CPU's bits and the CPU's flags.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "frugal/amp.hpp"
#include "frugal/core.hpp"
#include "support/check.hpp"
#include "support/gpu.hpp"
#include "support/tolerance.hpp"

namespace frugal::amp {
namespace {

uint32_t bits(float v) {
  uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  return b;
}

TEST(LossScalerCuda, MultiTensorUnscaleMatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  LossScalerOptions opt;
  opt.init_scale = 3.f;  // inexact inverse: every product is rounded
  DynamicLossScaler s(opt);
  std::vector<Tensor> cpu, gpu;
  for (int t = 0; t < 40; ++t) {
    const int64_t n = t % 9 == 0 ? 0 : (t * 7919) % 150000 + (t % 4 == 0 ? 200000 : 1);
    Tensor x = testing::random_uniform(Shape{n}, static_cast<uint64_t>(7 + t), -1e3f, 1e3f);
    if (n > 0 && t % 6 == 1) {
      x.view().data_as<float>()[(t * 104729) % n] = t % 2 == 0
                                                        ? std::numeric_limits<float>::quiet_NaN()
                                                        : std::numeric_limits<float>::infinity();
    }
    gpu.push_back(x.to(Device::cuda()));
    cpu.push_back(x);
  }
  std::vector<std::pair<std::string, TensorView>> gc, gg;
  for (size_t t = 0; t < cpu.size(); ++t) {
    gc.emplace_back(testing::numbered('g', t), cpu[t].view());
    gg.emplace_back(testing::numbered('g', t), gpu[t].view());
  }
  const UnscaleResult rc = s.unscale_and_check(gc);
  const UnscaleResult rg = s.unscale_and_check(gg);
  EXPECT_TRUE(rc.found_inf);
  EXPECT_EQ(rg.found_inf, rc.found_inf);
  EXPECT_EQ(rg.first_nonfinite, rc.first_nonfinite);
  EXPECT_EQ(rg.num_nonfinite_tensors, rc.num_nonfinite_tensors);
  // Bit-exact except NaN payloads: x86 keeps the input NaN's payload, CUDA returns its canonical
  // NaN (PTX mul.f32), so NaNs are compared as NaNs.
  for (size_t t = 0; t < cpu.size(); ++t) {
    const std::vector<float> want = cpu[t].to_vector<float>();
    const std::vector<float> got = gpu[t].to(Device::cpu()).to_vector<float>();
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      if (std::isnan(want[i])) {
        ASSERT_TRUE(std::isnan(got[i])) << t << " " << i;
      } else {
        ASSERT_EQ(bits(got[i]), bits(want[i])) << t << " " << i;
      }
    }
  }
}

}  // namespace
}  // namespace frugal::amp
