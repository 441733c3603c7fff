// Scores and masks against sorting-based references (frugal/ref/prune.hpp).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "frugal/prune.hpp"
#include "frugal/ref/prune.hpp"
#include "support/check.hpp"
#include "support/tolerance.hpp"

namespace frugal::prune {
namespace {

using frugal::testing::expect_error;
using frugal::testing::random_uniform;

constexpr ErrorCode kInvalid = ErrorCode::kInvalidArgument;

std::vector<double> absd(const std::vector<double>& v) {
  std::vector<double> a(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) a[i] = std::abs(v[i]);
  return a;
}

TEST(PruneMask, MagnitudeMatchesSortingReference) {
  for (double s : {0.0, 0.1, 0.5, 0.9, 0.99}) {
    Tensor w = random_uniform(Shape{37, 53}, 7, -1.f, 1.f);
    Tensor m = magnitude_mask(w, s);
    ASSERT_EQ(m.dtype(), DType::kU8);
    const auto want = ref::prune_mask_sorted(absd(w.to_vector<double>()), pruned_count(s, 37 * 53));
    EXPECT_EQ(m.to_vector<uint8_t>(), want) << "sparsity " << s;
  }
}

TEST(PruneMask, ExactCountWithTies) {
  // Many equal scores: the count is exact and the lower index is pruned first.
  std::vector<float> v(1000);
  for (int i = 0; i < 1000; ++i) v[i] = static_cast<float>(i % 7);
  Tensor s = Tensor::from_vector<float>(v, Shape{1000});
  for (double sp : {0.3, 0.55, 0.77}) {
    Tensor m = unstructured_mask(s, sp);
    const auto mv = m.to_vector<uint8_t>();
    int64_t zeros = 0;
    for (auto b : mv) zeros += b == 0;
    EXPECT_EQ(zeros, std::llround(sp * 1000));
    std::vector<double> d(v.begin(), v.end());
    EXPECT_EQ(mv, ref::prune_mask_sorted(d, zeros));
  }
}

TEST(PruneMask, NegativeScoresF64AndStrided) {
  Tensor w = random_uniform(Shape{40, 30}, 3, -5.f, 5.f).to(DType::kF64);
  Tensor wt = w.t();  // strided view (30, 40)
  Tensor m = unstructured_mask(wt, 0.4);
  const auto want = ref::prune_mask_sorted(wt.contiguous().to_vector<double>(), 480);
  EXPECT_EQ(m.to_vector<uint8_t>(), want);
}

TEST(PruneMask, SingleThreadEqualsMultiThread) {
  Tensor w = random_uniform(Shape{512, 1024}, 11);
  ExecContext one;
  one.num_threads = 1;
  ExecContext two;
  two.num_threads = 2;
  EXPECT_EQ(magnitude_mask(w, 0.9, one).to_vector<uint8_t>(),
            magnitude_mask(w, 0.9, two).to_vector<uint8_t>());
}

TEST(PruneMask, GlobalThresholdIsKthLargest) {
  Tensor a = random_uniform(Shape{20, 30}, 1, -1.f, 1.f);
  Tensor b = random_uniform(Shape{50}, 2, -3.f, 3.f);
  Tensor c = random_uniform(Shape{4, 5, 6}, 3, -0.5f, 0.5f);
  std::vector<ConstTensorView> ws{a, b, c};
  const double s = 0.7;
  GlobalMask g = global_magnitude_masks(ws, s);
  std::vector<double> all;
  for (const Tensor* t : {&a, &b, &c}) {
    for (double x : t->to_vector<double>()) all.push_back(std::abs(x));
  }
  const int64_t n = static_cast<int64_t>(all.size());
  const int64_t k = std::llround(s * n);
  EXPECT_EQ(g.total, n);
  EXPECT_EQ(g.pruned, k);
  EXPECT_EQ(g.threshold, ref::kth_largest(all, n - k));
  const auto want = ref::prune_mask_sorted(all, k);
  std::vector<uint8_t> got;
  for (auto& m : g.masks) {
    auto v = m.to_vector<uint8_t>();
    got.insert(got.end(), v.begin(), v.end());
  }
  EXPECT_EQ(got, want);
  // Per-layer sparsities differ (the scales differ), but the total is exact.
  EXPECT_GT(mask_sparsity(g.masks[2]), mask_sparsity(g.masks[1]));
}

TEST(PruneMask, NmPropertyAndReference) {
  for (auto [n, m] : {std::pair{2, 4}, std::pair{1, 4}, std::pair{3, 8}, std::pair{5, 16}}) {
    Tensor w = random_uniform(Shape{16, 64}, 5, -1.f, 1.f);
    Tensor sc = magnitude_scores(w);
    Tensor mk = nm_mask(sc, n, m);
    EXPECT_TRUE(is_nm_sparse(mk, n, m));
    const auto mv = mk.to_vector<uint8_t>();
    for (std::size_t g = 0; g < mv.size(); g += m) {
      int kept = 0;
      for (int i = 0; i < m; ++i) kept += mv[g + i];
      ASSERT_EQ(kept, n);  // exactly n kept per group
    }
    EXPECT_EQ(mv, ref::nm_mask_sorted(sc.to_vector<double>(), n, m));
  }
  // Ties: the lower index is kept.
  Tensor t = Tensor::from_vector<float>({1, 1, 1, 1, 0, 2, 2, 2}, Shape{8});
  EXPECT_EQ(nm_mask(t, 2, 4).to_vector<uint8_t>(), (std::vector<uint8_t>{1, 1, 0, 0, 0, 1, 1, 0}));
}

TEST(PruneMask, PermutationSearchKeepsMoreMagnitude) {
  // Columns built so that the identity grouping puts two large columns together.
  Tensor w = random_uniform(Shape{8, 16}, 9, 0.f, 0.1f);
  std::vector<float> v = w.to_vector<float>();
  for (int r = 0; r < 8; ++r) {
    for (int c : {0, 1, 2, 3}) v[r * 16 + c] += 1.0f;  // group 0 holds four large columns
  }
  Tensor s = Tensor::from_vector<float>(v, Shape{8, 16});
  Permutation p = nm_permutation_search(s, 2, 4);
  EXPECT_GT(p.kept_after, p.kept_before + 1.0);
  Tensor mk = nm_mask_permuted(s, p.perm, 2, 4);
  EXPECT_TRUE(is_nm_sparse(permute_columns(mk, p.perm), 2, 4));
  // kept_after equals the kept score of the returned mask (independent sum here).
  const auto mv = mk.to_vector<uint8_t>();
  double kept = 0.0;
  for (std::size_t i = 0; i < v.size(); ++i) kept += mv[i] ? v[i] : 0.0;
  EXPECT_NEAR(kept, p.kept_after, 1e-4);  // float scores summed in double in another order
}

TEST(PruneScore, RowNormsAndTaylor) {
  Tensor w = Tensor::from_vector<double>({3, -4, 0, 1, -1, 1, 1, -1}, Shape{2, 2, 2});
  EXPECT_EQ(row_norm_scores(w, Norm::kL1).to_vector<double>(), (std::vector<double>{8, 4}));
  EXPECT_EQ(row_norm_scores(w, Norm::kL2).to_vector<double>(),
            (std::vector<double>{std::sqrt(26.0), 2}));
  TaylorAccumulator acc;
  Tensor g1 = Tensor::full(Shape{2, 2, 2}, 0.5, DType::kF64);
  Tensor g2 = Tensor::full(Shape{2, 2, 2}, -1.0, DType::kF64);
  acc.accumulate(w, g1);
  acc.accumulate(w, g2);
  EXPECT_EQ(acc.count(), 2);
  EXPECT_EQ(acc.scores().to_vector<double>(),
            (std::vector<double>{4.5, 6, 0, 1.5, 1.5, 1.5, 1.5, 1.5}));
  EXPECT_EQ(acc.row_scores().to_vector<double>(), (std::vector<double>{12, 6}));
  Tensor r1 = random_scores(Shape{100}, Device::cpu(), ExecContext{nullptr, 0, 42, 0});
  Tensor r2 = random_scores(Shape{100}, Device::cpu(), ExecContext{nullptr, 0, 42, 0});
  EXPECT_EQ(r1.to_vector<float>(), r2.to_vector<float>());
}

TEST(PruneMask, ApplyMask) {
  Tensor w = Tensor::from_vector<float>({1, -2, 3, -4}, Shape{2, 2});
  Tensor m = magnitude_mask(w, 0.5);
  apply_mask(w, m);
  EXPECT_EQ(w.to_vector<float>(), (std::vector<float>{0, 0, 3, -4}));
}

TEST(PruneMask, BadInput) {
  Tensor w = random_uniform(Shape{4, 8}, 1);
  expect_error([&] { magnitude_mask(w, 1.0); }, kInvalid, "magnitude_mask");
  expect_error([&] { magnitude_mask(w, -0.1); }, kInvalid, "magnitude_mask");
  expect_error([&] { magnitude_mask(w.to(DType::kI32), 0.5); }, kInvalid, "magnitude_mask");
  expect_error([&] { magnitude_mask(Tensor::empty(Shape{0}), 0.5); }, kInvalid, "magnitude_mask");
  std::vector<float> nanv(32, 1.f);
  nanv[5] = std::numeric_limits<float>::quiet_NaN();
  Tensor nan = Tensor::from_vector<float>(nanv, Shape{4, 8});
  expect_error([&] { unstructured_mask(nan, 0.5); }, kInvalid, "unstructured_mask");
  expect_error([&] { nm_mask(nan, 2, 4); }, kInvalid, "nm_mask");
  expect_error([&] { nm_mask(w, 4, 4); }, kInvalid, "nm_mask");
  expect_error([&] { nm_mask(w, 2, 17); }, kInvalid, "nm_mask");
  expect_error([&] { nm_mask(w, 2, 3); }, kInvalid,
               "nm_mask");  // 8 not divisible by 3
  std::vector<ConstTensorView> mixed{w, w.to(DType::kF64)};
  expect_error([&] { global_magnitude_masks(mixed, 0.5); }, kInvalid, "global_magnitude_masks");
  expect_error([&] { global_magnitude_masks({}, 0.5); }, kInvalid, "global_magnitude_masks");
  expect_error(
      [&] {
        apply_mask(w, Tensor::zeros(Shape{4, 4}, DType::kU8));
      },
      kInvalid, "apply_mask");
  expect_error([&] { row_norm_scores(Tensor::zeros(Shape{4})); }, kInvalid, "row_norm_scores");
  TaylorAccumulator acc;
  expect_error([&] { acc.scores(); }, kInvalid, "TaylorAccumulator::scores");
  expect_error(
      [&] {
        acc.accumulate(w, Tensor::zeros(Shape{4, 4}));
      },
      kInvalid, "TaylorAccumulator::accumulate");
}

}  // namespace
}  // namespace frugal::prune
