#pragma once
/// Scalar references of the distillation losses (frugal/distill/*.hpp): plain loops in double
/// over host copies, written from the formulas in the headers (softmax by definition, the KL sum
/// term by term, pairwise quantities by nested loops). Slow and obvious on purpose; tests compare
/// every backend against them. Inputs may live on any device; gradients are host f64 tensors.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "frugal/core/tensor.hpp"

namespace frugal::ref {

/// A reference loss and its gradient with respect to the student (host f64, student's shape).
struct DistillRef {
  double loss = 0.0;
  double kd = 0.0;
  double ce = 0.0;
  Tensor grad;
};

namespace distill_detail {
inline std::vector<double> softmax(const std::vector<double>& z, double scale) {
  double m = z[0];
  for (double v : z) m = std::max(m, v);
  std::vector<double> p(z.size());
  double s = 0.0;
  for (std::size_t i = 0; i < z.size(); ++i) s += (p[i] = std::exp((z[i] - m) * scale));
  for (double& v : p) v /= s;
  return p;
}
inline double huber(double x) { return std::abs(x) < 1.0 ? 0.5 * x * x : std::abs(x) - 0.5; }
inline double huber_grad(double x) { return std::clamp(x, -1.0, 1.0); }
}  // namespace distill_detail

/// Response KD (kd_loss / kd_loss_topk): student (N, C); the teacher dense (N, C) or, when
/// `indices` is defined, top-k values (N, k) at indices (N, k), renormalised over those k.
/// labels (N) i64 or undefined (no CE). Returns alpha kd + (1 - alpha) ce and its gradient.
inline DistillRef kd_loss(const Tensor& student, const Tensor& teacher, const Tensor& indices,
                          const Tensor& labels, double temperature, double alpha) {
  using distill_detail::softmax;
  const int64_t n = student.dim(0), c = student.dim(1), k = teacher.dim(1);
  const auto s = student.to_vector<double>();
  const auto t = teacher.to_vector<double>();
  const auto idx = indices.defined() ? indices.to_vector<int64_t>() : std::vector<int64_t>();
  const auto y = labels.defined() ? labels.to_vector<int64_t>() : std::vector<int64_t>();
  std::vector<double> g(static_cast<std::size_t>(n * c), 0.0);
  DistillRef r;
  for (int64_t i = 0; i < n; ++i) {
    const std::vector<double> srow(s.begin() + i * c, s.begin() + (i + 1) * c);
    const std::vector<double> trow(t.begin() + i * k, t.begin() + (i + 1) * k);
    const std::vector<double> p = softmax(srow, 1.0 / temperature);
    const std::vector<double> qk = softmax(trow, 1.0 / temperature);
    std::vector<double> q(static_cast<std::size_t>(c), 0.0);
    for (int64_t j = 0; j < k; ++j) q[indices.defined() ? idx[i * k + j] : j] = qk[j];
    double kl = 0.0;
    for (int64_t j = 0; j < c; ++j) {
      if (q[j] > 0.0) kl += q[j] * (std::log(q[j]) - std::log(p[j]));
    }
    r.kd += temperature * temperature * kl / static_cast<double>(n);
    for (int64_t j = 0; j < c; ++j) {
      g[i * c + j] += alpha * temperature * (p[j] - q[j]) / static_cast<double>(n);
    }
    if (labels.defined()) {
      const std::vector<double> p1 = softmax(srow, 1.0);
      r.ce += -std::log(p1[y[i]]) / static_cast<double>(n);
      for (int64_t j = 0; j < c; ++j) {
        g[i * c + j] += (1.0 - alpha) * (p1[j] - (j == y[i] ? 1.0 : 0.0)) / static_cast<double>(n);
      }
    }
  }
  r.loss = labels.defined() ? alpha * r.kd + (1.0 - alpha) * r.ce : r.kd;
  r.grad = Tensor::from_vector(g, student.shape());
  return r;
}

/// Cosine distance per row: (1/N) sum (1 - cos) with norms clamped to 1e-8.
inline DistillRef feature_cosine(const Tensor& student, const Tensor& teacher) {
  const int64_t n = student.rank() >= 2 ? student.dim(0) : 1, d = student.numel() / n;
  const auto s = student.to_vector<double>();
  const auto t = teacher.to_vector<double>();
  std::vector<double> g(s.size());
  DistillRef r;
  for (int64_t i = 0; i < n; ++i) {
    double dot = 0, ss = 0, tt = 0;
    for (int64_t j = 0; j < d; ++j) {
      dot += s[i * d + j] * t[i * d + j];
      ss += s[i * d + j] * s[i * d + j];
      tt += t[i * d + j] * t[i * d + j];
    }
    const double ns = std::max(std::sqrt(ss), 1e-8), nt = std::max(std::sqrt(tt), 1e-8);
    const double cosv = dot / (ns * nt);
    r.loss += (1.0 - cosv) / static_cast<double>(n);
    for (int64_t j = 0; j < d; ++j) {
      g[i * d + j] =
          -(t[i * d + j] / (ns * nt) - cosv * s[i * d + j] / (ns * ns)) / static_cast<double>(n);
    }
  }
  r.grad = Tensor::from_vector(g, student.shape());
  return r;
}

/// Attention-transfer loss only: (1/N) sum_n |a_s / |a_s| - a_t / |a_t||_2, a = sum_c F^2.
inline double attention_transfer_loss(const Tensor& student, const Tensor& teacher) {
  const int64_t n = student.dim(0), hw = student.dim(2) * student.dim(3);
  auto maps = [&](const Tensor& f) {
    const int64_t c = f.dim(1);
    const auto v = f.to_vector<double>();
    std::vector<double> a(static_cast<std::size_t>(n * hw), 0.0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t ch = 0; ch < c; ++ch)
        for (int64_t p = 0; p < hw; ++p) a[i * hw + p] += std::pow(v[(i * c + ch) * hw + p], 2);
    return a;
  };
  const auto as = maps(student), at = maps(teacher);
  double loss = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    double ns = 0, nt = 0;
    for (int64_t p = 0; p < hw; ++p) {
      ns += as[i * hw + p] * as[i * hw + p];
      nt += at[i * hw + p] * at[i * hw + p];
    }
    ns = std::max(std::sqrt(ns), 1e-12);
    nt = std::max(std::sqrt(nt), 1e-12);
    double dd = 0;
    for (int64_t p = 0; p < hw; ++p) dd += std::pow(as[i * hw + p] / ns - at[i * hw + p] / nt, 2);
    loss += std::sqrt(dd) / static_cast<double>(n);
  }
  return loss;
}

/// RKD distance loss only (the B x B mean of Huber terms of mean-normalised distances).
inline double rkd_distance_loss(const Tensor& student, const Tensor& teacher) {
  const int64_t b = student.dim(0);
  auto dists = [&](const Tensor& e) {
    const int64_t d = e.numel() / b;
    const auto v = e.to_vector<double>();
    std::vector<double> m(static_cast<std::size_t>(b * b), 0.0);
    double mu = 0.0;
    for (int64_t i = 0; i < b; ++i)
      for (int64_t j = 0; j < b; ++j) {
        double acc = 0;
        for (int64_t q = 0; q < d; ++q) acc += std::pow(v[i * d + q] - v[j * d + q], 2);
        m[i * b + j] = std::sqrt(acc);
        mu += m[i * b + j];
      }
    mu /= static_cast<double>(b * (b - 1));
    for (double& x : m) x /= mu;
    return m;
  };
  const auto ds = dists(student), dt = dists(teacher);
  double loss = 0.0;
  for (std::size_t i = 0; i < ds.size(); ++i) loss += distill_detail::huber(ds[i] - dt[i]);
  return loss / static_cast<double>(b * b);
}

/// RKD angle loss only (the B^3 mean of Huber terms of cosines of the angles at each anchor).
inline double rkd_angle_loss(const Tensor& student, const Tensor& teacher) {
  const int64_t b = student.dim(0);
  auto cosines = [&](const Tensor& e) {
    const int64_t d = e.numel() / b;
    const auto v = e.to_vector<double>();
    std::vector<double> out(static_cast<std::size_t>(b * b * b), 0.0);
    for (int64_t a = 0; a < b; ++a)
      for (int64_t x = 0; x < b; ++x)
        for (int64_t y = 0; y < b; ++y) {
          double dot = 0, nx = 0, ny = 0;
          for (int64_t q = 0; q < d; ++q) {
            const double u = v[x * d + q] - v[a * d + q], w = v[y * d + q] - v[a * d + q];
            dot += u * w;
            nx += u * u;
            ny += w * w;
          }
          out[(a * b + x) * b + y] = (nx > 0 && ny > 0) ? dot / std::sqrt(nx * ny) : 0.0;
        }
    return out;
  };
  const auto cs = cosines(student), ct = cosines(teacher);
  double loss = 0.0;
  for (std::size_t i = 0; i < cs.size(); ++i) loss += distill_detail::huber(cs[i] - ct[i]);
  return loss / static_cast<double>(b * b * b);
}

/// Similarity-preserving loss only: (1/B^2) |rownorm(S S^T) - rownorm(T T^T)|_F^2.
inline double sp_loss_value(const Tensor& student, const Tensor& teacher) {
  const int64_t b = student.dim(0);
  auto gram = [&](const Tensor& e) {
    const int64_t d = e.numel() / b;
    const auto v = e.to_vector<double>();
    std::vector<double> g(static_cast<std::size_t>(b * b), 0.0);
    for (int64_t i = 0; i < b; ++i) {
      double nrm = 0;
      for (int64_t j = 0; j < b; ++j) {
        double acc = 0;
        for (int64_t q = 0; q < d; ++q) acc += v[i * d + q] * v[j * d + q];
        g[i * b + j] = acc;
        nrm += acc * acc;
      }
      nrm = std::sqrt(nrm);
      for (int64_t j = 0; j < b; ++j) g[i * b + j] = nrm > 0 ? g[i * b + j] / nrm : 0.0;
    }
    return g;
  };
  const auto gs = gram(student), gt = gram(teacher);
  double loss = 0.0;
  for (std::size_t i = 0; i < gs.size(); ++i) loss += std::pow(gs[i] - gt[i], 2);
  return loss / static_cast<double>(b * b);
}

}  // namespace frugal::ref
