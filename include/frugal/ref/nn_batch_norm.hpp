#pragma once
/// Scalar reference of batch norm over NCHW (frugal/nn/batch_norm.hpp), in double. The backward
/// follows the step-by-step chain rule of Ioffe & Szegedy (2015), Sec. 3 (through dxhat, dvar and
/// dmean), not the compact closed form the backends use. Inputs may be on any device; results are
/// f64 host tensors.
#include <cmath>
#include <cstdint>
#include <vector>

#include "frugal/core/tensor.hpp"

namespace frugal::ref {

/// Everything batch_norm2d computes in training mode.
struct BatchNormRef {
  Tensor output;        ///< (N, C, H, W)
  Tensor mean;          ///< (C) batch mean
  Tensor var;           ///< (C) biased batch variance
  Tensor running_mean;  ///< (C) (1 - momentum) running_mean + momentum mean
  Tensor running_var;   ///< (C) (1 - momentum) running_var + momentum unbiased variance
};

/// Training-mode batch norm. weight / bias undefined mean gamma = 1, beta = 0.
inline BatchNormRef batch_norm2d_train(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                       const Tensor& running_mean, const Tensor& running_var,
                                       double momentum, double eps) {
  const int64_t n = x.dim(0), c = x.dim(1), hw = x.dim(2) * x.dim(3);
  const double m = static_cast<double>(n * hw);
  const auto xv = x.to_vector<double>();
  const auto rm = running_mean.to_vector<double>();
  const auto rv = running_var.to_vector<double>();
  std::vector<double> gamma(c, 1.0), beta(c, 0.0);
  if (weight.defined()) gamma = weight.to_vector<double>();
  if (bias.defined()) beta = bias.to_vector<double>();
  std::vector<double> y(xv.size()), mean(c), var(c), nrm(c), nrv(c);
  auto at = [&](int64_t b, int64_t ch, int64_t i) {
    return static_cast<std::size_t>((b * c + ch) * hw + i);
  };
  for (int64_t ch = 0; ch < c; ++ch) {
    double s = 0;
    for (int64_t b = 0; b < n; ++b)
      for (int64_t i = 0; i < hw; ++i) s += xv[at(b, ch, i)];
    mean[ch] = s / m;
    double ss = 0;
    for (int64_t b = 0; b < n; ++b)
      for (int64_t i = 0; i < hw; ++i)
        ss += (xv[at(b, ch, i)] - mean[ch]) * (xv[at(b, ch, i)] - mean[ch]);
    var[ch] = ss / m;
    nrm[ch] = (1 - momentum) * rm[ch] + momentum * mean[ch];
    nrv[ch] = (1 - momentum) * rv[ch] + momentum * ss / (m - 1);
    for (int64_t b = 0; b < n; ++b)
      for (int64_t i = 0; i < hw; ++i)
        y[at(b, ch, i)] =
            (xv[at(b, ch, i)] - mean[ch]) / std::sqrt(var[ch] + eps) * gamma[ch] + beta[ch];
  }
  const Shape cs{c};
  return {Tensor::from_vector(y, x.shape()), Tensor::from_vector(mean, cs),
          Tensor::from_vector(var, cs), Tensor::from_vector(nrm, cs), Tensor::from_vector(nrv, cs)};
}

/// Evaluation-mode batch norm with the given statistics.
inline Tensor batch_norm2d_eval(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                const Tensor& running_mean, const Tensor& running_var, double eps) {
  const int64_t c = x.dim(1), hw = x.dim(2) * x.dim(3);
  auto xv = x.to_vector<double>();
  const auto rm = running_mean.to_vector<double>();
  const auto rv = running_var.to_vector<double>();
  for (std::size_t k = 0; k < xv.size(); ++k) {
    const int64_t ch = static_cast<int64_t>(k) / hw % c;
    const double g = weight.defined() ? weight.to_vector<double>()[ch] : 1.0;
    const double b = bias.defined() ? bias.to_vector<double>()[ch] : 0.0;
    xv[k] = (xv[k] - rm[ch]) / std::sqrt(rv[ch] + eps) * g + b;
  }
  return Tensor::from_vector(xv, x.shape());
}

/// Gradients of training-mode batch norm: dx, dgamma, dbeta.
struct BatchNormGradsRef {
  Tensor dx, dweight, dbias;
};

inline BatchNormGradsRef batch_norm2d_train_backward(const Tensor& dy, const Tensor& x,
                                                     const Tensor& weight, double eps) {
  const int64_t n = x.dim(0), c = x.dim(1), hw = x.dim(2) * x.dim(3);
  const double m = static_cast<double>(n * hw);
  const auto xv = x.to_vector<double>();
  const auto dyv = dy.to_vector<double>();
  std::vector<double> gamma(c, 1.0);
  if (weight.defined()) gamma = weight.to_vector<double>();
  std::vector<double> dx(xv.size()), dg(c), db(c);
  auto at = [&](int64_t b, int64_t ch, int64_t i) {
    return static_cast<std::size_t>((b * c + ch) * hw + i);
  };
  for (int64_t ch = 0; ch < c; ++ch) {
    double mu = 0, var = 0;
    for (int64_t b = 0; b < n; ++b)
      for (int64_t i = 0; i < hw; ++i) mu += xv[at(b, ch, i)] / m;
    for (int64_t b = 0; b < n; ++b)
      for (int64_t i = 0; i < hw; ++i) var += (xv[at(b, ch, i)] - mu) * (xv[at(b, ch, i)] - mu) / m;
    const double sd = std::sqrt(var + eps);
    // dL/dxhat = dy gamma; dL/dvar = sum dxhat (x - mu) (-1/2) (var + eps)^(-3/2);
    // dL/dmu = sum dxhat (-1 / sd) + dvar * sum(-2 (x - mu)) / m;
    // dL/dx = dxhat / sd + dvar 2 (x - mu) / m + dmu / m.
    double dvar = 0, dmu = 0, sum_xm = 0;
    for (int64_t b = 0; b < n; ++b)
      for (int64_t i = 0; i < hw; ++i) {
        const double xm = xv[at(b, ch, i)] - mu;
        const double dxhat = dyv[at(b, ch, i)] * gamma[ch];
        dvar += dxhat * xm * -0.5 * std::pow(var + eps, -1.5);
        dmu += -dxhat / sd;
        sum_xm += -2 * xm;
        dg[ch] += dyv[at(b, ch, i)] * xm / sd;
        db[ch] += dyv[at(b, ch, i)];
      }
    dmu += dvar * sum_xm / m;
    for (int64_t b = 0; b < n; ++b)
      for (int64_t i = 0; i < hw; ++i) {
        const double xm = xv[at(b, ch, i)] - mu;
        dx[at(b, ch, i)] = dyv[at(b, ch, i)] * gamma[ch] / sd + dvar * 2 * xm / m + dmu / m;
      }
  }
  const Shape cs{c};
  return {Tensor::from_vector(dx, x.shape()), Tensor::from_vector(dg, cs),
          Tensor::from_vector(db, cs)};
}

}  // namespace frugal::ref
