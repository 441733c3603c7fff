// CUDA parity of amp::cast: inputs built on the CPU, moved to the GPU; every output must equal the
// CPU's bit for bit (both run the same integer conversions and the same Philox stream; the products
// are single IEEE multiplies).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "frugal/amp.hpp"
#include "frugal/core.hpp"
#include "support/gpu.hpp"
#include "support/tolerance.hpp"

namespace frugal::amp {
namespace {

std::vector<uint8_t> bytes_of(const Tensor& t) {
  const Tensor h = t.to(Device::cpu());
  const auto* p = static_cast<const uint8_t*>(h.cview().data);
  return std::vector<uint8_t>(p, p + h.nbytes());
}

Tensor random_bits(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) {
    const uint32_t u = gen();
    std::memcpy(&x, &u, 4);
  }
  return Tensor::from_vector(v, Shape{n});
}

TEST(AmpCastCuda, BitsEqualCpuForEveryMode) {
  FRUGAL_REQUIRE_GPU();
  const Tensor xs[] = {random_bits(100003, 1),
                       testing::random_uniform(Shape{517, 33}, 2, -500.f, 500.f)};
  for (const Tensor& x : xs) {
    const Tensor xg = x.to(Device::cuda());
    for (DType t : {DType::kF16, DType::kBF16, DType::kF8E4M3, DType::kF8E5M2}) {
      for (Rounding r : {Rounding::kNearestEven, Rounding::kStochastic}) {
        for (Overflow ov : {Overflow::kSaturate, Overflow::kNonSaturate}) {
          CastOptions opt;
          opt.rounding = r;
          opt.overflow = ov;
          opt.scale = 0.375f;
          opt.compute_amax = true;
          ExecContext ctx;
          ctx.seed = 31;
          ctx.offset = 5;
          const CastResult c = cast(x.cview(), t, opt, ctx);
          const CastResult g = cast(xg.cview(), t, opt, ctx);
          EXPECT_EQ(bytes_of(c.out), bytes_of(g.out)) << dtype_name(t) << " " << int(r);
          if (std::isnan(c.amax)) {
            EXPECT_TRUE(std::isnan(g.amax));
          } else {
            EXPECT_EQ(c.amax, g.amax);
          }
        }
      }
    }
  }
}

// The loss scaler's unscale-and-check on CUDA: tests/amp/loss_scaler_cuda.cpp.

}  // namespace
}  // namespace frugal::amp
