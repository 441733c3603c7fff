// The CUDA random fills against the CPU ones: the same Philox stream, so uniforms match bit for bit
// and normals within a few float ulps (CUDA's logf/cosf/sinf against the host libm).
#include <gtest/gtest.h>

#include <cstring>

#include "frugal/core.hpp"
#include "support/gpu.hpp"
#include "support/tolerance.hpp"

namespace frugal {
namespace {

ExecContext ctx_of(uint64_t seed, uint64_t offset) {
  ExecContext ctx;
  ctx.seed = seed;
  ctx.offset = offset;
  return ctx;
}

::testing::AssertionResult same_bits(const Tensor& a, const Tensor& b) {
  if (!(a.shape() == b.shape()) || a.dtype() != b.dtype()) {
    return ::testing::AssertionFailure() << "shape or dtype differ";
  }
  Tensor ca = a.to(Device::cpu()).contiguous(), cb = b.to(Device::cpu()).contiguous();
  const auto* pa = static_cast<const unsigned char*>(ca.data_ptr());
  const auto* pb = static_cast<const unsigned char*>(cb.data_ptr());
  const int64_t width = dtype_nbytes(a.dtype(), 1);
  for (int64_t i = 0; i < a.numel(); ++i) {
    if (std::memcmp(pa + i * width, pb + i * width, static_cast<std::size_t>(width)) != 0) {
      return ::testing::AssertionFailure() << "first differing element " << i;
    }
  }
  return ::testing::AssertionSuccess();
}

TEST(RandomCuda, UniformsBitIdenticalToCpu) {
  FRUGAL_REQUIRE_GPU();
  const int64_t n = 1'000'003;  // a partial last block
  const ExecContext ctx = ctx_of(0x5eed, 17);
  for (DType t : {DType::kF32, DType::kF64, DType::kF16, DType::kBF16}) {
    const Tensor cpu = rand_uniform({n}, t, Device::cpu(), ctx, -0.75f, 1.25f);
    const Tensor gpu = rand_uniform({n}, t, Device::cuda(), ctx, -0.75f, 1.25f);
    EXPECT_TRUE(same_bits(cpu, gpu)) << dtype_name(t);
  }
}

TEST(RandomCuda, UniformCounterCarryMatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  const ExecContext ctx = ctx_of(1, ~uint64_t{0} - 3);  // the counter wraps into its high half
  EXPECT_TRUE(same_bits(rand_uniform({64}, DType::kF32, Device::cpu(), ctx),
                        rand_uniform({64}, DType::kF32, Device::cuda(), ctx)));
}

TEST(RandomCuda, NormalsMatchCpuWithinUlps) {
  FRUGAL_REQUIRE_GPU();
  const int64_t n = 1'000'003;
  const ExecContext ctx = ctx_of(123, 4);
  const Tensor cpu = rand_normal({n}, DType::kF32, Device::cpu(), ctx, 0.5f, 2.f);
  const Tensor gpu = rand_normal({n}, DType::kF32, Device::cuda(), ctx, 0.5f, 2.f);
  // CUDA logf (1 ulp), sinf/cosf (2 ulp) against glibc (< 1 ulp): a few float ulps of the
  // value relative (rtol 1e-6 ~ 8 ulp), plus 2 ulps of |mean| + std for values near cancellation.
  EXPECT_TRUE(testing::all_close(gpu, cpu, 1e-6, 1e-6));
  const Tensor cpu64 = rand_normal({n}, DType::kF64, Device::cpu(), ctx, 0.5f, 2.f);
  const Tensor gpu64 = rand_normal({n}, DType::kF64, Device::cuda(), ctx, 0.5f, 2.f);
  // Same in double: CUDA's log/sin/cos are within 2 ulp (~4e-16 relative).
  EXPECT_TRUE(testing::all_close(gpu64, cpu64, 1e-14, 1e-14));
  const Tensor cpu16 = rand_normal({n}, DType::kBF16, Device::cpu(), ctx);
  const Tensor gpu16 = rand_normal({n}, DType::kBF16, Device::cuda(), ctx);
  // A float that differs by a few ulps can round to the neighbouring bf16: 1 bf16 ulp = 2^-7 rel.
  EXPECT_TRUE(testing::all_close(gpu16, cpu16, 1.0 / 128, 1e-6));
}

TEST(RandomCuda, StridedFillMatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  const ExecContext ctx = ctx_of(9, 0);
  Tensor host = Tensor::zeros({33, 17});
  Tensor dev = Tensor::zeros({33, 17}, DType::kF32, Device::cuda());
  Tensor ht = host.t(), dt = dev.t();
  fill_uniform(ht.view(), -1.f, 1.f, ctx);
  fill_uniform(dt.view(), -1.f, 1.f, ctx);
  EXPECT_TRUE(same_bits(host, dev));
}

TEST(RandomCuda, BadInputRejectedBeforeLaunch) {
  FRUGAL_REQUIRE_GPU();
  EXPECT_THROW(rand_uniform({4}, DType::kF32, Device::cuda(), {}, 1.f, 0.f), Error);
  EXPECT_THROW(rand_normal({4}, DType::kI32, Device::cuda(), {}), Error);
}

}  // namespace
}  // namespace frugal
