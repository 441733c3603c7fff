// Sparse formats and products against the dense product of the masked weight (double reference).
#include <gtest/gtest.h>

#include "frugal/core/ops.hpp"
#include "frugal/prune.hpp"
#include "frugal/ref/prune.hpp"
#include "support/check.hpp"
#include "support/tolerance.hpp"

namespace frugal::prune {
namespace {

using frugal::testing::all_close;
using frugal::testing::expect_error;
using frugal::testing::random_uniform;

constexpr ErrorCode kInvalid = ErrorCode::kInvalidArgument;

Tensor masked(const Tensor& w, const Tensor& m) {
  Tensor c = w.clone();
  apply_mask(c, m);
  return c;
}

TEST(PruneSparse, CsrRoundTripAndSpmm) {
  const int64_t M = 67, K = 130, N = 150;  // N spans two full tiles and a tail
  Tensor w = random_uniform(Shape{M, K}, 1);
  Tensor m = magnitude_mask(w, 0.9);
  CsrMatrix a = to_csr(w, m);
  EXPECT_EQ(a.nnz(), M * K - pruned_count(0.9, M * K));
  EXPECT_EQ(csr_to_dense(a).to_vector<float>(), masked(w, m).to_vector<float>());
  Tensor x = random_uniform(Shape{K, N}, 2);
  const auto want = ref::masked_matmul(w.to_vector<double>(), m.to_vector<uint8_t>(),
                                       x.to_vector<double>(), M, K, N);
  // f32 sums of at most K products of values in [-1, 1]: a few ulp of K.
  EXPECT_TRUE(all_close(spmm(a, x).to_vector<double>(), want, 1e-5, 1e-5));
  // f64: exact to double rounding.
  CsrMatrix a64 = to_csr(w.to(DType::kF64), m);
  EXPECT_TRUE(all_close(spmm(a64, x.to(DType::kF64)).to_vector<double>(), want, 1e-12, 1e-12));
  // CSR without a mask keeps the nonzeros.
  EXPECT_EQ(to_csr(masked(w, m)).nnz(), a.nnz());
}

TEST(PruneSparse, ThreadCountDoesNotChangeResult) {
  Tensor w = random_uniform(Shape{256, 128}, 3);
  CsrMatrix a = to_csr(w, magnitude_mask(w, 0.8));
  Tensor x = random_uniform(Shape{128, 64}, 4);
  ExecContext one{nullptr, 1, 0, 0}, two{nullptr, 2, 0, 0};
  EXPECT_EQ(spmm(a, x, one).to_vector<float>(), spmm(a, x, two).to_vector<float>());
}

TEST(PruneSparse, BsrRoundTripAndSpmm) {
  const int64_t M = 32, K = 48, N = 70;
  Tensor w = random_uniform(Shape{M, K}, 5);
  Tensor m = magnitude_mask(w, 0.95);
  BsrMatrix a = to_bsr(w, 4, 4, m);
  EXPECT_EQ(bsr_to_dense(a).to_vector<float>(), masked(w, m).to_vector<float>());
  Tensor x = random_uniform(Shape{K, N}, 6);
  const auto want = ref::masked_matmul(w.to_vector<double>(), m.to_vector<uint8_t>(),
                                       x.to_vector<double>(), M, K, N);
  // f32 sums of at most K products in [-1, 1].
  EXPECT_TRUE(all_close(spmm(a, x).to_vector<double>(), want, 1e-5, 1e-5));
  BsrMatrix b = to_bsr(w, 2, 8, m);
  EXPECT_EQ(bsr_to_dense(b).to_vector<float>(), masked(w, m).to_vector<float>());
}

TEST(PruneSparse, Compressed24) {
  const int64_t M = 40, K = 128, N = 100;
  Tensor w = random_uniform(Shape{M, K}, 7);
  Tensor m = nm_mask(magnitude_scores(w), 2, 4);
  Sparse24Matrix a = compress_24(w, m);
  EXPECT_EQ(a.values.shape(), (Shape{M, K / 2}));
  EXPECT_EQ(a.indices.shape(), (Shape{M, K / 8}));
  EXPECT_EQ(decompress_24(a).to_vector<float>(), masked(w, m).to_vector<float>());
  Tensor x = random_uniform(Shape{K, N}, 8);
  const auto want = ref::masked_matmul(w.to_vector<double>(), m.to_vector<uint8_t>(),
                                       x.to_vector<double>(), M, K, N);
  // f32 sums of K/2 products in [-1, 1].
  EXPECT_TRUE(all_close(spmm(a, x).to_vector<double>(), want, 1e-5, 1e-5));
  // 1:4 and sparser groups are padded with explicit zeros.
  Tensor m1 = nm_mask(magnitude_scores(w), 1, 4);
  Sparse24Matrix b = compress_24(w, m1);
  EXPECT_EQ(decompress_24(b).to_vector<float>(), masked(w, m1).to_vector<float>());
}

TEST(PruneSparse, BadInput) {
  Tensor w = random_uniform(Shape{8, 16}, 1);
  CsrMatrix a = to_csr(w);
  expect_error([&] { spmm(a, random_uniform(Shape{15, 4}, 2)); }, kInvalid, "spmm");
  expect_error([&] { spmm(a, random_uniform(Shape{16, 4}, 2).to(DType::kF64)); }, kInvalid, "spmm");
  expect_error([&] { spmm(a, random_uniform(Shape{16}, 2)); }, kInvalid, "spmm");
  expect_error([&] { to_csr(random_uniform(Shape{16}, 2)); }, kInvalid, "to_csr");
  expect_error([&] { to_csr(w, Tensor::zeros(Shape{8, 8}, DType::kU8)); }, kInvalid, "to_csr");
  expect_error([&] { to_bsr(w, 3, 4); }, kInvalid, "to_bsr");
  expect_error([&] { compress_24(w); }, kInvalid,
               "compress_24");  // dense: 4 of 4 kept
  expect_error([&] { compress_24(random_uniform(Shape{8, 12}, 3), {}); }, kInvalid, "compress_24");
  expect_error([&] { compress_24(w.to(DType::kF64), nm_mask(w, 2, 4)); }, kInvalid, "compress_24");
}

}  // namespace
}  // namespace frugal::prune
