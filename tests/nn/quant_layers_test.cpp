// QAT layers, quantized inference layers, ptq and the QAT conversion (frugal/nn/quant_layers.hpp),
// against scalar fake-quantization references, finite differences of the STE surrogate in
// double, and dequantize-then-float references.
#include "frugal/nn/quant_layers.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "frugal/core/ops.hpp"
#include "frugal/nn/activation.hpp"
#include "frugal/nn/models.hpp"
#include "frugal/nn/train.hpp"
#include "frugal/quant/quantize.hpp"
#include "support/check.hpp"
#include "support/tolerance.hpp"

namespace frugal::nn {
namespace {

using frugal::testing::all_close;
using frugal::testing::expect_error;
using frugal::testing::host_f64;
using frugal::testing::numeric_grad;
using frugal::testing::random_f64;
using frugal::testing::random_uniform;
using quant::Granularity;
using quant::QParams;
using quant::QuantSpec;

/// Index of the (scale, zero point) of element (r, c) of a (rows, cols) tensor under `spec`.
int64_t param_index(const QuantSpec& spec, int64_t r, int64_t c, int64_t cols) {
  switch (spec.granularity) {
    case Granularity::kPerTensor:
      return 0;
    case Granularity::kPerChannel:
      return r;
    case Granularity::kPerGroup:
      return r * (cols / spec.group_size) + c / spec.group_size;
  }
  return 0;
}

/// out[i] = f(v[i], s, z, qmin, qmax) with the scale s and zero point z of element i of a
/// (rows, cols) tensor under `spec`.
template <class F>
std::vector<double> map_quantized(const std::vector<double>& v, int64_t cols, const QuantSpec& spec,
                                  const QParams& qp, F f) {
  const auto s = host_f64(qp.scale);
  const auto z = host_f64(qp.zero_point);
  const double lo = static_cast<double>(spec.qmin()), hi = static_cast<double>(spec.qmax());
  std::vector<double> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    const int64_t k =
        param_index(spec, static_cast<int64_t>(i) / cols, static_cast<int64_t>(i) % cols, cols);
    out[i] = f(v[i], s[k], z[k], lo, hi);
  }
  return out;
}

/// Scalar fake quantization (clamp(rint(v / s) + z) - z) s of a (rows, cols) tensor, in double
/// with the float division of the spec (v / s rounded to float for f32 data).
std::vector<double> fq_ref(const std::vector<double>& v, int64_t cols, const QuantSpec& spec,
                           const QParams& qp, bool f32) {
  return map_quantized(
      v, cols, spec, qp, [f32](double x, double s, double z, double lo, double hi) {
        const double t =
            f32 ? static_cast<double>(static_cast<float>(x) / static_cast<float>(s)) : x / s;
        return (std::clamp(std::nearbyint(t) + z, lo, hi) - z) * s;
      });
}

/// The STE surrogate (clamp(v / s + z) - z) s, differentiable away from the clamp edges.
std::vector<double> surrogate(const std::vector<double>& v, int64_t cols, const QuantSpec& spec,
                              const QParams& qp) {
  return map_quantized(v, cols, spec, qp, [](double x, double s, double z, double lo, double hi) {
    return (std::clamp(x / s + z, lo, hi) - z) * s;
  });
}

/// y (n, out) = x (n, in) w (out, in)^T + b in double.
std::vector<double> matmul_t(const std::vector<double>& x, const std::vector<double>& w,
                             const std::vector<double>& b, int64_t n, int64_t in, int64_t out) {
  std::vector<double> y(static_cast<std::size_t>(n * out));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t o = 0; o < out; ++o) {
      double s = b.empty() ? 0.0 : b[o];
      for (int64_t k = 0; k < in; ++k) s += x[i * in + k] * w[o * in + k];
      y[i * out + o] = s;
    }
  }
  return y;
}

Tensor t64(const std::vector<double>& v, Shape s) { return Tensor::from_vector(v, s); }

/// v rounded to the nearest f16 (ties to even) for magnitudes in f16's normal range: 11
/// significant bits.
double round_f16(double v) {
  int e = 0;
  const double m = std::frexp(v, &e);  // v = m 2^e, 0.5 <= |m| < 1
  return std::ldexp(std::nearbyint(std::ldexp(m, 11)), e - 11);
}

/// The per-channel parameters a quantized layer uses for the (out, K) weight w2 when none are
/// given: the min-max scales rounded to f16 (the layer stores them as f16).
QParams f16_minmax_qparams(const Tensor& w2) {
  QParams q = quant::minmax_qparams(w2, int8_weight_spec());
  std::vector<double> s = host_f64(q.scale);
  for (double& v : s) v = round_f16(v);
  q.scale = t64(s, q.scale.shape()).to(DType::kF32);  // exact: f16 values
  return q;
}

/// The dequantized int8 per-channel weight (out, K) on the f16-rounded min-max grid.
std::vector<double> int8_weight_ref(const Tensor& w2) {
  return fq_ref(host_f64(w2), w2.dim(1), int8_weight_spec(), f16_minmax_qparams(w2), true);
}

/// Expects m.forward(x) to throw `code` from [op].
void expect_forward_error(Module& m, const Tensor& x, ErrorCode code, const std::string& op) {
  expect_error([&] { (void)m.forward(x); }, code, op);
}

/// Expects m.backward(g) to throw `code` from [op].
void expect_backward_error(Module& m, const Tensor& g, ErrorCode code, const std::string& op) {
  expect_error([&] { (void)m.backward(g); }, code, op);
}

// ---- QAT ----------------------------------------------------------------------------------------

TEST(QatLinear, ForwardEqualsFakeQuantizeReference) {
  for (const QuantSpec wspec : {int8_weight_spec(), int4_group_weight_spec(4)}) {
    Linear lin(8, 5, true, 3);
    QatOptions o;
    o.weight = wspec;
    QatLinear q(lin, o);
    const Tensor x = random_uniform({6, 8}, 1, -2.f, 3.f);
    const Tensor y = q.forward(x);
    // The first training forward: weight min-max parameters and the input's first-batch range.
    const QParams wq = quant::minmax_qparams(lin.weight().value, wspec);
    const QParams aq = quant::minmax_qparams(x, int8_activation_spec());
    EXPECT_TRUE(all_close(q.weight_qparams().scale, wq.scale, 0, 0));
    EXPECT_TRUE(all_close(q.input_qparams().scale, aq.scale, 0, 0));
    const auto xq = fq_ref(host_f64(x), 8, int8_activation_spec(), aq, true);
    const auto wfq = fq_ref(host_f64(lin.weight().value), 8, wspec, wq, true);
    const auto ref = matmul_t(xq, wfq, host_f64(lin.bias()->value), 6, 8, 5);
    // f32 GEMM of 8 terms against a double sum.
    EXPECT_TRUE(all_close(y.to(DType::kF64), t64(ref, {6, 5}), 1e-5, 1e-5));
  }
}

TEST(QatLinear, BackwardMatchesSurrogateFiniteDifferences) {
  for (const QuantSpec wspec : {int8_weight_spec(), int4_group_weight_spec(2)}) {
    Linear lin(6, 4, true, 5, DType::kF64);
    QatOptions o;
    o.weight = wspec;
    o.observe_steps = 1;
    QatLinear q(lin, o);
    (void)q.forward(random_f64({5, 6}, 2, -1.f, 1.f));  // observes, then freezes at step 2
    q.freeze();
    const QParams wq = q.weight_qparams();
    const QParams aq = q.input_qparams();
    // Inputs inside the frozen range (away from the clamp edges) and two outside it (clamped).
    Tensor x = random_f64({5, 6}, 3, -0.8f, 0.8f);
    x.data<double>()[0] = 3.0;
    x.data<double>()[7] = -3.0;
    Tensor w = q.weight().value;
    {
      double* p = w.data<double>();
      for (int64_t i = 0; i < w.numel(); ++i) p[i] *= 0.9;
      p[1] = 2.0;
    }
    const Tensor y = q.forward(x);
    const Tensor g = random_f64({5, 4}, 4);
    q.zero_grad();
    const Tensor gx = q.backward(g);
    const auto b = host_f64(q.bias()->value);
    const auto xq = fq_ref(host_f64(x), 6, int8_activation_spec(), aq, false);
    const auto wfq = fq_ref(host_f64(w), 6, wspec, wq, false);
    // Forward in double against the scalar reference.
    EXPECT_TRUE(all_close(y, t64(matmul_t(xq, wfq, b, 5, 6, 4), {5, 4}), 1e-12, 1e-12));
    Tensor xv = x.clone();
    const Tensor ngx = numeric_grad(
        xv,
        [&] {
          return t64(
              matmul_t(surrogate(host_f64(xv), 6, int8_activation_spec(), aq), wfq, b, 5, 6, 4),
              {5, 4});
        },
        g);
    // Central differences of a piecewise-linear function away from its kinks: exact up to
    // rounding (~1e-10 at h = 1e-5).
    EXPECT_TRUE(all_close(gx, ngx, 1e-7, 1e-8));
    EXPECT_EQ(host_f64(gx)[0], 0.0);  // clamped input: no gradient
    Tensor wv = w.clone();
    const Tensor ngw = numeric_grad(
        wv,
        [&] {
          return t64(matmul_t(xq, surrogate(host_f64(wv), 6, wspec, wq), b, 5, 6, 4), {5, 4});
        },
        g);
    EXPECT_TRUE(all_close(q.weight().grad, ngw, 1e-7, 1e-8));
    EXPECT_EQ(host_f64(q.weight().grad)[1], 0.0);  // clamped weight: no gradient
  }
}

TEST(QatLinear, ObservesDuringWarmupThenFreezes) {
  Linear lin(4, 3, true, 1);
  QatOptions o;
  o.observe_steps = 3;
  o.averaging_constant = 0.5;
  QatLinear q(lin, o);
  std::vector<float> scales;
  for (int step = 0; step < 5; ++step) {
    (void)q.forward(random_uniform({8, 4}, step, -1.f - step, 1.f + step));
    scales.push_back(host_f64(q.input_qparams().scale)[0]);
  }
  EXPECT_NE(scales[1], scales[0]);
  EXPECT_NE(scales[2], scales[1]);
  EXPECT_FALSE(q.frozen() && q.steps() < 3);
  EXPECT_TRUE(q.frozen());
  EXPECT_EQ(scales[3], scales[2]);  // step 4 is past the warm-up
  EXPECT_EQ(scales[4], scales[2]);
  // Frozen weight range: changing the weight no longer changes its parameters.
  const auto ws = host_f64(q.weight_qparams().scale);
  q.weight().value.fill(5.0);
  EXPECT_EQ(host_f64(q.weight_qparams().scale), ws);
  // Evaluation forwards never observe.
  Linear lin2(4, 3, true, 1);
  QatLinear e(lin2, o);
  (void)e.forward(random_uniform({8, 4}, 0));
  e.eval();
  const auto s0 = host_f64(e.input_qparams().scale);
  (void)e.forward(random_uniform({8, 4}, 1, -9.f, 9.f));
  EXPECT_EQ(host_f64(e.input_qparams().scale), s0);
}

TEST(QatLinear, LearnedScaleGetsLsqGradientAfterFreeze) {
  Linear lin(8, 4, true, 2);
  QatOptions o;
  o.learn_scale = true;
  o.observe_steps = 1;
  QatLinear q(lin, o);
  (void)q.forward(random_uniform({4, 8}, 1));
  (void)q.forward(random_uniform({4, 8}, 2));  // step 2: frozen, scales now trained
  ASSERT_TRUE(q.frozen());
  q.zero_grad();
  (void)q.backward(random_uniform({4, 4}, 3));
  double n = 0;
  for (const NamedParameter& p : q.named_parameters()) {
    if (p.name == "weight_scale" || p.name == "input_scale") {
      for (double v : host_f64(p.param->grad)) n += std::abs(v);
    }
  }
  EXPECT_GT(n, 0.0);
}

TEST(QatConv2d, ForwardAndBackwardMatchReferences) {
  Conv2dOptions co;
  co.padding = 1;
  co.stride = 2;
  Conv2d conv(2, 3, 3, co, 7, DType::kF64);
  QatOptions o;
  o.weight = int4_group_weight_spec(6);  // K = 18: groups of 6
  o.observe_steps = 1;
  QatConv2d q(conv, o);
  (void)q.forward(random_f64({2, 2, 5, 5}, 1));
  q.freeze();
  const QParams wq = q.weight_qparams();
  const QParams aq = q.input_qparams();
  Tensor x = random_f64({2, 2, 5, 5}, 2, -0.8f, 0.8f);
  const Tensor y = q.forward(x);
  const Tensor w = q.weight().value;
  const auto wfq = fq_ref(host_f64(w), 18, o.weight, wq, false);
  const auto xq = fq_ref(host_f64(x), 50, int8_activation_spec(), aq, false);
  const Tensor yref = conv2d(t64(xq, x.shape()), t64(wfq, w.shape()), q.bias()->value, q.params());
  // Same conv2d on identical fake-quantized operands.
  EXPECT_TRUE(all_close(y, yref, 1e-12, 1e-12));
  const Tensor g = random_f64(y.shape(), 3);
  q.zero_grad();
  const Tensor gx = q.backward(g);
  Tensor xv = x.clone();
  const Tensor ngx = numeric_grad(
      xv,
      [&] {
        return conv2d(t64(surrogate(host_f64(xv), 50, int8_activation_spec(), aq), x.shape()),
                      t64(wfq, w.shape()), q.bias()->value, q.params());
      },
      g);
  // Piecewise-linear surrogate, differences away from kinks: rounding only.
  EXPECT_TRUE(all_close(gx, ngx, 1e-7, 1e-8));
  Tensor wv = w.clone();
  const Tensor ngw = numeric_grad(
      wv,
      [&] {
        return conv2d(t64(xq, x.shape()), t64(surrogate(host_f64(wv), 18, o.weight, wq), w.shape()),
                      q.bias()->value, q.params());
      },
      g);
  EXPECT_TRUE(all_close(q.weight().grad, ngw, 1e-7, 1e-8));
}

TEST(QatLayers, BadInput) {
  Linear lin(8, 4);
  QatOptions o;
  o.activation.granularity = Granularity::kPerChannel;
  expect_error([&] { QatLinear q(lin, o); }, ErrorCode::kInvalidArgument, "QatLinear");
  QatLinear q(lin);
  expect_forward_error(q, Tensor::zeros({2, 7}), ErrorCode::kInvalidArgument, "QatLinear");
  expect_backward_error(q, Tensor::zeros({2, 4}), ErrorCode::kInvalidArgument,
                        "QatLinear::backward");
  expect_error([&] { (void)q.input_qparams(); }, ErrorCode::kInvalidArgument, "QatLinear");
}

// ---- quantized inference layers -----------------------------------------------------------------

TEST(QuantizedLinear, W8A8MatchesDequantizedReference) {
  const Tensor w = random_uniform({7, 40}, 1);
  const Tensor b = random_uniform({7}, 2);
  const Tensor x = random_uniform({5, 40}, 3, -0.5f, 2.f);
  const QParams aq = quant::minmax_qparams(x, int8_activation_spec());
  QuantizedLinear q(w, b, int8_weight_spec(), ActivationQuant{int8_activation_spec(), aq});
  EXPECT_EQ(q.qweight().codes.dtype(), DType::kI8);
  EXPECT_EQ(q.scheme(), "w8a8");
  // The weight on the f16-rounded min-max grid, exactly.
  const auto wq = int8_weight_ref(w);
  EXPECT_EQ(host_f64(q.qweight().qparams.scale), host_f64(f16_minmax_qparams(w).scale));
  EXPECT_EQ(host_f64(q.dequantized_weight()), wq);
  const Tensor y = q.forward(x);
  const auto xq = fq_ref(host_f64(x), 40, int8_activation_spec(), aq, true);
  const auto ref = matmul_t(xq, wq, host_f64(b), 5, 40, 7);
  // Exact int32 sums, one f32 product and add in the epilogue.
  EXPECT_TRUE(all_close(y.to(DType::kF64), t64(ref, {5, 7}), 1e-5, 1e-5));
  // Size: 280 i8 codes + 7 f16 scales + 7 f32 biases + input scale and zero point.
  EXPECT_EQ(q.nbytes(), 280 + 14 + 28 + 8);
}

TEST(QuantizedLinear, GivenOrTinyScalesStayF32) {
  const Tensor w = random_uniform({7, 40}, 1);
  // Given parameters are kept exactly: min-max f32 scales are not f16 values, so stay f32.
  const QParams wq = quant::minmax_qparams(w, int8_weight_spec());
  QuantizedLinear given(w, Tensor(), int8_weight_spec(), std::nullopt, wq);
  EXPECT_EQ(host_f64(given.qweight().qparams.scale), host_f64(wq.scale));
  // code * s is one f32 product with an f32 scale (exact with the 11-bit f16 scales above).
  EXPECT_TRUE(all_close(given.dequantized_weight().to(DType::kF64),
                        t64(fq_ref(host_f64(w), 40, int8_weight_spec(), wq, true), {7, 40}), 1e-7,
                        0));
  EXPECT_EQ(given.nbytes(), 280 + 7 * 4);
  // Scales below f16's normal range (max |w| / 127 < 2^-14) are not rounded and stay f32.
  const Tensor tiny = random_uniform({7, 40}, 1, -1e-4f, 1e-4f);
  const QParams tq = quant::minmax_qparams(tiny, int8_weight_spec());
  QuantizedLinear q(tiny, Tensor(), int8_weight_spec());
  EXPECT_EQ(host_f64(q.qweight().qparams.scale), host_f64(tq.scale));
  EXPECT_EQ(q.nbytes(), 280 + 7 * 4);
}

TEST(QuantizedLinear, WeightOnlyMatchesDequantizedReference) {
  const Tensor w = random_uniform({6, 64}, 4);
  const Tensor x = random_uniform({3, 64}, 5);
  for (const QuantSpec spec : {int4_group_weight_spec(32), int4_group_weight_spec(16)}) {
    QuantizedLinear q(w, Tensor(), spec);
    EXPECT_EQ(q.qweight().codes.dtype(), DType::kI4);
    const auto ref = matmul_t(host_f64(x), host_f64(q.dequantized_weight()), {}, 3, 64, 6);
    // f32 dot products of 64 terms.
    EXPECT_TRUE(all_close(q.forward(x).to(DType::kF64), t64(ref, {3, 6}), 1e-5, 1e-5));
    EXPECT_EQ(q.nbytes(), 6 * 64 / 2 + 6 * (64 / spec.group_size) * 4);
  }
  QuantSpec w8 = int8_weight_spec();
  QuantizedLinear q8(w, Tensor(), w8);  // per channel = one group of 64
  EXPECT_EQ(host_f64(q8.dequantized_weight()), int8_weight_ref(w));
  const auto ref = matmul_t(host_f64(x), int8_weight_ref(w), {}, 3, 64, 6);
  EXPECT_TRUE(all_close(q8.forward(x).to(DType::kF64), t64(ref, {3, 6}), 1e-5, 1e-5));
  EXPECT_EQ(q8.nbytes(), 6 * 64 + 6 * 2);  // i8 codes + f16 scales
  // The dequantized weight is within half a step of the weight.
  const auto dw = host_f64(q8.dequantized_weight());
  const auto wv = host_f64(w);
  const auto s = host_f64(q8.qweight().qparams.scale);
  for (std::size_t i = 0; i < wv.size(); ++i)
    EXPECT_LE(std::abs(dw[i] - wv[i]), s[i / 64] * 0.5 + 1e-7);
}

TEST(QuantizedConv2d, W8A8MatchesDequantizedReference) {
  for (const int64_t groups : {int64_t{1}, int64_t{2}}) {
    const Tensor w = random_uniform({4, 4 / groups, 3, 3}, 6);
    const Tensor b = random_uniform({4}, 7);
    const Tensor x = random_uniform({2, 4, 7, 6}, 8, 0.f, 3.f);
    const Conv2dParams p{2, 1, 1, groups};
    const QParams aq = quant::minmax_qparams(x, int8_activation_spec());
    QuantizedConv2d q(w, b, p, int8_weight_spec(), ActivationQuant{int8_activation_spec(), aq});
    const Tensor y = q.forward(x);
    const auto xq = fq_ref(host_f64(x), x.numel(), int8_activation_spec(), aq, true);
    const Tensor wq = t64(int8_weight_ref(w.reshape({4, w.numel() / 4})), w.shape());
    EXPECT_TRUE(all_close(q.dequantized_weight().to(DType::kF64), wq, 0, 0));
    const Tensor ref = conv2d(t64(xq, x.shape()), wq, b.to(DType::kF64), p);
    // f32 sums of 36 products (or exact int32 sums and an f32 epilogue) against double.
    EXPECT_TRUE(all_close(y.to(DType::kF64), ref, 1e-5, 1e-5)) << "groups " << groups;
  }
  // Weight-only group int4 with an odd group (K = 9): dequantize-then-conv.
  const Tensor w = random_uniform({3, 1, 3, 3}, 9);
  const Tensor x = random_uniform({1, 1, 5, 5}, 10);
  QuantizedConv2d q(w, Tensor(), Conv2dParams{}, int4_group_weight_spec(32));
  EXPECT_EQ(q.qweight().spec.group_size, 9);
  const Tensor ref =
      conv2d(x.to(DType::kF64), q.dequantized_weight().to(DType::kF64), ConstTensorView{}, {});
  EXPECT_TRUE(all_close(q.forward(x).to(DType::kF64), ref, 1e-5, 1e-6));
}

TEST(QuantizedLayers, BadInput) {
  const Tensor w = random_uniform({4, 8}, 1);
  const QParams aq = quant::minmax_qparams(w, int8_activation_spec());
  expect_error([&] { QuantizedLinear q(Tensor::zeros({8}), Tensor(), int8_weight_spec()); },
               ErrorCode::kInvalidArgument, "QuantizedLinear");
  expect_error([&] { QuantizedLinear q(w.to(DType::kF64), Tensor(), int8_weight_spec()); },
               ErrorCode::kInvalidArgument, "QuantizedLinear");
  expect_error(
      [&] {
        QuantizedLinear q(w, Tensor(), int4_group_weight_spec(4),
                          ActivationQuant{int8_activation_spec(), aq});
      },
      ErrorCode::kInvalidArgument, "QuantizedLinear");
  expect_error([&] { QuantizedLinear q(w, Tensor::zeros({3}), int8_weight_spec()); },
               ErrorCode::kInvalidArgument, "QuantizedLinear");
  QuantizedLinear q(w, Tensor(), int8_weight_spec());
  expect_forward_error(q, Tensor::zeros({2, 7}), ErrorCode::kInvalidArgument, "QuantizedLinear");
  expect_forward_error(q, Tensor::zeros({2, 8}, DType::kF64), ErrorCode::kInvalidArgument,
                       "QuantizedLinear");
  expect_backward_error(q, Tensor::zeros({2, 4}), ErrorCode::kUnsupported,
                        "QuantizedLinear::backward");
  QuantizedConv2d c(random_uniform({2, 1, 3, 3}, 2), Tensor(), {}, int8_weight_spec());
  expect_forward_error(c, Tensor::zeros({1, 2, 5, 5}), ErrorCode::kInvalidArgument, "conv2d");
  expect_backward_error(c, Tensor::zeros({1, 2, 3, 3}), ErrorCode::kUnsupported,
                        "QuantizedConv2d::backward");
}

// ---- flows --------------------------------------------------------------------------------------

/// A small CNN with a BatchNorm to fold, its BatchNorm statistics moved off the defaults.
std::shared_ptr<Sequential> small_cnn() {
  DigitsCnnConfig cfg;
  cfg.channels1 = 4;
  cfg.channels2 = 6;
  auto m = make_digits_cnn(cfg);
  m->train();
  for (int i = 0; i < 3; ++i) (void)m->forward(random_uniform({16, 1, 8, 8}, 20 + i, 0.f, 1.f));
  m->eval();
  return m;
}

TEST(Ptq, QuantizesEveryLayerFoldsBatchNormAndReportsSize) {
  auto model = small_cnn();
  const Tensor x = random_uniform({8, 1, 8, 8}, 30, 0.f, 1.f);
  const Tensor y_float = model->forward(x);
  const int64_t float_bytes = model_state_bytes(*model);
  const PtqReport rep = ptq(*model, {random_uniform({32, 1, 8, 8}, 31, 0.f, 1.f), x});
  ASSERT_EQ(rep.layers.size(), 3u);
  EXPECT_EQ(rep.float_bytes, float_bytes);
  EXPECT_TRUE(rep.layers[0].folded_batch_norm);
  EXPECT_TRUE(rep.layers[1].folded_batch_norm);
  EXPECT_EQ((*model)[0].type_name(), "QuantizedConv2d");
  EXPECT_EQ((*model)[1].type_name(), "FoldedBatchNorm2d");
  EXPECT_EQ((*model)[8].type_name(), "QuantizedLinear");
  int64_t qbytes = 0;
  for (const auto& l : rep.layers) qbytes += l.quant_bytes;
  EXPECT_EQ(rep.quant_bytes, qbytes);  // nothing else of the CNN holds state after folding
  EXPECT_GT(rep.compression(), 3.0);
  // The int8 model follows the float one (8-bit steps of the calibrated ranges).
  const Tensor y = model->forward(x);
  EXPECT_LT(quant::quantization_error(y_float, y).rel_rms, 0.05);
  expect_error([&] { (void)ptq(*small_cnn(), {}); }, ErrorCode::kInvalidArgument, "ptq");
}

TEST(Ptq, WeightOnlyInt4OnMlp) {
  auto model = make_mlp({16, 32, 4}, 1);
  const Tensor x = random_uniform({8, 16}, 2);
  const Tensor y_float = model->forward(x);
  PtqOptions o;
  o.weight = int4_group_weight_spec(8);
  o.quantize_activations = false;
  const PtqReport rep = ptq(*model, {}, o);
  ASSERT_EQ(rep.layers.size(), 2u);
  EXPECT_EQ(rep.layers[0].scheme, "w4 g8");
  // Every Linear replaced; the output is the float MLP on the dequantized weights.
  auto ref = make_mlp({16, 32, 4}, 1);
  for (std::size_t i : {std::size_t{0}, std::size_t{2}}) {
    auto& q = dynamic_cast<QuantizedLinear&>((*model)[i]);
    dynamic_cast<Linear&>((*ref)[i]).weight().value.copy_from(q.dequantized_weight());
  }
  // f32 sums in another order (fused dequantization vs GEMM).
  EXPECT_TRUE(
      all_close(model->forward(x).to(DType::kF64), ref->forward(x).to(DType::kF64), 1e-5, 1e-5));
  EXPECT_LT(quant::quantization_error(y_float, model->forward(x)).rel_rms, 0.2);
}

TEST(Ptq, CalibrationKindsAndAccuracyReport) {
  const Tensor x = random_uniform({32, 16}, 3);
  std::vector<int64_t> labels(32);
  for (int i = 0; i < 32; ++i) labels[i] = i % 4;
  const LabeledData eval{x, Tensor::from_vector(labels, {32})};
  for (const Calibration c :
       {Calibration::kMinMax, Calibration::kPercentile, Calibration::kMse, Calibration::kEntropy}) {
    auto model = make_mlp({16, 32, 4}, 1);
    auto ref = make_mlp({16, 32, 4}, 1);
    PtqOptions o;
    o.calibration = c;
    o.eval = &eval;
    const PtqReport rep = ptq(*model, {x}, o);
    // The report's "before" is the float model's accuracy, measured independently here.
    DataLoaderOptions lo;
    lo.batch_size = 256;
    EXPECT_EQ(
        rep.accuracy_before,
        evaluate_accuracy(*ref, DataLoader(std::make_shared<TensorDataset>(x, eval.labels), lo)));
    EXPECT_GE(rep.accuracy_after, 0.0);
    EXPECT_LE(rep.accuracy_after, 1.0);
    EXPECT_EQ(rep.layers[0].scheme, "w8a8");
  }
}

TEST(FitGroupSize, LargestDivisorBelowTheGroup) {
  EXPECT_EQ(fit_group_size(int4_group_weight_spec(32), 144).group_size, 24);
  EXPECT_EQ(fit_group_size(int4_group_weight_spec(32), 9).group_size, 9);
  EXPECT_EQ(fit_group_size(int4_group_weight_spec(32), 512).group_size, 32);
  EXPECT_EQ(fit_group_size(int4_group_weight_spec(32), 31).group_size, 31);
  EXPECT_EQ(fit_group_size(int8_weight_spec(), 9).granularity, Granularity::kPerChannel);
}

TEST(Qat, ConvertKeepsTheFakeQuantizedFunction) {
  for (const bool int4 : {false, true}) {
    auto model = small_cnn();
    QatOptions o;
    if (int4) {
      o.weight = int4_group_weight_spec(8);
      o.quantize_input = false;
    }
    const auto names = prepare_qat(*model, o);
    EXPECT_EQ(names, (std::vector<std::string>{"0", "3", "8"}));
    model->train();
    (void)model->forward(random_uniform({16, 1, 8, 8}, 40, 0.f, 1.f));
    model->eval();
    const Tensor x = random_uniform({8, 1, 8, 8}, 41, 0.f, 1.f);
    const Tensor y_qat = model->forward(x);
    const PtqReport rep = convert_qat(*model);
    EXPECT_EQ(rep.layers.size(), 3u);
    EXPECT_EQ((*model)[0].type_name(), "QuantizedConv2d");
    const Tensor y = model->forward(x);
    // Same codes and grids: the folded BatchNorm and the integer GEMM only move f32 rounding.
    EXPECT_LT(quant::quantization_error(y_qat, y).rel_rms, 1e-5) << int4;
  }
}

}  // namespace
}  // namespace frugal::nn
