// QAT gradients on the CPU: STE and LSQ against the scalar reference, against finite differences
// (of the true function where it is differentiable, and of the STE surrogate everywhere), and the
// LSQ closed form on hand cases; bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "frugal/core.hpp"
#include "frugal/quant.hpp"
#include "frugal/ref/quant.hpp"
#include "support/check.hpp"
#include "support/tolerance.hpp"

namespace frugal::quant {
namespace {

using testing::all_close;
using testing::random_uniform;

using testing::expect_error;

QParams params(std::vector<float> s, std::vector<int32_t> z, Shape shape) {
  return {Tensor::from_vector(s, shape), Tensor::from_vector(z, shape)};
}

QuantSpec spec_of(int bits, bool is_signed, bool symmetric) {
  QuantSpec s;
  s.bits = bits;
  s.is_signed = is_signed;
  s.symmetric = symmetric;
  return s;
}

TEST(FakeQuantBackward, SteMatchesReference) {
  for (DType t : {DType::kF32, DType::kF64}) {
    const Tensor x = random_uniform({6, 20}, 1, -3.f, 3.f).to(t);
    const Tensor dy = random_uniform({6, 20}, 2, -1.f, 1.f).to(t);
    QuantSpec spec = spec_of(4, true, false);
    spec.granularity = Granularity::kPerChannel;
    spec.axis = 1;
    QParams p = minmax_qparams(x, spec);
    p.scale = scale(p.scale, 0.6);  // shrink the range so that some elements are clipped
    const Tensor g = fake_quantize_backward_ste(dy, x, spec, p);
    EXPECT_EQ(g.dtype(), t);
    // The gradient is dy or 0 exactly.
    EXPECT_TRUE(all_close(g.to_vector<double>(), ref::ste_grad(dy, x, spec, p), 0, 0));
    int clipped = 0;
    for (double v : g.to_vector<double>()) clipped += v == 0.0;
    EXPECT_GT(clipped, 0);
  }
}

TEST(FakeQuantBackward, SteAgainstFiniteDifferences) {
  // The STE is the derivative of the fake quantization with rint replaced by the identity:
  // f(x) = (clamp(x / s + z, qmin, qmax) - z) s. Central differences of f, in double.
  const QuantSpec spec = spec_of(8, false, false);
  const double s = 0.05, z = 100;
  const Tensor x = random_uniform({2000}, 3, -8.f, 10.f).to(DType::kF64);
  const Tensor dy = Tensor::full({2000}, 1.0, DType::kF64);
  const QParams p = params({static_cast<float>(s)}, {100}, {});
  const auto g = fake_quantize_backward_ste(dy, x, spec, p).to_vector<double>();
  const auto xv = x.to_vector<double>();
  const double sf = static_cast<float>(s);
  auto f = [&](double v) { return (std::clamp(v / sf + z, 0.0, 255.0) - z) * sf; };
  const double h = 1e-6;
  for (std::size_t i = 0; i < xv.size(); ++i) {
    const double u = xv[i] / sf + z;
    if (std::fabs(u) < 1e-3 || std::fabs(u - 255) < 1e-3) continue;  // kink of the clamp
    const double fd = (f(xv[i] + h) - f(xv[i] - h)) / (2 * h);
    ASSERT_NEAR(g[i], fd, 1e-6) << "element " << i;  // FD of a piecewise-linear function
  }
}

TEST(FakeQuantBackward, LsqClosedFormHandCase) {
  // 3-bit signed, s = 1, z = 0: codes in [-4, 3]. dx'/ds per element:
  //   0.3 -> rint(0.3) - 0.3 = -0.3;  1.0 -> 0;  -2.6 -> -3 + 2.6 = -0.4;  5.0 (clipped) -> 3;
  //   -7 (clipped) -> -4.  Sum with dy = 1: -1.7. g = 1 / sqrt(5 * 3).
  const Tensor x = Tensor::from_vector(std::vector<float>{0.3f, 1.0f, -2.6f, 5.0f, -7.0f}, {5});
  const Tensor dy = Tensor::full({5}, 1.0);
  const QParams p = params({1.f}, {0}, {});
  const LsqGrads g = fake_quantize_backward_lsq(dy, x, spec_of(3, true, true), p);
  const double want = -1.7 / std::sqrt(15.0);
  // float residuals: 0.3f and 2.6f are not exact, their rounding is ~1e-8.
  EXPECT_NEAR(g.grad_scale.to_vector<double>()[0], want, 1e-6);
  EXPECT_EQ(g.grad_scale.shape(), Shape{});
  EXPECT_EQ(g.grad_x.to_vector<float>(), (std::vector<float>{1, 1, 1, 0, 0}));
  // Explicit g.
  const LsqGrads g2 = fake_quantize_backward_lsq(dy, x, spec_of(3, true, true), p, 1.0);
  EXPECT_NEAR(g2.grad_scale.to_vector<double>()[0], -1.7, 1e-6);  // same reason
}

TEST(FakeQuantBackward, LsqPerChannelHandCase) {
  // (2, 2) with per-channel scales along axis 0: s = {1, 0.5}, 8-bit signed, z = 0.
  // Row 0: x = {0.25, 1000} -> {-0.25, 127};  row 1: x = {0.2, -0.3} -> t = {0.4, -0.6}
  //   -> {-0.4, -1 + 0.6 = -0.4}. dy = {1, 2; 3, 4}. g = 1 / sqrt(2 * 127).
  const Tensor x = Tensor::from_vector(std::vector<float>{0.25f, 1000.f, 0.2f, -0.3f}, {2, 2});
  const Tensor dy = Tensor::from_vector(std::vector<float>{1, 2, 3, 4}, {2, 2});
  QuantSpec spec = spec_of(8, true, true);
  spec.granularity = Granularity::kPerChannel;
  const LsqGrads g = fake_quantize_backward_lsq(dy, x, spec, params({1.f, 0.5f}, {0, 0}, {2}));
  const double gs = 1 / std::sqrt(2 * 127.0);
  const auto v = g.grad_scale.to_vector<double>();
  EXPECT_NEAR(v[0], (-0.25 + 2 * 127) * gs, 1e-5);      // f32 result of |v| ~ 16: ulp 2e-6
  EXPECT_NEAR(v[1], (3 * -0.4 + 4 * -0.4) * gs, 1e-6);  // float residuals of 0.2f, 0.3f
}

TEST(FakeQuantBackward, LsqMatchesReferenceAllGranularities) {
  const Tensor x = random_uniform({4, 6, 32}, 4, -2.f, 2.f);
  const Tensor dy = random_uniform({4, 6, 32}, 5, -1.f, 1.f);
  for (int gran = 0; gran < 3; ++gran) {
    QuantSpec spec = spec_of(4, true, false);
    spec.granularity = static_cast<Granularity>(gran);
    spec.axis = gran == 2 ? 2 : 1;
    spec.group_size = 8;
    QParams p = minmax_qparams(x, spec);
    p.scale = scale(p.scale, 0.7);  // clip some elements
    for (double factor : {0.0, 0.25}) {
      const LsqGrads g = fake_quantize_backward_lsq(dy, x, spec, p, factor);
      EXPECT_EQ(g.grad_scale.shape(), p.scale.shape());
      // Sums of ~100..800 f32 terms accumulated in double, rounded once to f32.
      EXPECT_TRUE(all_close(g.grad_scale.to_vector<double>(),
                            ref::lsq_scale_grad(dy, x, spec, p, factor), 1e-6, 1e-7))
          << "granularity " << gran;
      EXPECT_TRUE(all_close(g.grad_x.to_vector<double>(), ref::ste_grad(dy, x, spec, p), 0, 0));
    }
  }
}

TEST(FakeQuantBackward, LsqAgainstFiniteDifferences) {
  // (a) Elements in the clamp region: x'(s) = (qmax - z) s or (qmin - z) s is differentiable, so
  //     d/ds of the true fake quantization is the LSQ term exactly.
  // (b) All elements: LSQ is d/ds of the STE surrogate s (clamp(x / s, lo, hi) + r0 [inside])
  //     with the rounding residual r0 = rint(t0) - t0 frozen at the base point.
  const QuantSpec spec = spec_of(4, false, false);  // [0, 15]
  const int32_t z = 5;
  const double s0 = 0.125;  // exact in float, so the finite differences see the same scale
  const Tensor x = random_uniform({500}, 6, -1.5f, 2.5f).to(DType::kF64);
  const Tensor dy = random_uniform({500}, 7, -1.f, 1.f).to(DType::kF64);
  const auto xv = x.to_vector<double>(), w = dy.to_vector<double>();
  const double lo = 0 - z, hi = 15 - z;
  const double h = 1e-7;
  auto surrogate = [&](double s) {
    double acc = 0;
    for (std::size_t i = 0; i < xv.size(); ++i) {
      const double t0 = xv[i] / s0;
      const bool inside = t0 >= lo && t0 <= hi;
      const double r0 = inside ? std::rint(t0) - t0 : 0.0;
      acc += w[i] * s * (std::clamp(xv[i] / s, lo, hi) + r0);
    }
    return acc;
  };
  const LsqGrads g = fake_quantize_backward_lsq(dy, x, spec, params({float(s0)}, {z}, {}), 1.0);
  const double fd = (surrogate(s0 + h) - surrogate(s0 - h)) / (2 * h);
  EXPECT_NEAR(g.grad_scale.to_vector<double>()[0], fd, 1e-5 * std::fabs(fd) + 1e-6);  // FD error

  // (a): keep only clipped elements (dy = 0 elsewhere) and difference the real fake quantization.
  std::vector<double> wc(w.size(), 0.0);
  for (std::size_t i = 0; i < xv.size(); ++i) {
    const double t = xv[i] / s0;
    if (t < lo - 0.5 || t > hi + 0.5) wc[i] = w[i];
  }
  const Tensor dyc = Tensor::from_vector(wc, {500});
  auto loss = [&](double s) {
    const auto fq =
        fake_quantize(x, spec, params({static_cast<float>(s)}, {z}, {})).to_vector<double>();
    double acc = 0;
    for (std::size_t i = 0; i < fq.size(); ++i) acc += wc[i] * fq[i];
    return acc;
  };
  const double hs = 1.0 / 1024;  // exact in float; small enough that clipped stays clipped
  const double fdc = (loss(s0 + hs) - loss(s0 - hs)) / (2 * hs);
  const LsqGrads gc = fake_quantize_backward_lsq(dyc, x, spec, params({float(s0)}, {z}, {}), 1.0);
  EXPECT_NEAR(gc.grad_scale.to_vector<double>()[0], fdc, 1e-6 * std::fabs(fdc) + 1e-9);  // linear
}

TEST(FakeQuantBackward, BadInput) {
  const Tensor x = random_uniform({4, 4}, 8);
  const QParams p = params({0.1f}, {0}, {});
  const QuantSpec s8 = spec_of(8, true, true);
  expect_error(
      [&] {
        fake_quantize_backward_ste(Tensor::zeros({4, 3}), x, s8, p);
      },
      ErrorCode::kInvalidArgument, "fake_quantize_backward_ste");
  expect_error([&] { fake_quantize_backward_ste(x.to(DType::kF64), x, s8, p); },
               ErrorCode::kInvalidArgument, "fake_quantize_backward_ste");
  expect_error([&] { fake_quantize_backward_ste(x, x, spec_of(1, true, true), p); },
               ErrorCode::kInvalidArgument, "fake_quantize_backward_ste");
  expect_error([&] { fake_quantize_backward_lsq(x, x, s8, params({-1.f}, {0}, {})); },
               ErrorCode::kInvalidArgument, "fake_quantize_backward_lsq");
  expect_error([&] { fake_quantize_backward_lsq(x, x, s8, p, -1.0); }, ErrorCode::kInvalidArgument,
               "fake_quantize_backward_lsq");
  expect_error([&] { fake_quantize_backward_lsq(Tensor::zeros({0}), Tensor::zeros({0}), s8, p); },
               ErrorCode::kInvalidArgument, "fake_quantize_backward_lsq");
}

}  // namespace
}  // namespace frugal::quant
