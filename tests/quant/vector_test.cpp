// Vector quantization: k-means on data with a known answer (well-separated clusters), the Lloyd
// objective never increasing, determinism by seed and across thread counts, the published NF4
// values and their round trip, and product quantization against a scalar-codebook baseline of
// the same bit budget.
#include "frugal/quant/vector.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "frugal/core/packed.hpp"

namespace frugal::quant {
namespace {

template <class F>
void expect_invalid(F&& f, const char* op, int line = __builtin_LINE()) {
  SCOPED_TRACE(::testing::Message() << "called from line " << line);
  try {
    f();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(std::string(e.what()).rfind(std::string("[") + op + "]", 0), 0u) << e.what();
  }
}

// n points around each of the given centres (noise uniform in +-0.5), labels alongside.
Tensor clusters(const std::vector<std::vector<float>>& centres, int n, uint32_t seed,
                std::vector<int>& labels) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> noise(-0.5f, 0.5f);
  const int64_t d = static_cast<int64_t>(centres[0].size());
  std::vector<float> v;
  labels.clear();
  for (int i = 0; i < n; ++i) {
    for (size_t c = 0; c < centres.size(); ++c) {
      for (int64_t j = 0; j < d; ++j) v.push_back(centres[c][j] + noise(rng));
      labels.push_back(static_cast<int>(c));
    }
  }
  return Tensor::from_vector(v, {static_cast<int64_t>(labels.size()), d});
}

Tensor gaussian(int64_t n, int64_t d, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.f, 1.f);
  std::vector<float> v(static_cast<size_t>(n * d));
  for (auto& x : v) x = g(rng);
  return Tensor::from_vector(v, {n, d});
}

TEST(KMeans, RecoversSeparatedClusters) {
  std::vector<int> labels;
  const std::vector<std::vector<float>> centres = {
      {0, 0, 0}, {10, 10, 0}, {-10, 10, 5}, {0, -20, 3}};
  const Tensor x = clusters(centres, 40, 1, labels);
  KMeansOptions opt;
  opt.k = 4;
  opt.seed = 7;
  const KMeansResult r = kmeans(x, opt);
  EXPECT_TRUE(r.converged);
  const std::vector<int32_t> a = r.assignments.to_vector<int32_t>();
  // The partition equals the labels up to renaming: a bijection label -> cluster.
  std::map<int, int> to;
  for (size_t i = 0; i < a.size(); ++i) {
    auto [it, fresh] = to.emplace(labels[i], a[i]);
    EXPECT_EQ(it->second, a[i]) << i;
  }
  std::vector<int> used;
  for (auto& [l, c] : to) used.push_back(c);
  std::sort(used.begin(), used.end());
  EXPECT_EQ(used, (std::vector<int>{0, 1, 2, 3}));
  // Centroids are the means of their clusters (computed here in double).
  const std::vector<float> c = r.centroids.to_vector<float>();
  const std::vector<float> xv = x.to_vector<float>();
  for (auto& [l, cl] : to) {
    for (int j = 0; j < 3; ++j) {
      double s = 0;
      int cnt = 0;
      for (size_t i = 0; i < labels.size(); ++i) {
        if (labels[i] == l) {
          s += xv[i * 3 + j];
          ++cnt;
        }
      }
      EXPECT_NEAR(c[cl * 3 + j], s / cnt, 1e-5);  // float rounding of a mean of magnitude <= 20
    }
  }
}

TEST(KMeans, ObjectiveNeverIncreasesAndRunsAreDeterministic) {
  const Tensor x = gaussian(600, 5, 2);
  KMeansOptions opt;
  opt.k = 12;
  opt.seed = 3;
  opt.max_iters = 60;
  const KMeansResult r = kmeans(x, opt);
  ASSERT_GE(r.objective.size(), 2u);
  for (size_t t = 1; t < r.objective.size(); ++t) {
    // Lloyd's steps never increase the objective; 1e-6 relative covers the float distances.
    EXPECT_LE(r.objective[t], r.objective[t - 1] * (1 + 1e-6)) << t;
  }
  const KMeansResult again = kmeans(x, opt, ExecContext{nullptr, 1});
  EXPECT_EQ(again.centroids.to_vector<float>(), r.centroids.to_vector<float>());
  EXPECT_EQ(again.assignments.to_vector<int32_t>(), r.assignments.to_vector<int32_t>());
  EXPECT_EQ(again.objective, r.objective);
  opt.seed = 4;
  const KMeansResult other = kmeans(x, opt);
  EXPECT_NE(other.centroids.to_vector<float>(), r.centroids.to_vector<float>());
  // kmeans_assign of the returned centroids reproduces the returned assignments.
  EXPECT_EQ(kmeans_assign(x, r.centroids).to_vector<int32_t>(), r.assignments.to_vector<int32_t>());
}

TEST(Nf4, PublishedValuesAndRoundTrip) {
  // QLoRA Appendix E / bitsandbytes, typed again here.
  const float published[16] = {-1.0f,
                               -0.6961928009986877f,
                               -0.5250730514526367f,
                               -0.39491748809814453f,
                               -0.28444138169288635f,
                               -0.18477343022823334f,
                               -0.09105003625154495f,
                               0.0f,
                               0.07958029955625534f,
                               0.16093020141124725f,
                               0.24611230194568634f,
                               0.33791524171829224f,
                               0.44070982933044434f,
                               0.5626170039176941f,
                               0.7229568362236023f,
                               1.0f};
  for (int i = 0; i < 16; ++i) EXPECT_EQ(kNF4[i], published[i]) << i;
  // Values that are codebook entries times a block absmax come back exactly.
  std::vector<float> v;
  const float absmax[3] = {2.f, 0.5f, 3.f};
  for (int b = 0; b < 3; ++b) {
    for (int i = 0; i < 64; ++i) v.push_back(published[(i * 7 + b) % 16] * absmax[b]);
  }
  const Tensor x = Tensor::from_vector(v, {3, 64});
  const Nf4Tensor q = nf4_quantize(x);
  EXPECT_EQ(q.codes.dtype(), DType::kU4);
  EXPECT_EQ(q.absmax.to_vector<float>(), (std::vector<float>{2.f, 0.5f, 3.f}));
  EXPECT_EQ(nf4_dequantize(q).to_vector<float>(), v);
  // Arbitrary data maps to the nearest entry of its block (brute force here), 100 elements with a
  // partial last block, and an all-zero block.
  std::mt19937 rng(5);
  std::normal_distribution<float> g(0.f, 1.f);
  std::vector<float> r(100);
  for (auto& t : r) t = g(rng);
  std::fill(r.begin() + 64, r.begin() + 96, 0.f);
  const Nf4Tensor qr = nf4_quantize(Tensor::from_vector(r, {100}), 32);
  const std::vector<float> back = nf4_dequantize(qr).to_vector<float>();
  for (int i = 0; i < 100; ++i) {
    float m = 0;
    for (int j = i / 32 * 32; j < std::min(100, i / 32 * 32 + 32); ++j)
      m = std::max(m, std::fabs(r[j]));
    float best = 0, bd = 1e30f;
    for (float c : published) {
      const float dd = std::fabs(r[i] - c * m);
      if (dd < bd - 1e-6f * m) {
        bd = dd;
        best = c * m;
      }
    }
    EXPECT_NEAR(back[i], best, 1e-6f * m) << i;  // ties between entries are measure-zero
  }
  expect_invalid(
      [&] {
        nf4_quantize(Tensor::from_vector(std::vector<float>{1.f, NAN}, {2}));
      },
      "nf4_quantize");
  expect_invalid([&] { nf4_quantize(x, 0); }, "nf4_quantize");
  expect_invalid([&] { nf4_quantize(x.to(DType::kF64)); }, "nf4_quantize");
}

TEST(Codebook, FourBitScalarCodebook) {
  const Tensor x = gaussian(64, 64, 6).reshape({4096});
  const CodebookTensor q = codebook_quantize(x, 4);
  EXPECT_EQ(q.codes.dtype(), DType::kU4);
  const std::vector<float> book = q.codebook.to_vector<float>();
  ASSERT_EQ(book.size(), 16u);
  EXPECT_TRUE(std::is_sorted(book.begin(), book.end()));
  const std::vector<float> xv = x.to_vector<float>(),
                           back = codebook_dequantize(q).to_vector<float>();
  double err = 0, err_uniform = 0;
  const float amax = std::max(std::fabs(book.front()), std::fabs(book.back()));
  for (size_t i = 0; i < xv.size(); ++i) {
    float bd = 1e30f;
    for (float c : book) bd = std::min(bd, std::fabs(xv[i] - c));
    EXPECT_EQ(std::fabs(xv[i] - back[i]), bd) << i;  // each element takes its nearest entry
    err += double(xv[i] - back[i]) * (xv[i] - back[i]);
    // Baseline: 16 uniform levels over the same range.
    const float s = 2 * amax / 15;
    const float u = std::clamp(std::nearbyint((xv[i] + amax) / s), 0.f, 15.f) * s - amax;
    err_uniform += double(xv[i] - u) * (xv[i] - u);
  }
  EXPECT_LT(err, err_uniform);  // Lloyd-Max beats uniform levels on Gaussian data
  const CodebookTensor q8 = codebook_quantize(x, 6);
  EXPECT_EQ(q8.codes.dtype(), DType::kU8);
  expect_invalid([&] { codebook_quantize(x, 0); }, "codebook_quantize");
  expect_invalid([&] { codebook_quantize(x.slice(0, 0, 10), 4); }, "codebook_quantize");
}

TEST(ProductQuantizer, BeatsScalarCodebookAtEqualBits) {
  // 8-d points around 64 centres: PQ with m = 2 sub-spaces of 256 codes spends 16 bits per
  // vector, as a 2-bit scalar codebook per coordinate does; the correlations favour PQ.
  std::mt19937 rng(8);
  std::normal_distribution<float> g(0.f, 1.f);
  std::vector<std::vector<float>> centres(64, std::vector<float>(8));
  for (auto& c : centres)
    for (auto& v : c) v = 4.f * g(rng);
  std::vector<int> labels;
  const Tensor x = clusters(centres, 12, 9, labels);  // 768 points
  KMeansOptions opt;
  opt.max_iters = 30;
  const ProductQuantizer pq = pq_train(x, 2, 256, opt);
  EXPECT_EQ(pq.codebooks.shape(), (Shape{2, 256, 4}));
  const Tensor codes = pq_encode(pq, x);
  EXPECT_EQ(codes.shape(), (Shape{768, 2}));
  const std::vector<float> rec = pq_decode(pq, codes).to_vector<float>();
  const std::vector<float> xv = x.to_vector<float>();
  double err = 0;
  for (size_t i = 0; i < xv.size(); ++i) err += double(xv[i] - rec[i]) * (xv[i] - rec[i]);
  const CodebookTensor sq = codebook_quantize(x, 2, opt);
  const std::vector<float> srec = codebook_dequantize(sq).to_vector<float>();
  double serr = 0;
  for (size_t i = 0; i < xv.size(); ++i) serr += double(xv[i] - srec[i]) * (xv[i] - srec[i]);
  EXPECT_LT(err, 0.5 * serr) << "pq " << err << " scalar " << serr;
  expect_invalid([&] { pq_train(x, 3, 16, opt); }, "pq_train");   // 3 does not divide 8
  expect_invalid([&] { pq_train(x, 2, 300, opt); }, "pq_train");  // k > 256
  expect_invalid([&] { pq_encode(pq, x.slice(1, 0, 4)); }, "pq_encode");
}

TEST(KMeans, BadInput) {
  const Tensor x = gaussian(10, 2, 1);
  KMeansOptions opt;
  opt.k = 11;
  expect_invalid([&] { kmeans(x, opt); }, "kmeans");  // k > n
  opt.k = 2;
  opt.max_iters = 0;
  expect_invalid([&] { kmeans(x, opt); }, "kmeans");
  opt.max_iters = 5;
  expect_invalid([&] { kmeans(x.reshape({20}), opt); }, "kmeans");
  expect_invalid([&] { kmeans(x.to(DType::kF64), opt); }, "kmeans");
  expect_invalid([&] { kmeans(Tensor::zeros({0, 2}), opt); }, "kmeans");
  std::vector<float> v = x.to_vector<float>();
  v[3] = NAN;
  expect_invalid([&] { kmeans(Tensor::from_vector(v, {10, 2}), opt); }, "kmeans");
  expect_invalid([&] { kmeans_assign(x, Tensor::zeros({3, 3})); }, "kmeans_assign");
}

}  // namespace
}  // namespace frugal::quant
