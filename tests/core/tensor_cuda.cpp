// Tensor memory, copies and conversions on CUDA, checked against the CPU path.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "frugal/core.hpp"
#include "support/gpu.hpp"
#include "support/tolerance.hpp"

namespace frugal {
namespace {

using frugal::testing::all_equal;
using frugal::testing::random_uniform;

TEST(TensorCuda, RoundTripThroughTheDeviceIsExact) {
  FRUGAL_REQUIRE_GPU();
  Tensor x = random_uniform({37, 41}, 1);
  Tensor d = x.to(Device::cuda());
  EXPECT_EQ(d.device(), Device::cuda());
  EXPECT_TRUE(all_equal(d.to(Device::cpu()), x));
}

TEST(TensorCuda, StridedCopyOnTheDeviceMatchesTheCpu) {
  FRUGAL_REQUIRE_GPU();
  Tensor x = random_uniform({16, 24, 8}, 2);
  Tensor view_cpu = x.transpose(0, 2).slice(1, 3, 20);
  Tensor view_gpu = x.to(Device::cuda()).transpose(0, 2).slice(1, 3, 20);
  EXPECT_TRUE(all_equal(view_gpu.contiguous().to(Device::cpu()), view_cpu.contiguous()));
  // A strided destination on the device.
  Tensor dst = Tensor::zeros({8, 17, 16}, DType::kF32, Device::cuda());
  dst.copy_from(view_gpu);
  EXPECT_TRUE(all_equal(dst.to(Device::cpu()), view_cpu.contiguous()));
}

TEST(TensorCuda, EveryConversionIsBitIdenticalToTheCpu) {
  FRUGAL_REQUIRE_GPU();
  // Values spanning the ranges of every dtype, including ties, overflow and NaN.
  Tensor x = random_uniform({4096}, 3, -600.f, 600.f);
  std::vector<float> special = {0.5f, 1.5f, 2.5f, -0.5f, 448.f, 464.f, 1e6f, -1e6f, 1e-9f,
                                std::nanf(""), 0.f, -0.f};
  Tensor s = Tensor::from_vector(special, {static_cast<int64_t>(special.size())});
  const DType types[] = {DType::kF32, DType::kF64,    DType::kF16, DType::kBF16,
                         DType::kF8E4M3, DType::kF8E5M2, DType::kI8,  DType::kU8,
                         DType::kI32, DType::kI64,    DType::kBool};
  for (const Tensor& src : {x, s}) {
    for (DType from : types) {
      Tensor a = src.to(from);
      Tensor a_gpu = a.to(Device::cuda());
      for (DType to : types) {
        Tensor cpu = a.to(to);
        Tensor gpu = a_gpu.to(to).to(Device::cpu());
        // Compare raw bytes: bit-identical, signed zeros included. A NaN's payload is kept in
        // every dtype the library encodes itself (f16, bf16, fp8); fp32 <-> fp64 use the
        // hardware conversion, which on x86 keeps it and in PTX may give the canonical NaN, so
        // there both sides need only be NaN.
        ASSERT_EQ(cpu.nbytes(), gpu.nbytes());
        if (to == DType::kF32 || to == DType::kF64) {
          const std::vector<double> c = cpu.to_vector<double>(), g = gpu.to_vector<double>();
          for (size_t i = 0; i < c.size(); ++i) {
            if (std::isnan(c[i])) {
              EXPECT_TRUE(std::isnan(g[i])) << dtype_name(from) << " -> " << dtype_name(to);
            } else {
              EXPECT_EQ(std::signbit(c[i]), std::signbit(g[i]));
              EXPECT_EQ(c[i], g[i]) << dtype_name(from) << " -> " << dtype_name(to) << " " << i;
            }
          }
        } else {
          EXPECT_EQ(0, std::memcmp(cpu.cview().data, gpu.cview().data, cpu.nbytes()))
              << dtype_name(from) << " -> " << dtype_name(to);
        }
      }
    }
  }
}

TEST(TensorCuda, FillMatchesTheCpu) {
  FRUGAL_REQUIRE_GPU();
  for (DType t : {DType::kF32, DType::kBF16, DType::kF8E4M3, DType::kI8, DType::kI64}) {
    Tensor g = Tensor::full({1000}, 3.25, t, Device::cuda());
    EXPECT_TRUE(all_equal(g.to(Device::cpu()), Tensor::full({1000}, 3.25, t))) << dtype_name(t);
  }
}

TEST(TensorCuda, PackedTypesMoveAsBytes) {
  FRUGAL_REQUIRE_GPU();
  Tensor q = Tensor::from_vector(std::vector<float>{-8, -1, 0, 7, 3}, {5}).to(DType::kI4);
  Tensor back = q.to(Device::cuda()).to(Device::cpu());
  EXPECT_EQ(back.to_vector<int8_t>(), (std::vector<int8_t>{-8, -1, 0, 7, 3}));
  EXPECT_THROW(q.to(Device::cuda()).to(DType::kF32), Error);  // converted on the CPU only
}

TEST(TensorCuda, PoolHighWaterMarkGrows) {
  FRUGAL_REQUIRE_GPU();
  Tensor big = Tensor::empty({64 << 20}, DType::kU8, Device::cuda());
  EXPECT_GE(cuda_pool_peak_bytes(0), 64 << 20);
}

TEST(TensorCuda, BadDeviceIndexIsRejected) {
  FRUGAL_REQUIRE_GPU();
  EXPECT_THROW(Tensor::empty({4}, DType::kF32, Device::cuda(cuda_device_count())), Error);
}

}  // namespace
}  // namespace frugal
