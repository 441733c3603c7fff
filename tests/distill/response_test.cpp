// Response KD on the CPU: closed forms (identical logits, the large-T limit, k = C), the double
// reference, finite differences in double, huge logits, thread-count invariance and bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "distill_test_util.hpp"
#include "frugal/ref/distill.hpp"

namespace frugal::distill {
namespace {

// A renormalised top-k teacher from its values and indices.
TopKLogits topk_logits(Tensor values, Tensor indices) {
  TopKLogits t;
  t.values = std::move(values);
  t.indices = std::move(indices);
  return t;
}

using frugal::testing::all_close;
using testing::expect_error;
using testing::labels_of;
using testing::numeric_grad;
using testing::random_f64;
using testing::threads;

TEST(KdLoss, IdenticalLogitsGiveZeroLossAndGradient) {
  for (DType dt : {DType::kF32, DType::kF64}) {
    const Tensor z = frugal::testing::random_uniform({5, 37}, 3, -20.f, 20.f).to(dt);
    const KdResult r = kd_loss(z, z, 4.0);
    // KL(p || p) = 0; the kernel's terms cancel exactly, allow one rounding anyway.
    EXPECT_NEAR(r.loss, 0.0, 1e-12);
    EXPECT_TRUE(all_close(r.grad_student, Tensor::zeros({5, 37}, DType::kF64), 0.0, 1e-12));
  }
}

TEST(KdLoss, MatchesReferenceInDouble) {
  for (double temp : {1.0, 2.5, 4.0}) {
    const Tensor s = random_f64({7, 19}, 1, -5.f, 5.f);
    const Tensor t = random_f64({7, 19}, 2, -5.f, 5.f);
    const KdResult r = kd_loss(s, t, temp);
    const ref::DistillRef want = ref::kd_loss(s, t, Tensor(), Tensor(), temp, 1.0);
    // Double arithmetic in both; different summation orders.
    EXPECT_NEAR(r.loss, want.loss, 1e-12 * std::max(1.0, want.loss));
    EXPECT_TRUE(all_close(r.grad_student, want.grad, 1e-11, 1e-14));
  }
}

TEST(KdLoss, MatchesReferenceInFloat) {
  // 1000 classes (not a multiple of the 16 lanes plus a tail is covered by 1003).
  for (int64_t c : {1000, 1003}) {
    const Tensor s = frugal::testing::random_uniform({33, c}, 5, -8.f, 8.f);
    const Tensor t = frugal::testing::random_uniform({33, c}, 6, -8.f, 8.f);
    const KdResult r = kd_loss(s, t, 4.0);
    const ref::DistillRef want = ref::kd_loss(s, t, Tensor(), Tensor(), 4.0, 1.0);
    // f32 exponentials (1 ulp) and lane sums of ~60 terms: a few 1e-6 relative.
    EXPECT_NEAR(r.loss, want.loss, 1e-5 * want.loss);
    EXPECT_TRUE(all_close(r.grad_student, want.grad, 1e-4, 1e-9));
  }
}

TEST(KdLoss, GradientMatchesFiniteDifferences) {
  Tensor s = random_f64({4, 6}, 7, -3.f, 3.f);
  const Tensor t = random_f64({4, 6}, 8, -3.f, 3.f);
  const Tensor y = labels_of({0, 5, 2, 2});
  for (double alpha : {1.0, 0.3, 0.0}) {
    const KdResult r = kd_loss(s, t, y, 2.0, alpha);
    const Tensor fd =
        numeric_grad(s, [&] { return ref::kd_loss(s, t, Tensor(), y, 2.0, alpha).loss; });
    // Central differences at h = 1e-5 in double: ~1e-10 truncation and rounding.
    EXPECT_TRUE(all_close(r.grad_student, fd, 1e-6, 1e-9)) << "alpha " << alpha;
    const ref::DistillRef want = ref::kd_loss(s, t, Tensor(), y, 2.0, alpha);
    EXPECT_NEAR(r.kd, want.kd, 1e-12);  // double, different order
    EXPECT_NEAR(r.ce, want.ce, 1e-12);
    EXPECT_NEAR(r.loss, want.loss, 1e-12);
  }
}

TEST(KdLoss, LargeTemperatureLimit) {
  // For T -> inf, T^2 KL(q || p) -> (1 / (2C)) |(s - mean s) - (t - mean t)|^2 per row, and the
  // gradient T (p - q) / N -> ((s - mean s) - (t - mean t)) / (C N); the relative error is O(1/T).
  const int64_t n = 3, c = 10;
  const Tensor s = random_f64({n, c}, 11, -2.f, 2.f);
  const Tensor t = random_f64({n, c}, 12, -2.f, 2.f);
  const auto sv = s.to_vector<double>(), tv = t.to_vector<double>();
  double want = 0.0;
  std::vector<double> want_grad(static_cast<std::size_t>(n * c));
  for (int64_t i = 0; i < n; ++i) {
    double ms = 0, mt = 0;
    for (int64_t j = 0; j < c; ++j) {
      ms += sv[i * c + j] / c;
      mt += tv[i * c + j] / c;
    }
    for (int64_t j = 0; j < c; ++j) {
      const double d = (sv[i * c + j] - ms) - (tv[i * c + j] - mt);
      want += d * d / (2.0 * c) / n;
      want_grad[i * c + j] = d / (c * n);
    }
  }
  const KdResult r = kd_loss(s, t, 1e4);
  // O(1/T) = 1e-4 from the expansion; logits of size 2 make the constant a few units.
  EXPECT_NEAR(r.loss, want, 2e-3 * want);
  EXPECT_TRUE(all_close(r.grad_student.to_vector<double>(), want_grad, 2e-3, 1e-9));
}

TEST(KdLoss, HugeLogitsAreStable) {
  const Tensor s32 = frugal::testing::random_uniform({4, 50}, 21, -1e4f, 1e4f);
  const Tensor t32 = frugal::testing::random_uniform({4, 50}, 22, -1e4f, 1e4f);
  const ref::DistillRef want = ref::kd_loss(s32, t32, Tensor(), Tensor(), 1.0, 1.0);
  const KdResult r64 = kd_loss(s32.to(DType::kF64), t32.to(DType::kF64), 1.0);
  ASSERT_TRUE(std::isfinite(r64.loss));
  // Exponents reach -2e4: every term is exact in double up to rounding of logits of 1e4.
  EXPECT_NEAR(r64.loss, want.loss, 1e-9 * want.loss);
  const KdResult r32 = kd_loss(s32, t32, 1.0);
  ASSERT_TRUE(std::isfinite(r32.loss));
  // In f32, (s - max) / T of size 1e4 carries an absolute error of ~1e-3 per logit.
  EXPECT_NEAR(r32.loss, want.loss, 1e-5 * want.loss);
  EXPECT_TRUE(all_close(r32.grad_student, want.grad, 1e-2, 1e-3));
}

TEST(KdLoss, TopKWithAllClassesEqualsFullLoss) {
  const Tensor s = random_f64({5, 12}, 31, -4.f, 4.f);
  const Tensor t = random_f64({5, 12}, 32, -4.f, 4.f);
  const Tensor y = labels_of({1, 2, 3, 4, 11});
  const TopKLogits tk = topk_teacher(t, 12);
  const KdResult full = kd_loss(s, t, y, 3.0, 0.6);
  const KdResult top = kd_loss_topk(s, tk, y, 3.0, 0.6);
  // Same terms in another order, double.
  EXPECT_NEAR(top.loss, full.loss, 1e-12);
  EXPECT_TRUE(all_close(top.grad_student, full.grad_student, 1e-12, 1e-15));
}

TEST(KdLoss, TopKRenormalisesOverTheStoredClasses) {
  Tensor s = random_f64({4, 9}, 41, -3.f, 3.f);
  const Tensor t = random_f64({4, 9}, 42, -3.f, 3.f);
  const Tensor y = labels_of({0, 8, 4, 4});
  const TopKLogits tk = topk_teacher(t, 3);
  // Hand check of one row: q = softmax(top-3 values / T) placed at their indices.
  const auto v = tk.values.to_vector<double>();
  const auto iv = tk.indices.to_vector<int64_t>();
  const auto tv = t.to_vector<double>();
  for (int j = 0; j < 3; ++j) EXPECT_EQ(v[j], tv[iv[j]]);
  const KdResult r = kd_loss_topk(s, tk, y, 2.0, 0.7);
  const ref::DistillRef want = ref::kd_loss(s, tk.values, tk.indices, y, 2.0, 0.7);
  EXPECT_NEAR(r.loss, want.loss, 1e-12);  // double, different order
  EXPECT_TRUE(all_close(r.grad_student, want.grad, 1e-11, 1e-14));
  const Tensor fd =
      numeric_grad(s, [&] { return ref::kd_loss(s, tk.values, tk.indices, y, 2.0, 0.7).loss; });
  EXPECT_TRUE(all_close(r.grad_student, fd, 1e-6, 1e-9));  // central differences, h = 1e-5
  // f32 top-k against the same reference.
  const KdResult r32 = kd_loss_topk(
      s.to(DType::kF32), topk_logits(tk.values.to(DType::kF32), tk.indices), y, 2.0, 0.7);
  EXPECT_NEAR(r32.loss, want.loss, 1e-5 * want.loss);  // f32 rounding of logits and exps
  EXPECT_TRUE(all_close(r32.grad_student, want.grad, 1e-4, 1e-7));
}

TEST(KdLoss, ResultDoesNotDependOnThreadCount) {
  const Tensor s = frugal::testing::random_uniform({300, 257}, 51, -6.f, 6.f);
  const Tensor t = frugal::testing::random_uniform({300, 257}, 52, -6.f, 6.f);
  const Tensor y = Tensor::from_vector(std::vector<int64_t>(300, 7), {300});
  const KdResult a = kd_loss(s, t, y, 4.0, 0.5, threads(1));
  const KdResult b = kd_loss(s, t, y, 4.0, 0.5, threads(2));
  EXPECT_EQ(a.loss, b.loss);
  EXPECT_TRUE(frugal::testing::all_equal(a.grad_student, b.grad_student));
}

TEST(KdLoss, EmptyBatchGivesZero) {
  const KdResult r = kd_loss(Tensor::zeros({0, 5}), Tensor::zeros({0, 5}), 2.0);
  EXPECT_EQ(r.loss, 0.0);
  EXPECT_EQ(r.grad_student.shape(), (Shape{0, 5}));
}

TEST(KdLoss, BadInput) {
  const Tensor s = random_f64({3, 4}, 61);
  const Tensor t = random_f64({3, 4}, 62);
  const Tensor y = labels_of({0, 1, 2});
  const auto inv = ErrorCode::kInvalidArgument;
  expect_error([&] { kd_loss(s, t, 0.0); }, inv, "kd_loss");
  expect_error([&] { kd_loss(s, t, -1.0); }, inv, "kd_loss");
  expect_error([&] { kd_loss(s, t, std::nan("")); }, inv, "kd_loss");
  expect_error([&] { kd_loss(s, random_f64({3, 5}, 1), 1.0); }, inv, "kd_loss");
  expect_error([&] { kd_loss(s, random_f64({2, 4}, 1), 1.0); }, inv, "kd_loss");
  expect_error([&] { kd_loss(random_f64({12}, 1), random_f64({12}, 2), 1.0); }, inv, "kd_loss");
  expect_error([&] { kd_loss(s, t.to(DType::kF32), 1.0); }, inv, "kd_loss");
  expect_error([&] { kd_loss(s.to(DType::kI32), t.to(DType::kI32), 1.0); }, inv, "kd_loss");
  expect_error([&] { kd_loss(Tensor::zeros({3, 0}), Tensor::zeros({3, 0}), 1.0); }, inv, "kd_loss");
  expect_error([&] { kd_loss(s, t, y, 1.0, 1.5); }, inv, "kd_loss");
  expect_error([&] { kd_loss(s, t, y, 1.0, -0.1); }, inv, "kd_loss");
  expect_error([&] { kd_loss(s, t, labels_of({0, 4, 1}), 1.0, 0.5); }, inv, "kd_loss");
  expect_error([&] { kd_loss(s, t, labels_of({0, -1, 1}), 1.0, 0.5); }, inv, "kd_loss");
  expect_error([&] { kd_loss(s, t, labels_of({0, 1}), 1.0, 0.5); }, inv, "kd_loss");
  expect_error([&] { kd_loss(s, t, y.to(DType::kI32), 1.0, 0.5); }, inv, "kd_loss");
  expect_error([&] { kd_loss(s, t, Tensor(), 1.0, 0.5); }, inv, "kd_loss");
  for (DType dt : {DType::kF32, DType::kF64}) {
    for (double bad : {std::nan(""), std::numeric_limits<double>::infinity()}) {
      auto with_bad = [&](const Tensor& x, int64_t at) {
        auto v = x.to_vector<double>();
        v[static_cast<std::size_t>(at)] = bad;
        return Tensor::from_vector(v, x.shape()).to(dt);
      };
      // The error names the first bad row: row 1 for the student, row 2 for the teacher.
      for (int which = 0; which < 2; ++which) {
        try {
          if (which == 0) kd_loss(with_bad(s, 6), t.to(dt), 1.0);
          if (which == 1) kd_loss(s.to(dt), with_bad(t, 9), 1.0);
          ADD_FAILURE() << "NaN / Inf logits accepted";
        } catch (const Error& e) {
          EXPECT_EQ(e.code(), inv);
          EXPECT_EQ(std::string(e.what()).rfind("[kd_loss] NaN or Inf", 0), 0u) << e.what();
          EXPECT_NE(std::string(e.what()).find(which == 0 ? "row 1" : "row 2"), std::string::npos)
              << e.what();
        }
      }
    }
  }
  const TopKLogits tk = topk_teacher(t, 2);
  expect_error([&] { kd_loss_topk(s, TopKLogits{}, 1.0); }, inv, "kd_loss_topk");
  expect_error([&] { kd_loss_topk(s, topk_logits(tk.values, tk.indices.to(DType::kI32)), 1.0); },
               inv, "kd_loss_topk");
  expect_error([&] { kd_loss_topk(s, topk_logits(tk.values, tk.indices.slice(1, 0, 1)), 1.0); },
               inv, "kd_loss_topk");
  expect_error(
      [&] {
        kd_loss_topk(s,
                     topk_logits(tk.values, Tensor::from_vector(
                                                std::vector<int64_t>{0, 1, 2, 9, 0, 1}, {3, 2})),
                     1.0);
      },
      inv, "kd_loss_topk");
  expect_error(
      [&] {
        kd_loss_topk(s, topk_logits(random_f64({3, 5}, 1), tk.indices), 1.0);
      },
      inv, "kd_loss_topk");
  expect_error([&] { topk_teacher(t, 0); }, inv, "topk_teacher");
  expect_error([&] { topk_teacher(t, 5); }, inv, "topk_teacher");
  expect_error([&] { topk_teacher(random_f64({4}, 1), 1); }, inv, "topk_teacher");
}

TEST(KdLoss, HalfAndBfloat16LogitsGoThroughF32) {
  const Tensor s = frugal::testing::random_uniform({9, 37}, 121, -6.f, 6.f);
  const Tensor t = frugal::testing::random_uniform({9, 37}, 122, -6.f, 6.f);
  const Tensor y = labels_of({0, 1, 2, 3, 4, 5, 6, 36, 20});
  for (DType dt : {DType::kF16, DType::kBF16}) {
    // The low-precision logits, widened exactly to f32: the reference inputs.
    const Tensor sl = s.to(dt), tl = t.to(dt);
    const Tensor s32 = sl.to(DType::kF32), t32 = tl.to(DType::kF32);
    const KdResult want = kd_loss(s32, t32, y, 2.0, 0.6);
    const KdResult r = kd_loss(sl, tl, y, 2.0, 0.6);
    EXPECT_EQ(r.loss, want.loss);  // the same f32 kernel on the same values
    ASSERT_EQ(r.grad_student.dtype(), dt);
    // The gradient is the f32 one rounded to dt (exact for the reference's conversion).
    EXPECT_TRUE(frugal::testing::all_equal(r.grad_student, want.grad_student.to(dt)));
    Tensor buf = Tensor::zeros({9, 37}, dt);
    const KdResult ri = kd_loss_into(sl, tl, y, 2.0, 0.6, buf.view());
    EXPECT_EQ(ri.loss, want.loss);
    EXPECT_TRUE(frugal::testing::all_equal(buf, want.grad_student.to(dt)));
    TopKLogits tk = topk_teacher(t32, 5);
    const KdResult wk = kd_loss_topk(s32, tk, 2.0);
    tk.values = tk.values.to(dt);
    EXPECT_EQ(kd_loss_topk(sl, tk, 2.0).loss, wk.loss);  // values are exact in dt
    const auto inv = ErrorCode::kInvalidArgument;
    expect_error([&] { kd_loss(sl, t32, 2.0); }, inv, "kd_loss");  // mixed dtypes
    Tensor bad = Tensor::zeros({9, 37});
    expect_error([&] { kd_loss_into(sl, tl, y, 2.0, 0.6, bad.view()); }, inv, "kd_loss_into");
    auto v = s.to_vector<float>();
    v[40] = std::numeric_limits<float>::infinity();  // row 1
    expect_error(
        [&] {
          kd_loss(Tensor::from_vector(v, {9, 37}).to(dt), tl, 2.0);
        },
        inv, "kd_loss", "row 1");
  }
}

// ---- top-k teacher with a uniform tail -------------------------------------------------------

/// Independent reference of the uniform-tail loss: the teacher distribution q (N, C) written out
/// in full (q_c = exp(t_c / T - lse) at the top-k classes, the rest of the mass spread evenly over
/// the others), then alpha T^2 KL(q || p) + (1 - alpha) CE as plain double loops.
double uniform_tail_reference(const Tensor& s, const Tensor& t, int64_t k, const Tensor& y,
                              double temp, double alpha) {
  const int64_t n = s.dim(0), c = s.dim(1);
  const auto sv = s.to(DType::kF64).to_vector<double>();
  const auto tv = t.to(DType::kF64).to_vector<double>();
  const auto yv = y.defined() ? y.to_vector<int64_t>() : std::vector<int64_t>{};
  double kd = 0.0, ce = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double* si = sv.data() + i * c;
    const double* ti = tv.data() + i * c;
    double lse_t = 0.0, lse_s = 0.0, lse_s1 = 0.0;
    for (int64_t j = 0; j < c; ++j) {
      lse_t += std::exp(ti[j] / temp);
      lse_s += std::exp(si[j] / temp);
      lse_s1 += std::exp(si[j]);
    }
    lse_t = std::log(lse_t);
    lse_s = std::log(lse_s);
    lse_s1 = std::log(lse_s1);
    // The k largest teacher logits (ties by lower index, as core topk).
    std::vector<int64_t> order(static_cast<std::size_t>(c));
    for (int64_t j = 0; j < c; ++j) order[j] = j;
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return ti[a] > ti[b]; });
    std::vector<double> q(static_cast<std::size_t>(c), 0.0);
    double stored = 0.0;
    for (int64_t r = 0; r < k; ++r) {
      q[order[r]] = std::exp(ti[order[r]] / temp - lse_t);
      stored += q[order[r]];
    }
    for (int64_t r = k; r < c; ++r) q[order[r]] = (1.0 - stored) / static_cast<double>(c - k);
    for (int64_t j = 0; j < c; ++j) {
      if (q[j] > 0.0) kd += q[j] * (std::log(q[j]) - (si[j] / temp - lse_s));
    }
    if (!yv.empty()) ce += lse_s1 - si[yv[i]];
  }
  kd *= temp * temp / static_cast<double>(n);
  ce /= static_cast<double>(n);
  return yv.empty() ? kd : alpha * kd + (1.0 - alpha) * ce;
}

TEST(KdLossTopKUniform, MatchesTheWrittenOutDistribution) {
  Tensor s = random_f64({6, 11}, 71, -3.f, 3.f);
  const Tensor t = random_f64({6, 11}, 72, -3.f, 3.f);
  const Tensor y = labels_of({0, 10, 4, 4, 7, 1});
  for (int64_t k : {1, 3, 10}) {
    const TopKLogits tk = topk_teacher(t, k, 2.0);
    EXPECT_EQ(tk.tail, TopKTail::kUniform);
    EXPECT_EQ(tk.lse_temperature, 2.0);
    const KdResult r = kd_loss_topk(s, tk, y, 2.0, 0.7);
    const double want = uniform_tail_reference(s, t, k, y, 2.0, 0.7);
    EXPECT_NEAR(r.loss, want, 1e-12 * std::max(1.0, want)) << "k " << k;  // double, other order
    // The gradient against central differences of the reference (h = 1e-5, double).
    const Tensor fd = numeric_grad(s, [&] { return uniform_tail_reference(s, t, k, y, 2.0, 0.7); });
    EXPECT_TRUE(all_close(r.grad_student, fd, 1e-6, 1e-9)) << "k " << k;
    // ... and of the kernel's own loss, without labels.
    const KdResult r1 = kd_loss_topk(s, tk, 2.0);
    const Tensor fd1 = numeric_grad(s, [&] { return kd_loss_topk(s, tk, 2.0).loss; });
    EXPECT_TRUE(all_close(r1.grad_student, fd1, 1e-6, 1e-9)) << "k " << k;
  }
}

TEST(KdLossTopKUniform, AllClassesEqualsFullLoss) {
  const Tensor s = random_f64({5, 12}, 81, -4.f, 4.f);
  const Tensor t = random_f64({5, 12}, 82, -4.f, 4.f);
  const Tensor y = labels_of({1, 2, 3, 4, 11});
  const KdResult full = kd_loss(s, t, y, 3.0, 0.6);
  const KdResult top = kd_loss_topk(s, topk_teacher(t, 12, 3.0), y, 3.0, 0.6);
  // Same terms in another order (the stored mass is 1 to rounding), double.
  EXPECT_NEAR(top.loss, full.loss, 1e-12);
  EXPECT_TRUE(all_close(top.grad_student, full.grad_student, 1e-12, 1e-15));
}

TEST(KdLossTopKUniform, EqualTailLogitsGiveTheFullLoss) {
  // A teacher whose C - k tail logits are all equal: the uniform tail is then its exact
  // distribution, so the loss equals kd_loss against the full teacher. f64 and f32.
  const int64_t n = 4, c = 37, k = 5;
  auto tv = random_f64({n, c}, 91, -1.f, 1.f).to_vector<double>();
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < c; ++j) {
      const bool top = (j * 7 + i) % c < k;  // k scattered classes per row
      tv[i * c + j] = top ? 3.0 + tv[i * c + j] : -0.5;
    }
  }
  const Tensor s = random_f64({n, c}, 92, -3.f, 3.f);
  const Tensor t = Tensor::from_vector(tv, {n, c});
  const Tensor y = labels_of({0, 5, 36, 9});
  for (double temp : {1.0, 4.0}) {
    const KdResult full = kd_loss(s, t, y, temp, 0.8);
    const KdResult top = kd_loss_topk(s, topk_teacher(t, k, temp), y, temp, 0.8);
    EXPECT_NEAR(top.loss, full.loss, 1e-12 * std::max(1.0, full.loss));  // double, other order
    EXPECT_TRUE(all_close(top.grad_student, full.grad_student, 1e-10, 1e-15));
    // The renormalised variant drops the tail: a different loss here.
    EXPECT_GT(std::abs(kd_loss_topk(s, topk_teacher(t, k), y, temp, 0.8).loss - full.loss), 1e-3);
    const Tensor s32 = s.to(DType::kF32), t32 = t.to(DType::kF32);
    const KdResult top32 = kd_loss_topk(s32, topk_teacher(t32, k, temp), y, temp, 0.8);
    // f32 logits and exponentials (1 ulp), sums in double.
    EXPECT_NEAR(top32.loss, full.loss, 1e-5 * full.loss);
    EXPECT_TRUE(all_close(top32.grad_student, full.grad_student, 1e-4, 1e-7));
  }
}

TEST(KdLossTopKUniform, ResultDoesNotDependOnThreadCount) {
  const Tensor s = frugal::testing::random_uniform({300, 257}, 101, -6.f, 6.f);
  const Tensor t = frugal::testing::random_uniform({300, 257}, 102, -6.f, 6.f);
  const TopKLogits tk = topk_teacher(t, 20, 2.0);
  const KdResult a = kd_loss_topk(s, tk, 2.0, threads(1));
  const KdResult b = kd_loss_topk(s, tk, 2.0, threads(2));
  EXPECT_EQ(a.loss, b.loss);
  EXPECT_TRUE(frugal::testing::all_equal(a.grad_student, b.grad_student));
}

TEST(KdLossTopKUniform, BadInput) {
  const Tensor s = random_f64({3, 4}, 111);
  const Tensor t = random_f64({3, 4}, 112);
  const auto inv = ErrorCode::kInvalidArgument;
  const TopKLogits tk = topk_teacher(t, 2, 2.0);
  // Another temperature than the lse's: a clear error naming both.
  try {
    kd_loss_topk(s, tk, 4.0);
    ADD_FAILURE() << "T mismatch accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), inv);
    const std::string w = e.what();
    EXPECT_EQ(w.rfind("[kd_loss_topk]", 0), 0u) << w;
    EXPECT_NE(w.find("T = 2"), std::string::npos) << w;
    EXPECT_NE(w.find("T = 4"), std::string::npos) << w;
  }
  TopKLogits no_lse = tk;
  no_lse.lse = Tensor();
  expect_error([&] { kd_loss_topk(s, no_lse, 2.0); }, inv, "kd_loss_topk");
  TopKLogits bad = tk;
  bad.lse = tk.lse.to(DType::kF32);
  expect_error([&] { kd_loss_topk(s, bad, 2.0); }, inv, "kd_loss_topk");
  bad.lse = random_f64({2}, 1);
  expect_error([&] { kd_loss_topk(s, bad, 2.0); }, inv, "kd_loss_topk");
  bad.lse = random_f64({3, 1}, 1);
  expect_error([&] { kd_loss_topk(s, bad, 2.0); }, inv, "kd_loss_topk");
  bad.lse = Tensor::from_vector(std::vector<double>{0.0, std::nan(""), 0.0}, {3});
  try {
    kd_loss_topk(s, bad, 2.0);
    ADD_FAILURE() << "NaN lse accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("[kd_loss_topk] NaN or Inf", 0), 0u) << e.what();
    EXPECT_NE(std::string(e.what()).find("row 1"), std::string::npos) << e.what();
  }
  expect_error([&] { topk_teacher(t, 2, 0.0); }, inv, "topk_teacher");
  expect_error([&] { topk_teacher(t, 2, std::nan("")); }, inv, "topk_teacher");
  expect_error([&] { topk_teacher(t, 5, 1.0); }, inv, "topk_teacher");
  auto tv = t.to_vector<double>();
  tv[9] = std::numeric_limits<double>::infinity();  // row 2
  try {
    topk_teacher(Tensor::from_vector(tv, {3, 4}), 2, 1.0);
    ADD_FAILURE() << "Inf logits accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("[topk_teacher] NaN or Inf", 0), 0u) << e.what();
    EXPECT_NE(std::string(e.what()).find("row 2"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace frugal::distill
