#pragma once
/// Scalar reference implementations of the transformer ops (frugal/nn/{layer_norm,embedding,
/// attention}.hpp): plain loops in double over host copies, results rounded once to the input's
/// dtype. Slow and obvious on purpose; tests compare the CPU and CUDA backends against them.
/// Inputs may live on any device (they are read back); results are host tensors.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "frugal/core/tensor.hpp"

namespace frugal::ref {

/// Output of ref::layer_norm_forward.
struct LayerNormResult {
  Tensor out, mean, rstd;
};

/// LayerNorm over the last axis of x (..., C); weight / bias (C) or undefined for none.
inline LayerNormResult layer_norm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                          double eps) {
  const int64_t c = x.dim(-1), n = x.numel() / c;
  const auto xv = x.to_vector<double>();
  std::vector<double> w = weight.defined() ? weight.to_vector<double>() : std::vector<double>(c, 1);
  std::vector<double> b = bias.defined() ? bias.to_vector<double>() : std::vector<double>(c, 0);
  std::vector<double> out(xv.size()), mean(n), rstd(n);
  for (int64_t i = 0; i < n; ++i) {
    double m = 0, v = 0;
    for (int64_t j = 0; j < c; ++j) m += xv[i * c + j];
    m /= c;
    for (int64_t j = 0; j < c; ++j) v += (xv[i * c + j] - m) * (xv[i * c + j] - m);
    v /= c;
    const double s = 1 / std::sqrt(v + eps);
    for (int64_t j = 0; j < c; ++j) out[i * c + j] = (xv[i * c + j] - m) * s * w[j] + b[j];
    mean[i] = m;
    rstd[i] = s;
  }
  Shape ss = x.shape();
  ss.erase(ss.rank() - 1);
  return {Tensor::from_vector(out, x.shape()).to(x.dtype()),
          Tensor::from_vector(mean, ss).to(x.dtype()), Tensor::from_vector(rstd, ss).to(x.dtype())};
}

/// Output of ref::layer_norm_backward.
struct LayerNormGrads {
  Tensor grad_input, grad_weight, grad_bias;
};

/// Gradients of LayerNorm for grad_out, recomputing the statistics from x (llm.c closed form).
inline LayerNormGrads layer_norm_backward(const Tensor& grad_out, const Tensor& x,
                                          const Tensor& weight, double eps) {
  const int64_t c = x.dim(-1), n = x.numel() / c;
  const auto xv = x.to_vector<double>();
  const auto gv = grad_out.to_vector<double>();
  std::vector<double> w = weight.defined() ? weight.to_vector<double>() : std::vector<double>(c, 1);
  std::vector<double> gi(xv.size()), gw(c, 0), gb(c, 0);
  for (int64_t i = 0; i < n; ++i) {
    double m = 0, v = 0;
    for (int64_t j = 0; j < c; ++j) m += xv[i * c + j];
    m /= c;
    for (int64_t j = 0; j < c; ++j) v += (xv[i * c + j] - m) * (xv[i * c + j] - m);
    v /= c;
    const double s = 1 / std::sqrt(v + eps);
    double md = 0, mdx = 0;
    for (int64_t j = 0; j < c; ++j) {
      const double xhat = (xv[i * c + j] - m) * s, d = w[j] * gv[i * c + j];
      md += d / c;
      mdx += d * xhat / c;
      gw[j] += gv[i * c + j] * xhat;
      gb[j] += gv[i * c + j];
    }
    for (int64_t j = 0; j < c; ++j) {
      const double xhat = (xv[i * c + j] - m) * s, d = w[j] * gv[i * c + j];
      gi[i * c + j] = (d - md - xhat * mdx) * s;
    }
  }
  return {Tensor::from_vector(gi, x.shape()).to(x.dtype()),
          Tensor::from_vector(gw, {c}).to(x.dtype()), Tensor::from_vector(gb, {c}).to(x.dtype())};
}

/// weight[ids] for ids (any shape, i64, all in range) and weight (V, D) -> (ids..., D).
inline Tensor embedding_forward(const Tensor& ids, const Tensor& weight) {
  const auto iv = ids.to_vector<int64_t>();
  const auto wv = weight.to_vector<double>();
  const int64_t d = weight.dim(1);
  std::vector<double> out(iv.size() * d);
  for (std::size_t i = 0; i < iv.size(); ++i) {
    for (int64_t j = 0; j < d; ++j) out[i * d + j] = wv[iv[i] * d + j];
  }
  Shape s = ids.shape();
  s.push_back(d);
  return Tensor::from_vector(out, s).to(weight.dtype());
}

/// The (V, D) weight gradient of embedding_forward for grad_out (ids..., D), in `dtype`.
inline Tensor embedding_backward(const Tensor& grad_out, const Tensor& ids, int64_t v,
                                 DType dtype) {
  const auto iv = ids.to_vector<int64_t>();
  const auto gv = grad_out.to_vector<double>();
  const int64_t d = grad_out.dim(-1);
  std::vector<double> gw(v * d, 0);
  for (std::size_t i = 0; i < iv.size(); ++i) {
    for (int64_t j = 0; j < d; ++j) gw[iv[i] * d + j] += gv[i * d + j];
  }
  return Tensor::from_vector(gw, {v, d}).to(dtype);
}

/// Output of ref::causal_attention_forward.
struct AttentionResult {
  Tensor out, probs;
};

/// Causal attention of packed qkv (B, T, 3C), `h` heads -> out (B, T, C), probs (B, H, T, T).
inline AttentionResult causal_attention_forward(const Tensor& qkv, int64_t h) {
  const int64_t b = qkv.dim(0), t = qkv.dim(1), c = qkv.dim(2) / 3, hd = c / h;
  const auto x = qkv.to_vector<double>();
  auto at = [&](int64_t bb, int64_t tt, int64_t part, int64_t hh, int64_t d) {
    return x[(bb * t + tt) * 3 * c + part * c + hh * hd + d];
  };
  std::vector<double> out(b * t * c, 0), probs(b * h * t * t, 0);
  for (int64_t bb = 0; bb < b; ++bb) {
    for (int64_t hh = 0; hh < h; ++hh) {
      for (int64_t i = 0; i < t; ++i) {
        std::vector<double> s(i + 1);
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j <= i; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < hd; ++d) dot += at(bb, i, 0, hh, d) * at(bb, j, 1, hh, d);
          s[j] = dot / std::sqrt(double(hd));
          m = std::max(m, s[j]);
        }
        double z = 0;
        for (int64_t j = 0; j <= i; ++j) z += std::exp(s[j] - m);
        double* p = &probs[((bb * h + hh) * t + i) * t];
        for (int64_t j = 0; j <= i; ++j) p[j] = std::exp(s[j] - m) / z;
        for (int64_t d = 0; d < hd; ++d) {
          double acc = 0;
          for (int64_t j = 0; j <= i; ++j) acc += p[j] * at(bb, j, 2, hh, d);
          out[(bb * t + i) * c + hh * hd + d] = acc;
        }
      }
    }
  }
  return {Tensor::from_vector(out, {b, t, c}).to(qkv.dtype()),
          Tensor::from_vector(probs, {b, h, t, t}).to(qkv.dtype())};
}

}  // namespace frugal::ref
