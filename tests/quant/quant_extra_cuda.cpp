// CUDA parity of the observers, k-means and the quantized GEMMs: inputs built on the host, moved
// with .to(Device::cuda()), results compared with the CPU path (integers and histograms exactly).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "frugal/core/packed.hpp"
#include "frugal/quant/observer.hpp"
#include "frugal/quant/qgemm.hpp"
#include "frugal/quant/vector.hpp"
#include "support/gpu.hpp"

namespace frugal::quant {
namespace {

Tensor gpu(const Tensor& t) { return t.to(Device::cuda()); }

std::vector<float> gaussian(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.f, 1.f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = g(rng);
  return v;
}

Tensor random_i8(int64_t r, int64_t c, uint32_t seed, DType dt = DType::kI8) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(dt == DType::kI8 ? -128 : 0, dt == DType::kI8 ? 127 : 255);
  if (dt == DType::kU8) {
    std::vector<uint8_t> v(static_cast<size_t>(r * c));
    for (auto& x : v) x = static_cast<uint8_t>(d(rng));
    return Tensor::from_vector(v, {r, c});
  }
  std::vector<int8_t> v(static_cast<size_t>(r * c));
  for (auto& x : v) x = static_cast<int8_t>(d(rng));
  return Tensor::from_vector(v, {r, c});
}

TEST(QuantExtraCuda, ObserversMatchCpu) {
  FRUGAL_REQUIRE_GPU();
  const Tensor x = Tensor::from_vector(gaussian(300000, 1), {300, 1000});
  EntropyObserver hc, hg;
  hc.observe(x);
  hg.observe(gpu(x));
  EXPECT_EQ(hg.signed_histogram(), hc.signed_histogram());
  EXPECT_EQ(hg.min(), hc.min());
  EXPECT_EQ(hg.max(), hc.max());
  QuantSpec spec;
  EXPECT_EQ(hg.threshold(spec), hc.threshold(spec));
  PerChannelMinMaxObserver pc(0), pg(0);
  pc.observe(x);
  pg.observe(gpu(x));
  EXPECT_EQ(pg.min(), pc.min());
  EXPECT_EQ(pg.max(), pc.max());
  MinMaxObserver mg;
  std::vector<float> bad = gaussian(1000, 2);
  bad[500] = NAN;
  EXPECT_THROW(mg.observe(gpu(Tensor::from_vector(bad, {1000}))), Error);
  EXPECT_FALSE(mg.has_data());
}

TEST(QuantExtraCuda, KMeansMatchesCpuExactly) {
  FRUGAL_REQUIRE_GPU();
  const Tensor x = Tensor::from_vector(gaussian(4000 * 6, 3), {4000, 6});
  KMeansOptions opt;
  opt.k = 20;
  opt.seed = 11;
  opt.max_iters = 25;
  const KMeansResult c = kmeans(x, opt);
  const KMeansResult g = kmeans(gpu(x), opt);
  EXPECT_EQ(g.centroids.device().kind, DeviceKind::kCuda);
  EXPECT_EQ(g.centroids.to(Device::cpu()).to_vector<float>(), c.centroids.to_vector<float>());
  EXPECT_EQ(g.assignments.to(Device::cpu()).to_vector<int32_t>(),
            c.assignments.to_vector<int32_t>());
  EXPECT_EQ(g.objective, c.objective);
  const ProductQuantizer pq = pq_train(gpu(x), 3, 16, opt);
  const ProductQuantizer pqc = pq_train(x, 3, 16, opt);
  EXPECT_EQ(pq_encode(pq, gpu(x)).to(Device::cpu()).to_vector<uint8_t>(),
            pq_encode(pqc, x).to_vector<uint8_t>());
}

TEST(QuantExtraCuda, Int8GemmMatchesCpuExactly) {
  FRUGAL_REQUIRE_GPU();
  struct Case {
    int64_t m, n, k;
    DType adt;
    int32_t zp;
  };
  // Multiples of 4 take cuBLASLt, the others the tiled kernel.
  for (const Case& cs : {Case{128, 96, 256, DType::kI8, 0}, Case{64, 64, 512, DType::kU8, 131},
                         Case{37, 29, 131, DType::kI8, -5}, Case{512, 512, 2048, DType::kI8, 3}}) {
    const Tensor a = random_i8(cs.m, cs.k, 1, cs.adt), b = random_i8(cs.n, cs.k, 2);
    const Tensor want = qgemm_s32(a, cs.zp, b);
    const Tensor got = qgemm_s32(gpu(a), cs.zp, gpu(b));
    EXPECT_EQ(got.to(Device::cpu()).to_vector<int32_t>(), want.to_vector<int32_t>()) << cs.m;
    std::vector<float> sb(cs.n);
    for (int64_t j = 0; j < cs.n; ++j) sb[j] = 0.001f * static_cast<float>(j % 7 + 1);
    const Tensor tsb = Tensor::from_vector(sb, {cs.n}), bias = Tensor::full({cs.n}, 0.5);
    EXPECT_EQ(qgemm_f32(gpu(a), 0.01f, cs.zp, gpu(b), gpu(tsb), gpu(bias))
                  .to(Device::cpu())
                  .to_vector<float>(),
              qgemm_f32(a, 0.01f, cs.zp, b, tsb, bias).to_vector<float>());
    EXPECT_EQ(
        qgemm_requantize(gpu(a), 0.01f, cs.zp, gpu(b), gpu(tsb), gpu(bias), 0.3f, 5, DType::kI8)
            .to(Device::cpu())
            .to_vector<int8_t>(),
        qgemm_requantize(a, 0.01f, cs.zp, b, tsb, bias, 0.3f, 5, DType::kI8).to_vector<int8_t>());
  }
}

TEST(QuantExtraCuda, WeightOnlyMatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  for (bool i4 : {true, false}) {
    const int64_t m = 3, n = 70, k = 512, g = 64;
    std::mt19937 rng(4);
    std::uniform_int_distribution<int> d(i4 ? -8 : -128, i4 ? 7 : 127);
    std::vector<int8_t> codes(n * k);
    for (auto& c : codes) c = static_cast<int8_t>(d(rng));
    Tensor w;
    if (i4) {
      w = Tensor::empty({n, k}, DType::kI4);
      pack_i4(codes.data(), static_cast<uint8_t*>(w.data_ptr()), n * k);
    } else {
      w = Tensor::from_vector(codes, {n, k});
    }
    const Tensor s = Tensor::full({n, k / g}, 0.01, DType::kF32);
    const Tensor x = Tensor::from_vector(gaussian(m * k, 5), {m, k});
    const Tensor yc = woq_matmul(x, w, s, g);
    const Tensor yg = woq_matmul(gpu(x), gpu(w), gpu(s), g).to(Device::cpu());
    const std::vector<float> a = yg.to_vector<float>(), b = yc.to_vector<float>();
    for (size_t i = 0; i < a.size(); ++i) {
      // Different summation orders over K = 512 terms of size <= 8 * 0.01 * 4: ~1e-5 absolute.
      EXPECT_NEAR(a[i], b[i], 1e-4) << i;
    }
  }
}

}  // namespace
}  // namespace frugal::quant
