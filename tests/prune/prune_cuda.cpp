// CUDA parity of the prune ops: masks identical to the CPU's (integer outputs, exact), sparse
// products within a stated tolerance of the CPU / double reference.
#include <gtest/gtest.h>

#include "frugal/prune.hpp"
#include "frugal/ref/prune.hpp"
#include "support/gpu.hpp"
#include "support/tolerance.hpp"

namespace frugal::prune {
namespace {

using frugal::testing::all_close;
using frugal::testing::random_uniform;

TEST(PruneCuda, MagnitudeMaskIdenticalToCpu) {
  FRUGAL_REQUIRE_GPU();
  for (DType dt : {DType::kF32, DType::kF64}) {
    for (double s : {0.0, 0.5, 0.9, 0.999}) {
      Tensor w = random_uniform(Shape{257, 129}, 3).to(dt);
      Tensor cpu = magnitude_mask(w, s);
      Tensor gpu = magnitude_mask(w.to(Device::cuda()), s);
      ASSERT_EQ(gpu.device(), Device::cuda());
      EXPECT_EQ(gpu.to(Device::cpu()).to_vector<uint8_t>(), cpu.to_vector<uint8_t>()) << s;
    }
  }
}

TEST(PruneCuda, TiesIdenticalToCpu) {
  FRUGAL_REQUIRE_GPU();
  std::vector<float> v(5000);
  for (int i = 0; i < 5000; ++i) v[i] = static_cast<float>(i % 5) - 2.0f;  // many ties, +-0
  Tensor s = Tensor::from_vector<float>(v, Shape{50, 100});
  for (double sp : {0.1, 0.33, 0.5, 0.71}) {
    EXPECT_EQ(unstructured_mask(s.to(Device::cuda()), sp).to(Device::cpu()).to_vector<uint8_t>(),
              unstructured_mask(s, sp).to_vector<uint8_t>());
    EXPECT_EQ(magnitude_mask(s.to(Device::cuda()), sp).to(Device::cpu()).to_vector<uint8_t>(),
              magnitude_mask(s, sp).to_vector<uint8_t>());
  }
}

TEST(PruneCuda, NmMaskIdenticalToCpu) {
  FRUGAL_REQUIRE_GPU();
  for (auto [n, m] : {std::pair{2, 4}, std::pair{1, 8}, std::pair{7, 16}}) {
    Tensor sc = magnitude_scores(random_uniform(Shape{64, 128}, 4));
    Tensor gpu = nm_mask(sc.to(Device::cuda()), n, m).to(Device::cpu());
    EXPECT_EQ(gpu.to_vector<uint8_t>(), nm_mask(sc, n, m).to_vector<uint8_t>());
    EXPECT_TRUE(is_nm_sparse(gpu, n, m));
  }
}

TEST(PruneCuda, ScoresApplyMaskAndNan) {
  FRUGAL_REQUIRE_GPU();
  Tensor w = random_uniform(Shape{33, 17}, 5);
  EXPECT_EQ(magnitude_scores(w.to(Device::cuda())).to(Device::cpu()).to_vector<float>(),
            magnitude_scores(w).to_vector<float>());
  Tensor m = magnitude_mask(w, 0.6);
  Tensor wc = w.clone();
  apply_mask(wc, m);
  Tensor wg = w.to(Device::cuda());
  apply_mask(wg, m.to(Device::cuda()));
  EXPECT_EQ(wg.to(Device::cpu()).to_vector<float>(), wc.to_vector<float>());
  std::vector<float> nanv(64, 1.f);
  nanv[10] = std::nanf("");
  Tensor nan = Tensor::from_vector<float>(nanv, Shape{64}).to(Device::cuda());
  try {
    unstructured_mask(nan, 0.5);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("[unstructured_mask]", 0), 0u);
  }
}

TEST(PruneCuda, CsrSpmmMatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  const int64_t M = 300, K = 200, N = 72;
  Tensor w = random_uniform(Shape{M, K}, 6);
  Tensor mk = magnitude_mask(w, 0.9);
  Tensor x = random_uniform(Shape{K, N}, 7);
  const auto want = ref::masked_matmul(w.to_vector<double>(), mk.to_vector<uint8_t>(),
                                       x.to_vector<double>(), M, K, N);
  CsrMatrix a = to_csr(w, mk).to(Device::cuda());
  Tensor y = spmm(a, x.to(Device::cuda()));
  // f32 sums of ~K/10 products in [-1, 1], cuSPARSE's order differs from the CPU's.
  EXPECT_TRUE(all_close(y.to(Device::cpu()).to_vector<double>(), want, 1e-5, 1e-5));
  CsrMatrix a64 = to_csr(w.to(DType::kF64), mk).to(Device::cuda());
  Tensor y64 = spmm(a64, x.to(DType::kF64).to(Device::cuda()));
  EXPECT_TRUE(all_close(y64.to(Device::cpu()).to_vector<double>(), want, 1e-12, 1e-12));
}

TEST(PruneCuda, Spmm24MatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  const int64_t M = 130, K = 256, N = 200;
  Tensor w = random_uniform(Shape{M, K}, 8);
  Tensor mk = nm_mask(magnitude_scores(w), 2, 4);
  Tensor x = random_uniform(Shape{K, N}, 9);
  const auto want = ref::masked_matmul(w.to_vector<double>(), mk.to_vector<uint8_t>(),
                                       x.to_vector<double>(), M, K, N);
  Sparse24Matrix a = compress_24(w, mk).to(Device::cuda());
  Tensor y = spmm(a, x.to(Device::cuda()));
  // f32 FMA sums of K/2 products in [-1, 1].
  EXPECT_TRUE(all_close(y.to(Device::cpu()).to_vector<double>(), want, 1e-5, 1e-5));
}

TEST(PruneCuda, BsrSpmmMatchesReference) {
  FRUGAL_REQUIRE_GPU();
  const int64_t M = 96, K = 120, N = 300;  // N > 128: two column tiles, a partial one
  Tensor w = random_uniform(Shape{M, K}, 10);
  Tensor mk = magnitude_mask(w, 0.8);
  Tensor x = random_uniform(Shape{K, N}, 11);
  for (auto [br, bc] : {std::pair<int64_t, int64_t>{4, 4}, {2, 8}, {1, 3}, {8, 5}}) {
    BsrMatrix a = to_bsr(w, br, bc, mk);
    // Pruned entries inside kept blocks are stored as zeros: the product is the masked one.
    const auto want = ref::masked_matmul(w.to_vector<double>(), mk.to_vector<uint8_t>(),
                                         x.to_vector<double>(), M, K, N);
    Tensor y = spmm(a.to(Device::cuda()), x.to(Device::cuda()));
    ASSERT_EQ(y.device(), Device::cuda());
    // f32 fma sums of at most K products in [-1, 1].
    EXPECT_TRUE(all_close(y.to(Device::cpu()).to_vector<double>(), want, 1e-5, 1e-5)) << br;
    BsrMatrix a64 = to_bsr(w.to(DType::kF64), br, bc, mk);
    Tensor y64 = spmm(a64.to(Device::cuda()), x.to(DType::kF64).to(Device::cuda()));
    // f64: only the summation order differs from the double reference.
    EXPECT_TRUE(all_close(y64.to(Device::cpu()).to_vector<double>(), want, 1e-12, 1e-12)) << br;
  }
  // x on the host with the matrix on the device: rejected at the entry.
  BsrMatrix a = to_bsr(w, 4, 4, mk).to(Device::cuda());
  try {
    spmm(a, x);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("[spmm]", 0), 0u);
  }
}

}  // namespace
}  // namespace frugal::prune
