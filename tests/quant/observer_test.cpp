// Calibration observers on distributions whose answers are known independently: hand-computed
// min/max and moving averages, the percentile of a known sequence, the MSE-optimal clipping of a
// Gaussian by numerical integration in double, entropy / MSE thresholds of uniform data, and
// merge(a, b) == observe(a ∪ b).
#include "frugal/quant/observer.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <barrier>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace frugal::quant {
namespace {

Tensor vec(const std::vector<float>& v) {
  return Tensor::from_vector(v, {static_cast<int64_t>(v.size())});
}

std::vector<float> gaussian(int64_t n, uint32_t seed, double sigma = 1.0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> d(0.0, sigma);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<float>(d(rng));
  return v;
}

std::vector<float> uniform(int64_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

QuantSpec sym(int bits) {
  QuantSpec s;
  s.bits = bits;
  return s;
}

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

TEST(Observer, MinMaxRunningAndMerged) {
  MinMaxObserver o;
  o.observe(vec({0.5f, -2.f, 3.f}));
  o.observe(vec({-1.f, 1.f}).to(DType::kF64));
  EXPECT_EQ(o.min(), -2.f);
  EXPECT_EQ(o.max(), 3.f);
  MinMaxObserver a, b;
  a.observe(vec({4.f, 5.f}));
  b.observe(vec({-7.f, 0.f}));
  a.merge(b);
  EXPECT_EQ(a.min(), -7.f);
  EXPECT_EQ(a.max(), 5.f);
  // qparams hands [min, max] to compute_qparams unchanged.
  const QParams p = o.qparams(sym(8));
  const QParams want =
      compute_qparams(Tensor::full({}, -2.0).cview(), Tensor::full({}, 3.0).cview(), sym(8));
  EXPECT_EQ(p.scale.to_vector<float>(), want.scale.to_vector<float>());
  EXPECT_EQ(p.zero_point.to_vector<int32_t>(), want.zero_point.to_vector<int32_t>());
  o.reset();
  EXPECT_FALSE(o.has_data());
}

TEST(Observer, MovingAverageRecurrenceByHand) {
  MovingAverageMinMaxObserver o;  // c = 0.01
  o.observe(vec({-1.f, 2.f}));
  o.observe(vec({-3.f, 4.f}));
  o.observe(vec({0.f, 1.f}));
  // min: -1 -> -1 + 0.01 (-3 + 1) = -1.02 -> -1.02 + 0.01 (0 + 1.02) = -1.0098
  // max:  2 ->  2 + 0.01 (4 - 2)  =  2.02 ->  2.02 + 0.01 (1 - 2.02) =  2.0098
  EXPECT_NEAR(o.min(), -1.0098, 1e-12);  // double recurrence, a few ulps
  EXPECT_NEAR(o.max(), 2.0098, 1e-12);
  MovingAverageMinMaxObserver b;
  b.observe(vec({-3.f, 6.f}));
  o.merge(b);  // average of the two running ranges
  EXPECT_NEAR(o.min(), 0.5 * (-1.0098 - 3.0), 1e-12);
  EXPECT_NEAR(o.max(), 0.5 * (2.0098 + 6.0), 1e-12);
  expect_invalid([] { MovingAverageMinMaxObserver bad(0.0); }, "MovingAverageMinMaxObserver");
}

TEST(Observer, PerChannelMinMax) {
  // x (2, 3, 2): channel c along axis 1 holds values c*10 + {0..3} and a negative outlier in c=2.
  std::vector<float> x(12);
  for (int o = 0; o < 2; ++o)
    for (int c = 0; c < 3; ++c)
      for (int i = 0; i < 2; ++i) x[(o * 3 + c) * 2 + i] = static_cast<float>(c * 10 + o * 2 + i);
  x[(1 * 3 + 2) * 2 + 1] = -5.f;
  const Tensor t = Tensor::from_vector(x, {2, 3, 2});
  PerChannelMinMaxObserver o(1), neg(-2);
  o.observe(t);
  neg.observe(t);
  EXPECT_EQ(o.min(), (std::vector<float>{0.f, 10.f, -5.f}));
  EXPECT_EQ(o.max(), (std::vector<float>{3.f, 13.f, 22.f}));
  EXPECT_EQ(neg.min(), o.min());
  // Strided view: the transpose observed along axis 2 gives the same channels.
  PerChannelMinMaxObserver tr(2);
  tr.observe(t.transpose(1, 2));
  EXPECT_EQ(tr.min(), o.min());
  EXPECT_EQ(tr.max(), o.max());
  // merge == observe of both.
  PerChannelMinMaxObserver a(1), b(1), both(1);
  const Tensor u = Tensor::from_vector(uniform(30, 1, -4.f, 4.f), {5, 3, 2});
  a.observe(t);
  b.observe(u);
  both.observe(t);
  both.observe(u);
  a.merge(b);
  EXPECT_EQ(a.min(), both.min());
  EXPECT_EQ(a.max(), both.max());
  QuantSpec pc = sym(8);
  pc.granularity = Granularity::kPerChannel;
  pc.axis = 1;
  EXPECT_EQ(o.qparams(pc).scale.shape(), (Shape{3}));
  expect_invalid([&] { o.qparams(sym(8)); }, "qparams");                       // per-tensor spec
  expect_invalid([&] { o.observe(Tensor::zeros({2, 4, 2})); }, "observe");     // channel count
  expect_invalid([&] { PerChannelMinMaxObserver(3).observe(t); }, "observe");  // axis range
}

TEST(Observer, PercentileOfKnownSequence) {
  // 0, 1/n, ..., (n-1)/n shuffled: the p-th percentile (numpy's linear rule) is p/100 (n-1)/n;
  // the histogram resolves it to one bin, R / 2048 = 1 / 2048.
  const int64_t n = 100000;
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>(i) / n;
  std::shuffle(v.begin(), v.end(), std::mt19937(4));
  for (double p : {50.0, 99.0, 99.99}) {
    PercentileObserver o(p);
    o.observe(vec(std::vector<float>(v.begin(), v.begin() + n / 2)));
    o.observe(vec(std::vector<float>(v.begin() + n / 2, v.end())));
    const double want = p / 100.0 * static_cast<double>(n - 1) / n;
    EXPECT_NEAR(o.threshold(sym(8)), want, 1.0 / 2048) << p;
  }
  PercentileObserver o(100.0);
  o.observe(vec(v));
  EXPECT_NEAR(o.threshold(sym(8)), static_cast<double>(n - 1) / n, 1.0 / 2048);
  expect_invalid([] { PercentileObserver(0.0); }, "PercentileObserver");
  expect_invalid([] { PercentileObserver(100.5); }, "PercentileObserver");
}

// E[(x - Q_c(x))^2] for x ~ N(0, 1), by the midpoint rule on [-12, 12] in double. Q_c is the
// symmetric quantizer qparams.hpp documents: scale = c / ((qmax - qmin) / 2), zero point 0,
// codes clamp(rint(x / scale), qmin, qmax).
double gaussian_mse(double c, int bits) {
  const double qmin = -std::ldexp(1.0, bits - 1), qmax = std::ldexp(1.0, bits - 1) - 1;
  const double s = c / ((qmax - qmin) / 2);
  const double h = 1e-3;
  double e = 0;
  for (double x = -12 + h / 2; x < 12; x += h) {
    const double q = std::clamp(std::nearbyint(x / s), qmin, qmax) * s;
    e += (x - q) * (x - q) * std::exp(-0.5 * x * x);
  }
  return e * h / std::sqrt(2 * M_PI);
}

// argmin over c of gaussian_mse, golden-section search on [1, 8] after a coarse scan.
double gaussian_optimal_clip(int bits) {
  double best = 1, best_e = 1e300;
  for (double c = 1.0; c <= 8.0; c += 0.05) {
    const double e = gaussian_mse(c, bits);
    if (e < best_e) {
      best_e = e;
      best = c;
    }
  }
  double lo = best - 0.05, hi = best + 0.05;
  for (int it = 0; it < 30; ++it) {
    const double m1 = lo + (hi - lo) * 0.382, m2 = lo + (hi - lo) * 0.618;
    if (gaussian_mse(m1, bits) < gaussian_mse(m2, bits)) {
      hi = m2;
    } else {
      lo = m1;
    }
  }
  return 0.5 * (lo + hi);
}

TEST(Observer, MseClippingOfGaussianMatchesIntegration) {
  const std::vector<float> x = gaussian(1 << 21, 9);
  MseObserver o;
  o.observe(vec(x));
  for (int bits : {4, 8}) {
    const double opt = gaussian_optimal_clip(bits);
    const double got = o.threshold(sym(bits));
    const double e_opt = gaussian_mse(opt, bits), e_got = gaussian_mse(got, bits);
    // Sampling (2M points), the 1%-of-max grid and bin-center errors move the argmin of a flat
    // curve; what matters is the error reached: within 2% (4 bit) / 5% (8 bit) of the optimum.
    EXPECT_LE(e_got, e_opt * (bits == 4 ? 1.02 : 1.05))
        << bits << " bits: got " << got << " opt " << opt;
    EXPECT_NEAR(got, opt, bits == 4 ? 0.15 : 0.6) << bits << " bits";
  }
}

TEST(Observer, UniformDataThresholdsNearMax) {
  const std::vector<float> x = uniform(1 << 20, 2, -1.f, 1.f);
  const double amax = *std::max_element(
      x.begin(), x.end(), [](float a, float b) { return std::fabs(a) < std::fabs(b); });
  EntropyObserver e;
  MseObserver m;
  e.observe(vec(x));
  m.observe(vec(x));
  // Uniform data has no tail to cut: both keep (almost) the whole range.
  EXPECT_GE(e.threshold(sym(8)), 0.97 * std::fabs(amax));
  EXPECT_GE(m.threshold(sym(8)), 0.97 * std::fabs(amax));
  // Gaussian data: entropy clips well inside the max (TensorRT's behaviour for 8 bit).
  EntropyObserver g;
  g.observe(vec(gaussian(1 << 20, 3)));
  const double t = g.threshold(sym(8));
  EXPECT_GT(t, 2.0);
  EXPECT_LT(t, g.max());
}

TEST(Observer, HistogramMergeEqualsObserveOfUnion) {
  const std::vector<float> a = uniform(5000, 5, -1.f, 1.f);
  const std::vector<float> b = uniform(7000, 6, -90.f, 70.f);
  std::vector<float> ab = a;
  ab.insert(ab.end(), b.begin(), b.end());
  EntropyObserver oa, ob, seq, once;
  oa.observe(vec(a));
  ob.observe(vec(b));
  seq.observe(vec(a));
  seq.observe(vec(b));
  once.observe(vec(ab));
  oa.merge(ob);
  for (const HistogramObserver* o :
       {static_cast<const HistogramObserver*>(&oa), static_cast<const HistogramObserver*>(&seq)}) {
    EXPECT_EQ(o->signed_histogram(), once.signed_histogram());
    EXPECT_EQ(o->range_exp(), once.range_exp());
    EXPECT_EQ(o->count(), once.count());
    EXPECT_EQ(o->min(), once.min());
    EXPECT_EQ(o->max(), once.max());
    EXPECT_EQ(o->threshold(sym(8)), once.threshold(sym(8)));
  }
  // Counts add up and every element lands in one bin.
  const std::vector<int64_t> h = once.abs_histogram();
  EXPECT_EQ(std::accumulate(h.begin(), h.end(), int64_t{0}), 12000);
  EXPECT_EQ(once.range_exp(), 7);  // 2^7 = 128 > 90
  MinMaxObserver mm;
  expect_invalid([&] { oa.merge(mm); }, "merge");
  PercentileObserver po;
  expect_invalid([&] { oa.merge(po); }, "merge");
}

TEST(Observer, AllReduceAcrossTwoRanks) {
  // Two "ranks" in threads with a shared-memory all-reduce: every rank ends with the merge.
  const std::vector<float> a = uniform(3000, 7, -2.f, 1.f);
  const std::vector<float> b = uniform(4000, 8, -0.5f, 30.f);
  std::barrier sync(2);
  std::vector<Tensor> slots(2);
  auto reducer = [&](int rank) {
    return [&, rank](TensorView t, StateReduce op) {
      slots[rank] = Tensor::empty(t.shape, t.dtype);
      slots[rank].copy_from(t);
      sync.arrive_and_wait();
      const Tensor& other = slots[1 - rank];
      std::vector<double> x = slots[rank].to_vector<double>(), y = other.to_vector<double>();
      for (size_t i = 0; i < x.size(); ++i) {
        x[i] = op == StateReduce::kSum   ? x[i] + y[i]
               : op == StateReduce::kMin ? std::min(x[i], y[i])
                                         : std::max(x[i], y[i]);
      }
      Tensor r = Tensor::from_vector(x, t.shape);
      sync.arrive_and_wait();
      Tensor(Tensor::wrap(t.data, t.shape, t.dtype)).copy_from(r.cview());
    };
  };
  EntropyObserver e0, e1, want;
  MinMaxObserver m0, m1;
  PerChannelMinMaxObserver p0(0), p1(0);
  MovingAverageMinMaxObserver v0, v1;
  e0.observe(vec(a));
  e1.observe(vec(b));
  want.observe(vec(a));
  want.observe(vec(b));
  m0.observe(vec(a));
  m1.observe(vec(b));
  p1.observe(Tensor::from_vector(b, {4, 1000}));  // rank 0 has no data
  v0.observe(vec(a));
  v1.observe(vec(b));
  std::thread t0([&] {
    const auto r = reducer(0);
    e0.all_reduce(r);
    m0.all_reduce(r);
    p0.all_reduce(r);
    v0.all_reduce(r);
  });
  std::thread t1([&] {
    const auto r = reducer(1);
    e1.all_reduce(r);
    m1.all_reduce(r);
    p1.all_reduce(r);
    v1.all_reduce(r);
  });
  t0.join();
  t1.join();
  for (const EntropyObserver* o : {&e0, &e1}) {
    EXPECT_EQ(o->signed_histogram(), want.signed_histogram());
    EXPECT_EQ(o->count(), want.count());
    EXPECT_EQ(o->min(), want.min());
    EXPECT_EQ(o->max(), want.max());
  }
  EXPECT_EQ(m0.min(), m1.min());
  EXPECT_EQ(m0.max(),
            std::max(*std::max_element(a.begin(), a.end()), *std::max_element(b.begin(), b.end())));
  EXPECT_EQ(p0.min(), p1.min());
  EXPECT_EQ(p0.max().size(), 4u);
  EXPECT_DOUBLE_EQ(v0.min(), 0.5 * (static_cast<double>(*std::min_element(a.begin(), a.end())) +
                                    *std::min_element(b.begin(), b.end())));
  EXPECT_EQ(v0.max(), v1.max());
}

TEST(Observer, BadInput) {
  MinMaxObserver o;
  expect_invalid([&] { o.qparams(sym(8)); }, "qparams");  // no data yet
  o.observe(vec({1.f, 2.f}));
  expect_invalid([&] { o.observe(vec({1.f, NAN})); }, "observe");
  expect_invalid([&] { o.observe(vec({INFINITY})); }, "observe");
  EXPECT_EQ(o.max(), 2.f);  // unchanged
  expect_invalid([&] { o.observe(Tensor::zeros({3}, DType::kI32)); }, "observe");
  QuantSpec pc = sym(8);
  pc.granularity = Granularity::kPerChannel;
  expect_invalid([&] { o.qparams(pc); }, "qparams");
  EntropyObserver e;
  expect_invalid([&] { e.observe(vec({0.f, NAN, 1.f})); }, "observe");
  EXPECT_FALSE(e.has_data());
  expect_invalid([&] { e.qparams(sym(8)); }, "qparams");
  o.observe(Tensor::zeros({0}));  // empty batch: nothing to fold in
  EXPECT_EQ(o.min(), 1.f);
  expect_invalid([] { MseObserver(0); }, "MseObserver");
  expect_invalid([] { EntropyObserver(0); }, "EntropyObserver");
}

TEST(Observer, AllZerosGiveAZeroRange) {
  EntropyObserver e;
  MseObserver m;
  e.observe(Tensor::zeros({100}));
  m.observe(Tensor::zeros({100}));
  EXPECT_EQ(m.threshold(sym(8)), 0.0);
  const QParams p = m.qparams(sym(8));
  EXPECT_EQ(p.scale.numel(), 1);
  EXPECT_NO_THROW(e.qparams(sym(8)));
}

}  // namespace
}  // namespace frugal::quant
