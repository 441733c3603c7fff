// CUDA parity of amp::gemm: inputs built on the CPU and moved to the GPU; the GPU result and the
// CPU result must both lie within the fp32-accumulation bound of the double reference on the
// decoded inputs (the products are exact on both; only the summation order differs).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "amp/gemm_reference.hpp"
#include "frugal/amp.hpp"
#include "frugal/core.hpp"
#include "support/check.hpp"
#include "support/gpu.hpp"
#include "support/tolerance.hpp"

namespace frugal::amp {
namespace {

using testing::matches;
using testing::reference;

// cuBLAS bf16 / f16 tensor cores accumulate in fp32 (possibly truncating): 2^-23 per addition.
constexpr double kHalfAcc = 0x1p-23;
// Hopper fp8 tensor cores keep about 14 significant bits in the accumulator between cuBLASLt's
// fp32 promotions (DeepSeek-V3 report, section 3.3.2), so the bound uses 2^-13 per addition.
constexpr double kFp8Acc = 0x1p-13;

Shape stored(int64_t batch, int64_t rows, int64_t cols, bool trans) {
  return trans ? Shape{batch, cols, rows} : Shape{batch, rows, cols};
}

void parity(DType da, DType db, DType dc, bool ta, bool tb, int64_t batch, int64_t m, int64_t n,
            int64_t k, float alpha, float beta, float sa, float sb, uint32_t seed) {
  SCOPED_TRACE(std::string(dtype_name(da)) + " x " + std::string(dtype_name(db)) + " -> " +
               std::string(dtype_name(dc)) + (ta ? " ta" : "") + (tb ? " tb" : ""));
  const Tensor a = frugal::testing::random_uniform(stored(batch, m, k, ta), seed, -3, 3).to(da);
  const Tensor b = frugal::testing::random_uniform(stored(batch, k, n, tb), seed + 1, -3, 3).to(db);
  const Tensor c0 = frugal::testing::random_uniform({batch, m, n}, seed + 2).to(dc);
  GemmOptions o;
  o.trans_a = ta;
  o.trans_b = tb;
  o.alpha = alpha;
  o.beta = beta;
  o.a_scale = sa;
  o.b_scale = sb;
  Tensor c_cpu = c0.to(dc);
  amp::gemm_into(a.cview(), b.cview(), c_cpu.view(), o);
  const Device gpu = Device::cuda(0);
  Tensor c_gpu = c0.to(gpu);
  amp::gemm_into(a.to(gpu).cview(), b.to(gpu).cview(), c_gpu.view(), o);
  const bool fp8 = da == DType::kF8E4M3 || da == DType::kF8E5M2;
  const testing::Ref r = reference(a, b, c0.to_vector<double>(), dc, o, fp8 ? kFp8Acc : kHalfAcc);
  EXPECT_TRUE(matches(c_gpu.to(Device::cpu()), r));
  EXPECT_TRUE(matches(c_cpu, r));
}

TEST(AmpGemmCuda, HalfMatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  for (DType d : {DType::kBF16, DType::kF16}) {
    for (DType dc : {DType::kF32, DType::kBF16, DType::kF16}) {
      for (bool ta : {false, true}) {
        for (bool tb : {false, true}) parity(d, d, dc, ta, tb, 1, 37, 29, 53, 1.f, 0.f, 1, 1, 1);
      }
    }
    parity(d, d, DType::kF32, true, false, 3, 24, 40, 72, -0.5f, 1.5f, 0.25f, 4.f, 2);
  }
}

TEST(AmpGemmCuda, Fp8MatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  const DType e4 = DType::kF8E4M3, e5 = DType::kF8E5M2;
  for (auto [da, db] :
       {std::pair{e4, e4}, std::pair{e4, e5}, std::pair{e5, e4}, std::pair{e5, e5}}) {
    for (DType dc : {DType::kF32, DType::kBF16, DType::kF16}) {
      for (bool ta : {false, true}) {
        for (bool tb : {false, true}) parity(da, db, dc, ta, tb, 1, 32, 48, 64, 1, 0, 1, 1, 3);
      }
    }
    parity(da, db, DType::kF32, false, true, 4, 16, 32, 256, 0.75f, -1.f, 0.125f, 2.f, 4);
  }
}

TEST(AmpGemmCuda, Fp8ShapesNotMultipleOf16AreRejected) {
  FRUGAL_REQUIRE_GPU();
  const Device gpu = Device::cuda(0);
  const Tensor a = Tensor::zeros({16, 24}, DType::kF8E4M3, gpu);
  const Tensor b = Tensor::zeros({24, 16}, DType::kF8E4M3, gpu);
  frugal::testing::expect_error([&] { amp::gemm(a.cview(), b.cview()); },
                                ErrorCode::kInvalidArgument, "amp::gemm");
}

TEST(AmpGemmCuda, DeviceMismatchIsRejected) {
  FRUGAL_REQUIRE_GPU();
  const Tensor a = Tensor::zeros({16, 16}, DType::kBF16);
  const Tensor b = Tensor::zeros({16, 16}, DType::kBF16, Device::cuda(0));
  frugal::testing::expect_error([&] { amp::gemm(a.cview(), b.cview()); },
                                ErrorCode::kInvalidArgument, "amp::gemm");
}

}  // namespace
}  // namespace frugal::amp
