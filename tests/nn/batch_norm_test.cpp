// BatchNorm2d on the CPU: training and evaluation forward against the double reference
// (ref::), the running-statistics update against a hand computation, backward against the
// chain-rule reference and finite differences in double, thread-count determinism, bad input.
#include "frugal/nn/batch_norm.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "frugal/ref/nn_batch_norm.hpp"
#include "support/check.hpp"
#include "support/tolerance.hpp"

namespace frugal {
namespace {

using testing::all_close;
using testing::all_equal;
using testing::expect_error;
using testing::random_uniform;

constexpr ErrorCode kInvalid = ErrorCode::kInvalidArgument;

/// (N, C, H, W) values with a per-channel offset, so |mean| differs from the spread.
Tensor make_input(Shape s, uint32_t seed, DType dt) {
  auto v = random_uniform(s, seed, -2.f, 2.f).to_vector<double>();
  const int64_t hw = s[2] * s[3];
  for (std::size_t k = 0; k < v.size(); ++k) v[k] += 3.0 * static_cast<double>((k / hw) % s[1]);
  return Tensor::from_vector(v, s).to(dt);
}

TEST(BatchNorm2d, RunningStatisticsByHand) {
  // Channel 0 holds 1, 2, 3, 4 and channel 1 holds 0, 0, 2, 2 (N = 2, H = 1, W = 2).
  const Tensor x =
      Tensor::from_vector(std::vector<double>{1, 2, 0, 0, 3, 4, 2, 2}, Shape{2, 2, 1, 2});
  nn::BatchNorm2d bn(2, 1e-5, 0.1, true, DType::kF64);
  const Tensor y = bn.forward(x);
  // mean (2.5, 1); unbiased variance (5/3, 4/3); running = 0.9 * (0, 1) + 0.1 * batch.
  const auto rm = bn.running_mean().to_vector<double>();
  const auto rv = bn.running_var().to_vector<double>();
  EXPECT_NEAR(rm[0], 0.25, 1e-15);
  EXPECT_NEAR(rm[1], 0.1, 1e-15);
  EXPECT_NEAR(rv[0], 0.9 + 0.1 * 5.0 / 3.0, 1e-15);
  EXPECT_NEAR(rv[1], 0.9 + 0.1 * 4.0 / 3.0, 1e-15);
  // Normalised with the biased variance 1.25: (1 - 2.5) / sqrt(1.25 + 1e-5).
  EXPECT_NEAR(y.to_vector<double>()[0], -1.5 / std::sqrt(1.25 + 1e-5), 1e-14);
  // A second step moves the running mean again: 0.9 * 0.25 + 0.1 * 2.5.
  bn.forward(x);
  EXPECT_NEAR(bn.running_mean().to_vector<double>()[0], 0.475, 1e-15);
  // Evaluation leaves the running statistics alone and normalises with them.
  bn.eval();
  const Tensor ye = bn.forward(x);
  EXPECT_NEAR(bn.running_mean().to_vector<double>()[0], 0.475, 1e-15);
  const double rv0 = bn.running_var().to_vector<double>()[0];
  EXPECT_NEAR(ye.to_vector<double>()[0], (1 - 0.475) / std::sqrt(rv0 + 1e-5), 1e-14);
}

void check_train_against_ref(DType dt, double tol) {
  const Shape s{3, 4, 5, 6};
  const Tensor x = make_input(s, 1, dt);
  const Tensor w = random_uniform(Shape{4}, 2, 0.5f, 1.5f).to(dt);
  const Tensor b = random_uniform(Shape{4}, 3).to(dt);
  Tensor rm = random_uniform(Shape{4}, 4).to(dt);
  Tensor rv = random_uniform(Shape{4}, 5, 0.5f, 2.f).to(dt);
  const auto want = ref::batch_norm2d_train(x, w, b, rm, rv, 0.2, 1e-3);
  const auto got = nn::batch_norm2d(x, w, b, rm, rv, true, 0.2, 1e-3);
  EXPECT_TRUE(all_close(got.output, want.output, tol, tol));
  EXPECT_TRUE(all_close(got.mean, want.mean, tol, tol));
  auto inv = want.var.to_vector<double>();
  for (double& v : inv) v = 1 / std::sqrt(v + 1e-3);
  EXPECT_TRUE(all_close(got.invstd.to_vector<double>(), inv, tol, tol));
  EXPECT_TRUE(all_close(rm, want.running_mean, tol, tol));
  EXPECT_TRUE(all_close(rv, want.running_var, tol, tol));

  const Tensor dy = random_uniform(s, 6).to(dt);
  Tensor gw = Tensor::full(Shape{4}, 1.0, dt), gb = Tensor::zeros(Shape{4}, dt);
  const Tensor dx = nn::batch_norm2d_backward(dy, x, w, got.mean, got.invstd, true, gw, gb);
  const auto gref = ref::batch_norm2d_train_backward(dy, x, w, 1e-3);
  EXPECT_TRUE(all_close(dx, gref.dx, tol, tol));
  auto gw_want = gref.dweight.to_vector<double>();
  for (double& v : gw_want) v += 1.0;  // accumulated onto ones
  EXPECT_TRUE(all_close(gw.to_vector<double>(), gw_want, tol, tol));
  EXPECT_TRUE(all_close(gb, gref.dbias, tol, tol));
}

TEST(BatchNorm2d, TrainingMatchesReferenceF64) {
  // Double everywhere: rounding of sums over 90 values, ~1e-14.
  check_train_against_ref(DType::kF64, 1e-12);
}

TEST(BatchNorm2d, TrainingMatchesReferenceF32) {
  // f32 inputs, double statistics, f32 saved mean / invstd (relative 6e-8) amplified by
  // |x - mean| * invstd <= ~4: ~1e-6.
  check_train_against_ref(DType::kF32, 2e-5);
}

TEST(BatchNorm2d, EvalMatchesReference) {
  const Tensor x = make_input(Shape{2, 3, 4, 4}, 7, DType::kF64);
  const Tensor w = random_uniform(Shape{3}, 8).to(DType::kF64);
  const Tensor b = random_uniform(Shape{3}, 9).to(DType::kF64);
  Tensor rm = random_uniform(Shape{3}, 10).to(DType::kF64);
  Tensor rv = random_uniform(Shape{3}, 11, 0.5f, 2.f).to(DType::kF64);
  const Tensor rm0 = rm.clone(), rv0 = rv.clone();
  const auto got = nn::batch_norm2d(x, w, b, rm, rv, false, 0.1, 1e-5);
  EXPECT_TRUE(all_close(got.output, ref::batch_norm2d_eval(x, w, b, rm0, rv0, 1e-5), 1e-14,
                        1e-14));  // double: a few roundings
  EXPECT_TRUE(all_equal(rm, rm0));
  EXPECT_TRUE(all_equal(rv, rv0));
  // Evaluation backward treats the statistics as constants: dx = dy gamma / sqrt(rv + eps).
  const Tensor dy = random_uniform(x.shape(), 12).to(DType::kF64);
  const Tensor dx = nn::batch_norm2d_backward(dy, x, w, got.mean, got.invstd, false, {}, {});
  const Tensor zeros = Tensor::zeros(Shape{3}, DType::kF64);
  EXPECT_TRUE(all_close(dx, ref::batch_norm2d_eval(dy, w, zeros, zeros, rv0, 1e-5), 1e-14,
                        1e-14));  // double: a few roundings
}

/// Central differences of L = sum(y * r) through the layer, in double.
void check_fd(nn::BatchNorm2d& bn, Shape xs) {
  Tensor x = make_input(xs, 13, DType::kF64);
  const Tensor y0 = bn.forward(x);
  const Tensor r = random_uniform(y0.shape(), 14).to(DType::kF64);
  bn.zero_grad();
  const Tensor dx = bn.backward(r);
  // Keep the running statistics out of the way: FD evaluations must not change the function
  // (evaluation mode reads them; training mode only writes them).
  auto loss = [&] {
    const auto y = bn.forward(x).to_vector<double>();
    const auto rv = r.to_vector<double>();
    double s = 0;
    for (std::size_t i = 0; i < y.size(); ++i) s += y[i] * rv[i];
    return s;
  };
  const double h = 1e-5;
  auto fd = [&](Tensor& t, const Tensor& grad, const char* what) {
    SCOPED_TRACE(what);
    double* p = t.data<double>();
    const auto g = grad.to_vector<double>();
    for (int64_t i = 0; i < t.numel(); ++i) {
      const double keep = p[i];
      p[i] = keep + h;
      const double lp = loss();
      p[i] = keep - h;
      const double lm = loss();
      p[i] = keep;
      // Smooth loss: central-difference error O(h^2 |L'''|) ~1e-9 plus rounding ~1e-11.
      EXPECT_NEAR(g[static_cast<std::size_t>(i)], (lp - lm) / (2 * h), 1e-7) << "element " << i;
    }
  };
  fd(x, dx, "input");
  if (bn.weight() != nullptr) {
    fd(bn.weight()->value, bn.weight()->grad, "weight");
    fd(bn.bias()->value, bn.bias()->grad, "bias");
  }
}

TEST(BatchNorm2d, FiniteDifferencesTraining) {
  nn::BatchNorm2d bn(3, 1e-5, 0.1, true, DType::kF64);
  // Non-trivial gamma and beta so their gradients matter in dx.
  bn.weight()->value = random_uniform(Shape{3}, 15, 0.5f, 1.5f).to(DType::kF64);
  bn.bias()->value = random_uniform(Shape{3}, 16).to(DType::kF64);
  check_fd(bn, Shape{2, 3, 3, 2});
  nn::BatchNorm2d plain(2, 1e-3, 0.1, false, DType::kF64);
  check_fd(plain, Shape{4, 2, 1, 1});
}

TEST(BatchNorm2d, FiniteDifferencesEval) {
  nn::BatchNorm2d bn(3, 1e-5, 0.1, true, DType::kF64);
  bn.weight()->value = random_uniform(Shape{3}, 17, 0.5f, 1.5f).to(DType::kF64);
  bn.running_mean() = random_uniform(Shape{3}, 18).to(DType::kF64);
  bn.running_var() = random_uniform(Shape{3}, 19, 0.5f, 2.f).to(DType::kF64);
  bn.eval();
  check_fd(bn, Shape{2, 3, 2, 2});
}

TEST(BatchNorm2d, ThreadCountDoesNotChangeResults) {
  const Tensor x = make_input(Shape{8, 16, 10, 10}, 20, DType::kF32);
  const Tensor w = random_uniform(Shape{16}, 21);
  const Tensor b = random_uniform(Shape{16}, 22);
  const Tensor dy = random_uniform(x.shape(), 23);
  auto run = [&](int threads) {
    ExecContext ctx;
    ctx.num_threads = threads;
    Tensor rm = Tensor::zeros(Shape{16}), rv = Tensor::full(Shape{16}, 1.0);
    const auto r = nn::batch_norm2d(x, w, b, rm, rv, true, 0.1, 1e-5, ctx);
    Tensor gw = Tensor::zeros(Shape{16}), gb = Tensor::zeros(Shape{16});
    const Tensor dx = nn::batch_norm2d_backward(dy, x, w, r.mean, r.invstd, true, gw, gb, ctx);
    return std::vector<Tensor>{r.output, r.mean, r.invstd, rm, rv, dx, gw, gb};
  };
  const auto a = run(1), b2 = run(2);
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(all_equal(a[i], b2[i])) << i;
}

TEST(BatchNorm2d, LayerRegistry) {
  nn::BatchNorm2d bn(5);
  EXPECT_EQ(bn.num_parameters(), 10);
  const auto bufs = bn.named_buffers();
  ASSERT_EQ(bufs.size(), 2u);
  EXPECT_EQ(bufs[0].name, "running_mean");
  EXPECT_EQ(bufs[1].name, "running_var");
  EXPECT_TRUE(all_equal(bn.weight()->value, Tensor::full(Shape{5}, 1.0)));
  EXPECT_TRUE(all_equal(bn.running_var(), Tensor::full(Shape{5}, 1.0)));
  nn::BatchNorm2d plain(5, 1e-5, 0.1, false);
  EXPECT_EQ(plain.num_parameters(), 0);
  EXPECT_EQ(plain.weight(), nullptr);
}

TEST(BatchNorm2d, BadInput) {
  const Tensor x = Tensor::zeros(Shape{2, 3, 4, 4});
  Tensor rm = Tensor::zeros(Shape{3}), rv = Tensor::full(Shape{3}, 1.0);
  const Tensor w = Tensor::full(Shape{3}, 1.0);
  expect_error(
      [&] {
        nn::batch_norm2d(Tensor::zeros(Shape{2, 3, 4}), w, {}, rm, rv, true);
      },
      kInvalid, "batch_norm2d");
  expect_error([&] { nn::batch_norm2d(x, Tensor::zeros(Shape{4}), {}, rm, rv, true); }, kInvalid,
               "batch_norm2d");
  expect_error([&] { nn::batch_norm2d(x, w.to(DType::kF64), {}, rm, rv, true); }, kInvalid,
               "batch_norm2d");
  expect_error([&] { nn::batch_norm2d(x.to(DType::kF16), {}, {}, {}, {}, true); }, kInvalid,
               "batch_norm2d");
  expect_error([&] { nn::batch_norm2d(x, w, {}, {}, {}, false); }, kInvalid, "batch_norm2d");
  expect_error(
      [&] {
        nn::batch_norm2d(Tensor::zeros(Shape{1, 3, 1, 1}), w, {}, rm, rv, true);
      },
      kInvalid, "batch_norm2d");  // one value per channel
  expect_error([&] { nn::batch_norm2d(x, w, {}, rm, rv, true, 1.5); }, kInvalid, "batch_norm2d");
  expect_error([&] { nn::batch_norm2d(x, w, {}, rm, rv, true, 0.1, -1.0); }, kInvalid,
               "batch_norm2d");
  const auto r = nn::batch_norm2d(x, w, {}, rm, rv, true);
  expect_error(
      [&] {
        nn::batch_norm2d_backward(Tensor::zeros(Shape{2, 3, 4, 5}), x, w, r.mean, r.invstd, true,
                                  {}, {});
      },
      kInvalid, "batch_norm2d_backward");
  expect_error([&] { nn::batch_norm2d_backward(x, x, w, {}, r.invstd, true, {}, {}); }, kInvalid,
               "batch_norm2d_backward");
  nn::BatchNorm2d bn(3);
  expect_error([&] { bn.backward(x); }, kInvalid, "BatchNorm2d");
  expect_error([&] { bn.forward(Tensor::zeros(Shape{2, 4, 4, 4})); }, kInvalid, "BatchNorm2d");
  expect_error([&] { bn.forward(Tensor::zeros(Shape{2, 3, 4})); }, kInvalid, "BatchNorm2d");
  expect_error([] { nn::BatchNorm2d(0); }, kInvalid, "BatchNorm2d");
  expect_error([] { nn::BatchNorm2d(3, 1e-5, 2.0); }, kInvalid, "BatchNorm2d");
  expect_error([] { nn::BatchNorm2d(3, 1e-5, 0.1, true, DType::kI32); }, kInvalid, "BatchNorm2d");
}

}  // namespace
}  // namespace frugal
