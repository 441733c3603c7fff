// Pooling on the CPU: max / average pooling forward and backward against the scalar references
// (ref::), argmax ties and NaN, finite differences in double through the layers, global average
// pooling against its closed form, thread-count determinism and bad input.
#include "frugal/nn/pool.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "frugal/ref/nn_pool.hpp"
#include "support/check.hpp"
#include "support/tolerance.hpp"

namespace frugal {
namespace {

using nn::Pool2dParams;
using testing::all_close;
using testing::all_equal;
using testing::expect_error;
using testing::random_uniform;

constexpr ErrorCode kInvalid = ErrorCode::kInvalidArgument;

struct PoolCase {
  Shape x;
  Pool2dParams p;
};

// Non-overlapping, overlapping (stride < kernel: backward sums), padded, non-square, strided,
// and a window that covers the whole plane.
const std::vector<PoolCase> kCases = {
    {Shape{2, 3, 8, 8}, {2, 0, 0}},
    {Shape{2, 3, 7, 6}, {3, 1, 1}},
    {Shape{1, 2, 9, 7}, {{3, 2}, {2, 1}, {1, 0}}},
    {Shape{2, 2, 9, 9}, {3, 2, 1}},
    {Shape{3, 1, 5, 6}, {{2, 4}, {3, 1}, {1, 2}}},
    {Shape{2, 4, 5, 5}, {5, 1, 0}},
    {Shape{1, 1, 4, 4}, {4, 0, 2}},
};

std::string describe(const PoolCase& c) {
  return detail::concat(c.x, " k", c.p.kernel.h, "x", c.p.kernel.w, " s", c.p.stride.h, ",",
                        c.p.stride.w, " p", c.p.padding.h, ",", c.p.padding.w);
}

void check_against_ref(DType dt, double tol) {
  for (const PoolCase& c : kCases) {
    SCOPED_TRACE(describe(c));
    const Tensor x = random_uniform(c.x, 3).to(dt);
    const auto mx = nn::max_pool2d(x, c.p);
    const auto mr = ref::max_pool2d(x, c.p);
    EXPECT_TRUE(all_equal(mx.output, mr.output));  // a max is exact
    EXPECT_TRUE(all_equal(mx.indices, mr.indices));
    const Tensor dy = random_uniform(mx.output.shape(), 4).to(dt);
    EXPECT_TRUE(all_close(nn::max_pool2d_backward(dy, mx.indices, c.x, c.p),
                          ref::max_pool2d_backward(dy, x, c.p), tol, tol));
    for (bool include : {true, false}) {
      SCOPED_TRACE(include ? "count_include_pad" : "exclude pad");
      EXPECT_TRUE(
          all_close(nn::avg_pool2d(x, c.p, include), ref::avg_pool2d(x, c.p, include), tol, tol));
      EXPECT_TRUE(all_close(nn::avg_pool2d_backward(dy, c.x, c.p, include),
                            ref::avg_pool2d_backward(dy, c.x, c.p, include), tol, tol));
    }
  }
}

TEST(Pool2d, MatchesReferenceF64) {
  // Sums of at most 25 terms in a different order: rounding ~1e-16.
  check_against_ref(DType::kF64, 1e-14);
}

TEST(Pool2d, MatchesReferenceF32) {
  // f32 results of double sums (rounded once) plus f32 accumulation in backward: ~1e-7.
  check_against_ref(DType::kF32, 1e-6);
}

TEST(Pool2d, MaxTiesTakeFirstIndexAndNanPropagates) {
  std::vector<float> v(16, 1.f);
  v[5] = std::numeric_limits<float>::quiet_NaN();
  const Tensor x = Tensor::from_vector(v, Shape{1, 1, 4, 4});
  const auto r = nn::max_pool2d(x, {2, 0, 0});
  const auto idx = r.indices.to_vector<int64_t>();
  const auto y = r.output.to_vector<float>();
  EXPECT_EQ(idx, (std::vector<int64_t>{5, 2, 8, 10}));  // window 0 holds the NaN at 5
  EXPECT_TRUE(std::isnan(y[0]));
  EXPECT_EQ(y[1], 1.f);
  // Padding never wins, even against negative values.
  const Tensor neg = Tensor::full(Shape{1, 1, 2, 2}, -3.0);
  const auto rn = nn::max_pool2d(neg, {2, 1, 1});
  for (float f : rn.output.to_vector<float>()) EXPECT_EQ(f, -3.f);
  EXPECT_EQ(rn.indices.to_vector<int64_t>()[0], 0);
}

/// Bits of element i of a host tensor of float type T.
template <class T>
auto bits_at(const Tensor& t, int64_t i) {
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  U u;
  std::memcpy(&u, t.data<T>() + i, sizeof(T));
  return u;
}

template <class T>
void check_max_bits(DType dt) {
  // Wide planes (16+ output columns: full vectors and remainders of the vectorised row loop),
  // strides 1, 2 and 3 (the compile-time and the run-time stride paths), padding on both sides.
  const std::vector<PoolCase> cases = {
      {Shape{2, 3, 9, 70}, {3, 1, 1}},
      {Shape{2, 2, 8, 64}, {2, 2, 0}},
      {Shape{1, 3, 11, 53}, {3, 2, 1}},
      {Shape{2, 2, 7, 50}, {{2, 4}, {1, 3}, {1, 2}}},
      {Shape{1, 2, 6, 37}, {{3, 5}, {2, 2}, {1, 2}}},
      {Shape{3, 1, 5, 5}, {5, 1, 0}},
  };
  std::mt19937 rng(17);
  for (const PoolCase& c : cases) {
    SCOPED_TRACE(describe(c));
    // Values from {-2, -1, -0, +0, 1, 2} (many ties, signed zeros) and a few NaNs of distinct
    // payloads, so the first-index and first-NaN rules decide most windows.
    Tensor x = Tensor::empty(c.x, dt);
    T* p = x.data<T>();
    for (int64_t i = 0; i < x.numel(); ++i) {
      const int r = static_cast<int>(rng() % 64);
      if (r == 0) {
        p[i] = std::numeric_limits<T>::quiet_NaN();
        auto u = bits_at<T>(x, i) | static_cast<decltype(bits_at<T>(x, i))>(i % 251);
        std::memcpy(p + i, &u, sizeof(T));
      } else {
        const T vals[6] = {T(-2), T(-1), T(-0.0), T(0), T(1), T(2)};
        p[i] = vals[r % 6];
      }
    }
    const auto mx = nn::max_pool2d(x, c.p);
    const auto mr = ref::max_pool2d(x, c.p);
    ASSERT_EQ(mx.indices.to_vector<int64_t>(), mr.indices.to_vector<int64_t>());
    // Every output is the input element at its index, bit for bit (NaN payload, sign of zero).
    const auto idx = mx.indices.to_vector<int64_t>();
    const int64_t plane_out = mx.output.shape()[2] * mx.output.shape()[3];
    const int64_t plane_in = c.x[2] * c.x[3];
    for (int64_t k = 0; k < mx.output.numel(); ++k) {
      const int64_t src = (k / plane_out) * plane_in + idx[static_cast<std::size_t>(k)];
      ASSERT_EQ(bits_at<T>(mx.output, k), bits_at<T>(x, src)) << "output " << k;
    }
    // Thread count changes nothing.
    const auto m1 = nn::max_pool2d(x, c.p, testing::threads(1));
    EXPECT_TRUE(testing::same_bits(m1.output, mx.output));
    EXPECT_TRUE(testing::same_bits(m1.indices, mx.indices));
  }
}

TEST(Pool2d, MaxMatchesReferenceBitsOnTiesSignedZerosAndNans) {
  check_max_bits<float>(DType::kF32);
  check_max_bits<double>(DType::kF64);
}

/// x with distinct values spaced 0.01 apart (shuffled), so max pooling is differentiable with
/// a margin far above the finite-difference step.
Tensor distinct_values(Shape s, uint32_t seed) {
  std::vector<double> v(static_cast<std::size_t>(s.numel()));
  std::iota(v.begin(), v.end(), 0.0);
  for (double& d : v) d *= 0.01;
  std::shuffle(v.begin(), v.end(), std::mt19937(seed));
  return Tensor::from_vector(v, s);
}

template <class Layer>
void check_layer_fd(Layer& layer, Shape xs) {
  Tensor x = distinct_values(xs, 9);
  const Tensor y = layer.forward(x);
  const Tensor r = random_uniform(y.shape(), 10).to(DType::kF64);
  const auto g = layer.backward(r).template to_vector<double>();
  const auto rv = r.to_vector<double>();
  auto loss = [&] {
    const auto yv = layer.forward(x).template to_vector<double>();
    double s = 0;
    for (std::size_t i = 0; i < yv.size(); ++i) s += yv[i] * rv[i];
    return s;
  };
  double* p = x.data<double>();
  const double h = 1e-5;  // far below the 0.01 gap between values: no argmax changes
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double keep = p[i];
    p[i] = keep + h;
    const double lp = loss();
    p[i] = keep - h;
    const double lm = loss();
    p[i] = keep;
    // Piecewise linear loss: central differences exact up to rounding ~1e-16 |L| / h.
    EXPECT_NEAR(g[static_cast<std::size_t>(i)], (lp - lm) / (2 * h), 1e-8) << "element " << i;
  }
}

TEST(Pool2d, FiniteDifferences) {
  nn::MaxPool2d mp(3, 2, 1);
  check_layer_fd(mp, Shape{2, 2, 7, 6});
  nn::AvgPool2d ap(3, 2, 1, true);
  check_layer_fd(ap, Shape{2, 2, 7, 6});
  nn::AvgPool2d ap2({2, 3}, {1, 2}, {1, 1}, false);
  check_layer_fd(ap2, Shape{1, 3, 5, 6});
  nn::GlobalAvgPool2d gp;
  check_layer_fd(gp, Shape{2, 3, 4, 5});
}

TEST(Pool2d, GlobalAveragePoolClosedForm) {
  const Tensor x = random_uniform(Shape{3, 4, 5, 6}, 12).to(DType::kF64);
  const Tensor y = nn::global_avg_pool2d(x);
  ASSERT_EQ(y.shape(), (Shape{3, 4}));
  const auto xv = x.to_vector<double>();
  const auto yv = y.to_vector<double>();
  for (int64_t pl = 0; pl < 12; ++pl) {
    double s = 0;
    for (int64_t i = 0; i < 30; ++i) s += xv[static_cast<std::size_t>(pl * 30 + i)];
    EXPECT_NEAR(yv[static_cast<std::size_t>(pl)], s / 30, 1e-15);  // double: rounding only
  }
  const Tensor dy = random_uniform(Shape{3, 4}, 13).to(DType::kF64);
  const auto dx = nn::global_avg_pool2d_backward(dy, x.shape()).to_vector<double>();
  const auto dyv = dy.to_vector<double>();
  for (int64_t i = 0; i < x.numel(); ++i) {
    EXPECT_DOUBLE_EQ(dx[static_cast<std::size_t>(i)], dyv[static_cast<std::size_t>(i / 30)] / 30);
  }
}

TEST(Pool2d, LayersMatchFunctional) {
  const Tensor x = random_uniform(Shape{2, 3, 6, 6}, 14);
  nn::MaxPool2d mp(2);
  EXPECT_TRUE(all_equal(mp.forward(x), nn::max_pool2d(x, {2, 2, 0}).output));
  EXPECT_EQ(mp.type_name(), "MaxPool2d");
  EXPECT_EQ(mp.num_parameters(), 0);
  nn::AvgPool2d ap(3, 1, 1, false);
  EXPECT_TRUE(all_equal(ap.forward(x), nn::avg_pool2d(x, {3, 1, 1}, false)));
}

TEST(Pool2d, ThreadCountDoesNotChangeResults) {
  const Tensor x = random_uniform(Shape{8, 16, 12, 12}, 15);
  const Pool2dParams p{3, 2, 1};
  auto run = [&](int threads) {
    ExecContext ctx;
    ctx.num_threads = threads;
    const auto m = nn::max_pool2d(x, p, ctx);
    const Tensor dy = random_uniform(m.output.shape(), 16);
    return std::vector<Tensor>{
        m.output, m.indices, nn::max_pool2d_backward(dy, m.indices, x.shape(), p, ctx),
        nn::avg_pool2d(x, p, true, ctx), nn::avg_pool2d_backward(dy, x.shape(), p, true, ctx)};
  };
  const auto a = run(1), b = run(2);
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(all_equal(a[i], b[i])) << i;
}

TEST(Pool2d, BadInput) {
  const Tensor x = Tensor::zeros(Shape{2, 3, 6, 6});
  expect_error([&] { nn::max_pool2d(Tensor::zeros(Shape{3, 6, 6}), {2}); }, kInvalid, "max_pool2d");
  expect_error([&] { nn::max_pool2d(x.to(DType::kI32), {2}); }, kInvalid, "max_pool2d");
  expect_error([&] { nn::max_pool2d(x.to(DType::kBF16), {2}); }, kInvalid, "max_pool2d");
  expect_error([&] { nn::max_pool2d(x, {2, 1, 2}); }, kInvalid, "max_pool2d");  // pad > kernel / 2
  expect_error([&] { nn::max_pool2d(x, {7}); }, kInvalid, "max_pool2d");        // kernel > input
  expect_error([&] { nn::max_pool2d(x, {0}); }, kInvalid, "max_pool2d");
  expect_error([&] { nn::max_pool2d(x, {2, -1}); }, kInvalid, "max_pool2d");
  expect_error(
      [&] {
        nn::max_pool2d(Tensor::zeros(Shape{2, 0, 6, 6}), {2});
      },
      kInvalid, "max_pool2d");
  expect_error([&] { nn::avg_pool2d(x, {3, 1, 2}); }, kInvalid, "avg_pool2d");
  const auto m = nn::max_pool2d(x, {2});
  expect_error([&] { nn::max_pool2d_backward(m.output, m.output, x.shape(), {2}); }, kInvalid,
               "max_pool2d_backward");  // f32 indices
  expect_error(
      [&] {
        nn::max_pool2d_backward(Tensor::zeros(Shape{2, 3, 2, 3}), m.indices, x.shape(), {2});
      },
      kInvalid, "max_pool2d_backward");
  expect_error(
      [&] {
        nn::avg_pool2d_backward(Tensor::zeros(Shape{2, 3, 3, 2}), x.shape(), {2});
      },
      kInvalid, "avg_pool2d_backward");
  expect_error(
      [&] {
        nn::global_avg_pool2d(Tensor::zeros(Shape{2, 3, 6}));
      },
      kInvalid, "global_avg_pool2d");
  expect_error(
      [&] {
        nn::global_avg_pool2d_backward(Tensor::zeros(Shape{2, 4}), x.shape());
      },
      kInvalid, "global_avg_pool2d_backward");
  nn::MaxPool2d mp(2);
  expect_error([&] { mp.backward(m.output); }, kInvalid, "MaxPool2d");
  expect_error([] { nn::MaxPool2d(0); }, kInvalid, "MaxPool2d");
  expect_error([] { nn::AvgPool2d(2, -1); }, kInvalid, "AvgPool2d");
  nn::GlobalAvgPool2d gp;
  expect_error([&] { gp.backward(Tensor::zeros(Shape{2, 3})); }, kInvalid, "GlobalAvgPool2d");
}

}  // namespace
}  // namespace frugal
