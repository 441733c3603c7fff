// Embedding: exact gather, exact scatter-add counts, reference parity of the weight gradient,
// thread-count determinism, initialisation and bad input.
#include "frugal/nn/embedding.hpp"

#include <gtest/gtest.h>

#include <random>

#include "frugal/core/error.hpp"
#include "frugal/ref/nn_transformer.hpp"
#include "support/check.hpp"
#include "support/tolerance.hpp"

namespace frugal {
namespace {

using testing::all_close;
using testing::all_equal;
using testing::expect_error;
using testing::random_uniform;

Tensor ids_of(const std::vector<int64_t>& v, Shape s) { return Tensor::from_vector(v, s); }

Tensor random_ids(Shape s, int64_t v, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int64_t> dist(0, v - 1);
  std::vector<int64_t> ids(static_cast<std::size_t>(s.numel()));
  for (auto& x : ids) x = dist(gen);
  return Tensor::from_vector(ids, s);
}

TEST(Embedding, ForwardGathersRows) {
  for (DType dt : {DType::kF32, DType::kF64}) {
    Tensor w = random_uniform({7, 5}, 1).to(dt);
    Tensor ids = ids_of({3, 0, 6, 3, 1, 1}, {2, 3});
    Tensor y = nn::embedding_forward(ids, w);
    EXPECT_EQ(y.shape(), Shape({2, 3, 5}));
    EXPECT_TRUE(all_equal(y, ref::embedding_forward(ids, w)));  // a copy: exact
  }
}

TEST(Embedding, BackwardCountsOccurrences) {
  // With grad_out = 1 everywhere, row r of the gradient is the number of times id r occurs.
  Tensor ids = ids_of({2, 2, 0, 4, 2, 0, 2}, {7});
  Tensor gw = Tensor::zeros({6, 3});
  nn::embedding_backward(Tensor::full({7, 3}, 1.0), ids, gw.view());
  const std::vector<double> counts = {2, 0, 4, 0, 1, 0};
  const auto g = gw.to_vector<double>();
  for (int r = 0; r < 6; ++r) {
    for (int j = 0; j < 3; ++j) EXPECT_EQ(g[r * 3 + j], counts[r]) << r;
  }
  // Accumulates: a second call doubles it.
  nn::embedding_backward(Tensor::full({7, 3}, 1.0), ids, gw.view());
  EXPECT_EQ(gw.to_vector<double>()[2 * 3], 8.0);
}

TEST(Embedding, BackwardMatchesReference) {
  Tensor ids = random_ids({4, 33}, 19, 2);
  Tensor g = random_uniform({4, 33, 6}, 3).to(DType::kF64);
  Tensor gw = Tensor::zeros({19, 6}, DType::kF64);
  nn::embedding_backward(g, ids, gw.view());
  // Both sum each row's contributions in double; only the summation order may differ.
  EXPECT_TRUE(all_close(gw, ref::embedding_backward(g, ids, 19, DType::kF64), 1e-14, 1e-14));
}

TEST(Embedding, ResultsDoNotDependOnThreadCount) {
  Tensor ids = random_ids({64, 50}, 37, 4);
  Tensor w = random_uniform({37, 24}, 5);
  Tensor g = random_uniform({64, 50, 24}, 6);
  auto run = [&](int threads) {
    ExecContext ctx;
    ctx.num_threads = threads;
    Tensor y = nn::embedding_forward(ids, w, ctx);
    Tensor gw = Tensor::zeros({37, 24});
    nn::embedding_backward(g, ids, gw.view(), ctx);
    return std::make_pair(y, gw);
  };
  auto a = run(1), b = run(2);
  EXPECT_TRUE(all_equal(a.first, b.first));
  EXPECT_TRUE(all_equal(a.second, b.second));
}

TEST(Embedding, ModuleInitAndBackward) {
  nn::Embedding e1(50, 8, 42), e2(50, 8, 42), e3(50, 8, 43);
  EXPECT_TRUE(all_equal(e1.weight().value, e2.weight().value));  // same seed, same weights
  EXPECT_FALSE(all_close(e1.weight().value, e3.weight().value, 0, 0));
  // N(0, 1) like torch.nn.Embedding: 400 samples, mean within 4 sigma/sqrt(n) = 0.2 of 0.
  const auto v = e1.weight().value.to_vector<double>();
  double m = 0, s = 0;
  for (double x : v) m += x / v.size();
  for (double x : v) s += (x - m) * (x - m) / v.size();
  EXPECT_NEAR(m, 0.0, 0.2);
  EXPECT_NEAR(s, 1.0, 0.3);  // variance of 400 normals: sd ~ sqrt(2/400) = 0.07
  ASSERT_EQ(e1.named_parameters().size(), 1u);
  EXPECT_EQ(e1.named_parameters()[0].name, "weight");

  Tensor ids = ids_of({1, 1, 3}, {1, 3});
  Tensor y = e1.forward(ids);
  EXPECT_EQ(y.shape(), Shape({1, 3, 8}));
  Tensor gi = e1.backward(Tensor::full({1, 3, 8}, 0.5));
  EXPECT_FALSE(gi.defined());  // ids are not differentiable
  const auto g = e1.weight().grad.to_vector<double>();
  EXPECT_EQ(g[1 * 8], 1.0);
  EXPECT_EQ(g[3 * 8], 0.5);
  EXPECT_EQ(g[0], 0.0);
}

TEST(Embedding, BadInput) {
  Tensor w = random_uniform({5, 4}, 7);
  const char* f = "embedding_forward";
  expect_error(
      [&] {
        nn::embedding_forward(ids_of({0, 5}, {2}), w);
      },
      ErrorCode::kInvalidArgument, f);
  expect_error(
      [&] {
        nn::embedding_forward(ids_of({-1, 2}, {2}), w);
      },
      ErrorCode::kInvalidArgument, f);
  expect_error(
      [&] {
        nn::embedding_forward(ids_of({0, 1}, {2}).to(DType::kI32), w);
      },
      ErrorCode::kInvalidArgument, f);
  expect_error([&] { nn::embedding_forward(Tensor::full({}, 0.0, DType::kI64), w); },
               ErrorCode::kInvalidArgument, f);
  expect_error([&] { nn::embedding_forward(ids_of({0}, {1}), random_uniform({20}, 1)); },
               ErrorCode::kInvalidArgument, f);
  expect_error([&] { nn::embedding_forward(ids_of({0}, {1}), w.to(DType::kI32)); },
               ErrorCode::kUnsupported, f);
  const char* fb = "embedding_backward";
  Tensor gw = Tensor::zeros({5, 4});
  expect_error(
      [&] {
        nn::embedding_backward(Tensor::zeros({2, 3}), ids_of({0, 1}, {2}), gw.view());
      },
      ErrorCode::kInvalidArgument, fb);
  expect_error(
      [&] {
        nn::embedding_backward(Tensor::zeros({2, 4}, DType::kF64), ids_of({0, 1}, {2}), gw.view());
      },
      ErrorCode::kInvalidArgument, fb);
  expect_error(
      [&] {
        nn::embedding_backward(Tensor::zeros({2, 4}), ids_of({0, 9}, {2}), gw.view());
      },
      ErrorCode::kInvalidArgument, fb);
  nn::Embedding e(5, 4, 0);
  expect_error(
      [&] {
        e.backward(Tensor::zeros({1, 4}));
      },
      ErrorCode::kInvalidArgument, "Embedding::backward");
  expect_error([&] { nn::Embedding bad(0, 4, 0); }, ErrorCode::kInvalidArgument, "Embedding");
}

}  // namespace
}  // namespace frugal
