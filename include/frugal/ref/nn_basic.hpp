#pragma once
/// Scalar references of the basic nn layers and losses (frugal/nn/{linear,activation,dropout,
/// loss}.hpp): plain loops over host copies in double. Slow and obvious on purpose; tests compare
/// every backend against them. Inputs may live on any device; results are host f64 tensors
/// (masks: host u8).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "frugal/core/philox.hpp"
#include "frugal/core/tensor.hpp"
#include "frugal/nn/activation.hpp"

namespace frugal::ref {

namespace nn_detail {
inline Tensor make(const std::vector<double>& v, Shape shape) {
  return Tensor::from_vector(v, shape);
}
}  // namespace nn_detail

/// y = x W^T + b for x (..., in), weight (out, in), bias (out) or undefined; (..., out), f64.
inline Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  const int64_t in = weight.dim(1), out = weight.dim(0), rows = x.numel() / in;
  const auto xv = x.to_vector<double>();
  const auto wv = weight.to_vector<double>();
  const auto bv = bias.defined() ? bias.to_vector<double>() : std::vector<double>(out, 0.0);
  std::vector<double> y(static_cast<std::size_t>(rows * out));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t o = 0; o < out; ++o) {
      double acc = bv[o];
      for (int64_t i = 0; i < in; ++i) acc += xv[r * in + i] * wv[o * in + i];
      y[r * out + o] = acc;
    }
  }
  Shape s = x.shape();
  s[s.rank() - 1] = out;
  return nn_detail::make(y, s);
}

/// Sum over rows of g (M, N) -> (N), f64.
inline Tensor column_sum(const Tensor& g) {
  const int64_t m = g.dim(0), n = g.dim(1);
  const auto gv = g.to_vector<double>();
  std::vector<double> s(static_cast<std::size_t>(n), 0.0);
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t c = 0; c < n; ++c) s[c] += gv[r * n + c];
  }
  return nn_detail::make(s, {n});
}

/// GELU of one value in double (exact erf form or tanh approximation).
inline double gelu(double x, nn::GeluApprox approx) {
  if (approx == nn::GeluApprox::kNone) return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
  const double k = std::sqrt(2.0 / 3.14159265358979323846);
  return 0.5 * x * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x)));
}

/// Elementwise map of a tensor through `f`, f64.
template <class F>
Tensor map(const Tensor& x, F f) {
  auto v = x.to_vector<double>();
  for (double& e : v) e = f(e);
  return nn_detail::make(v, x.shape());
}

/// Keep mask (u8, 1 = kept) of dropout with probability p for (seed, step) and `shape`, from the
/// stream definition in frugal/nn/dropout.hpp, one Philox evaluation per element.
inline Tensor dropout_mask(Shape shape, double p, uint64_t seed, uint64_t step) {
  const int64_t n = shape.numel();
  std::vector<uint8_t> m(static_cast<std::size_t>(n));
  const auto pf = static_cast<float>(p);
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t block = static_cast<uint64_t>(i) / 4;
    const Uint4 counter{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32),
                        static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32)};
    const Uint4 bits = Philox4x32::generate(counter, Philox4x32::key_of(seed));
    const uint32_t word = lane(bits, static_cast<int>(i % 4));
    const double u = static_cast<double>(word >> 8) / 16777216.0;  // uniform01: 24 bits
    m[i] = u < static_cast<double>(pf) ? 0 : 1;
  }
  return Tensor::from_vector(m, shape);
}

/// Loss and gradient of a reference loss.
struct LossRef {
  double loss = 0.0;
  Tensor grad;  ///< dL/d(input), f64
};

/// torch.nn.CrossEntropyLoss(mean, label_smoothing = eps, ignore_index) in double, from the
/// definition: log p_c = x_c - max - log sum exp(x - max).
inline LossRef softmax_cross_entropy(const Tensor& logits, const Tensor& targets, double eps,
                                     int64_t ignore_index) {
  const int64_t n = logits.dim(0), c = logits.dim(1);
  const auto x = logits.to_vector<double>();
  const auto t = targets.to_vector<int64_t>();
  std::vector<double> g(static_cast<std::size_t>(n * c), 0.0);
  double total = 0.0;
  int64_t count = 0;
  for (int64_t r = 0; r < n; ++r) count += t[r] != ignore_index;
  for (int64_t r = 0; r < n; ++r) {
    if (t[r] == ignore_index) continue;
    const double* row = x.data() + r * c;
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < c; ++j) m = std::max(m, row[j]);
    double s = 0.0;
    for (int64_t j = 0; j < c; ++j) s += std::exp(row[j] - m);
    const double lse = std::log(s);
    double mean_neg_logp = 0.0;
    for (int64_t j = 0; j < c; ++j) mean_neg_logp += -(row[j] - m - lse) / static_cast<double>(c);
    const double nll = -(row[t[r]] - m - lse);
    total += (1.0 - eps) * nll + eps * mean_neg_logp;
    for (int64_t j = 0; j < c; ++j) {
      const double p = std::exp(row[j] - m - lse);
      const double target = (1.0 - eps) * (j == t[r] ? 1.0 : 0.0) + eps / static_cast<double>(c);
      g[r * c + j] = (p - target) / static_cast<double>(count);
    }
  }
  return {count > 0 ? total / static_cast<double>(count) : 0.0, nn_detail::make(g, logits.shape())};
}

/// torch.nn.MSELoss(mean) in double.
inline LossRef mse_loss(const Tensor& pred, const Tensor& target) {
  const auto p = pred.to_vector<double>();
  const auto t = target.to_vector<double>();
  const auto n = static_cast<double>(p.size());
  std::vector<double> g(p.size());
  double total = 0.0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    const double d = p[i] - t[i];
    total += d * d;
    g[i] = 2.0 * d / n;
  }
  return {total / n, nn_detail::make(g, pred.shape())};
}

}  // namespace frugal::ref
