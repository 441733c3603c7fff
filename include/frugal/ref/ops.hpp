#pragma once
/// Scalar reference implementations of the core ops (frugal/core/ops.hpp): plain loops over host
/// copies, double accumulation, results rounded once to the output dtype. Slow and obvious on
/// purpose; tests compare every backend against them. Inputs may live on any device (they are read
/// back to the host), results are host tensors.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "frugal/core/ops.hpp"
#include "frugal/core/tensor.hpp"

namespace frugal::ref {

namespace ops_detail {

/// Host tensor of `dtype` holding `values` (rounded once from double).
inline Tensor make(const std::vector<double>& values, Shape shape, DType dtype) {
  return Tensor::from_vector(values, shape).to(dtype);
}

/// x seen as (outer, len, inner) around axis `a` (already non-negative).
struct Split {
  int64_t outer = 1, len = 1, inner = 1;
};
inline Split split(const Shape& s, int a) {
  Split r;
  for (int i = 0; i < a; ++i) r.outer *= s[i];
  r.len = s[a];
  for (int i = a + 1; i < s.rank(); ++i) r.inner *= s[i];
  return r;
}
inline Shape without_axis(Shape s, int a, bool keep, int64_t extent = 1) {
  if (keep) {
    s[a] = extent;
  } else {
    s.erase(a);
  }
  return s;
}
/// NaN counts as larger than every number; then larger values first; ties by lower index.
inline bool larger_first(double a, int64_t ia, double b, int64_t ib) {
  if (std::isnan(a) || std::isnan(b))
    return std::isnan(a) && std::isnan(b) ? ia < ib : std::isnan(a);
  return a != b ? a > b : ia < ib;
}
inline bool smaller_first(double a, int64_t ia, double b, int64_t ib) {
  if (std::isnan(a) || std::isnan(b))
    return std::isnan(a) && std::isnan(b) ? ia < ib : std::isnan(b);
  return a != b ? a < b : ia < ib;
}
inline DType sum_dtype(DType t) { return t == DType::kF64 ? DType::kF64 : DType::kF32; }

}  // namespace ops_detail

/// a + b, a - b, a * b elementwise in double, rounded to a's dtype.
inline Tensor add(const Tensor& a, const Tensor& b) {
  auto x = a.to_vector<double>(), y = b.to_vector<double>();
  for (std::size_t i = 0; i < x.size(); ++i) x[i] += y[i];
  return ops_detail::make(x, a.shape(), a.dtype());
}
inline Tensor sub(const Tensor& a, const Tensor& b) {
  auto x = a.to_vector<double>(), y = b.to_vector<double>();
  for (std::size_t i = 0; i < x.size(); ++i) x[i] -= y[i];
  return ops_detail::make(x, a.shape(), a.dtype());
}
inline Tensor mul(const Tensor& a, const Tensor& b) {
  auto x = a.to_vector<double>(), y = b.to_vector<double>();
  for (std::size_t i = 0; i < x.size(); ++i) x[i] *= y[i];
  return ops_detail::make(x, a.shape(), a.dtype());
}
/// x * alpha in double, rounded to x's dtype.
inline Tensor scale(const Tensor& x, double alpha) {
  auto v = x.to_vector<double>();
  for (auto& e : v) e *= alpha;
  return ops_detail::make(v, x.shape(), x.dtype());
}
/// y + alpha * x in double, rounded to y's dtype (returned, y is not modified).
inline Tensor axpy(double alpha, const Tensor& x, const Tensor& y) {
  auto xv = x.to_vector<double>(), yv = y.to_vector<double>();
  for (std::size_t i = 0; i < yv.size(); ++i) yv[i] += alpha * xv[i];
  return ops_detail::make(yv, y.shape(), y.dtype());
}

/// Kinds of reduce(); results as in frugal::sum / mean / min / max / abs_max.
enum class Reduce { kAbsMax, kMin, kMax, kSum, kMean };

/// Reduction along `axis` (negative counts from the end), or over every element when
/// `axis` is absent (pass all = true). Sums in double in index order; NaN propagates through
/// min / max / abs_max.
inline Tensor reduce(const Tensor& x, Reduce kind, bool all, int axis = 0, bool keepdim = false) {
  const auto v = x.to_vector<double>();
  int a = 0;
  Shape out_shape;
  ops_detail::Split s;
  if (all) {
    s.len = x.numel();
  } else {
    a = axis < 0 ? axis + x.rank() : axis;
    s = ops_detail::split(x.shape(), a);
    out_shape = ops_detail::without_axis(x.shape(), a, keepdim);
  }
  std::vector<double> out(static_cast<std::size_t>(s.outer * s.inner));
  for (int64_t o = 0; o < s.outer; ++o) {
    for (int64_t i = 0; i < s.inner; ++i) {
      double acc = kind == Reduce::kMin   ? std::numeric_limits<double>::infinity()
                   : kind == Reduce::kMax ? -std::numeric_limits<double>::infinity()
                                          : 0.0;
      bool nan = false;
      for (int64_t l = 0; l < s.len; ++l) {
        const double e = v[static_cast<std::size_t>((o * s.len + l) * s.inner + i)];
        nan = nan || std::isnan(e);
        switch (kind) {
          case Reduce::kAbsMax:
            acc = std::max(acc, std::fabs(e));
            break;
          case Reduce::kMin:
            acc = std::min(acc, e);
            break;
          case Reduce::kMax:
            acc = std::max(acc, e);
            break;
          case Reduce::kSum:
          case Reduce::kMean:
            acc += e;
            break;
        }
      }
      if (nan) acc = std::numeric_limits<double>::quiet_NaN();
      if (kind == Reduce::kMean) acc /= static_cast<double>(s.len);
      out[static_cast<std::size_t>(o * s.inner + i)] = acc;
    }
  }
  const DType dt =
      kind == Reduce::kSum || kind == Reduce::kMean ? ops_detail::sum_dtype(x.dtype()) : x.dtype();
  return ops_detail::make(out, out_shape, dt);
}

/// Index of the largest element along `axis` (first on ties, NaN largest), i64.
inline Tensor argmax(const Tensor& x, int axis, bool keepdim = false) {
  const auto v = x.to_vector<double>();
  const int a = axis < 0 ? axis + x.rank() : axis;
  const ops_detail::Split s = ops_detail::split(x.shape(), a);
  std::vector<int64_t> out(static_cast<std::size_t>(s.outer * s.inner));
  for (int64_t o = 0; o < s.outer; ++o) {
    for (int64_t i = 0; i < s.inner; ++i) {
      int64_t best = 0;
      for (int64_t l = 1; l < s.len; ++l) {
        const double e = v[static_cast<std::size_t>((o * s.len + l) * s.inner + i)];
        const double b = v[static_cast<std::size_t>((o * s.len + best) * s.inner + i)];
        if (ops_detail::larger_first(e, l, b, best)) best = l;
      }
      out[static_cast<std::size_t>(o * s.inner + i)] = best;
    }
  }
  return Tensor::from_vector(out, ops_detail::without_axis(x.shape(), a, keepdim));
}

/// k best elements along `axis` by a full stable sort of each row.
inline TopK topk(const Tensor& x, int64_t k, int axis = -1, bool largest = true) {
  const auto v = x.to_vector<double>();
  const int a = axis < 0 ? axis + x.rank() : axis;
  const ops_detail::Split s = ops_detail::split(x.shape(), a);
  std::vector<double> values(static_cast<std::size_t>(s.outer * k * s.inner));
  std::vector<int64_t> indices(values.size());
  std::vector<int64_t> order(static_cast<std::size_t>(s.len));
  for (int64_t o = 0; o < s.outer; ++o) {
    for (int64_t i = 0; i < s.inner; ++i) {
      auto at = [&](int64_t l) {
        return v[static_cast<std::size_t>((o * s.len + l) * s.inner + i)];
      };
      std::iota(order.begin(), order.end(), int64_t{0});
      std::sort(order.begin(), order.end(), [&](int64_t p, int64_t q) {
        return largest ? ops_detail::larger_first(at(p), p, at(q), q)
                       : ops_detail::smaller_first(at(p), p, at(q), q);
      });
      for (int64_t j = 0; j < k; ++j) {
        const auto dst = static_cast<std::size_t>((o * k + j) * s.inner + i);
        values[dst] = at(order[static_cast<std::size_t>(j)]);
        indices[dst] = order[static_cast<std::size_t>(j)];
      }
    }
  }
  const Shape shape = ops_detail::without_axis(x.shape(), a, true, k);
  return TopK{ops_detail::make(values, shape, x.dtype()), Tensor::from_vector(indices, shape)};
}

/// alpha * op(A) op(B) + beta * C (C optional: pass an undefined Tensor for none) with a triple
/// loop in double, rounded to `out_dtype`.
inline Tensor gemm(const Tensor& a, const Tensor& b, const GemmOptions& opt, const Tensor& c,
                   DType out_dtype) {
  const auto av = a.to_vector<double>(), bv = b.to_vector<double>();
  const int64_t m = opt.trans_a ? a.dim(1) : a.dim(0);
  const int64_t k = opt.trans_a ? a.dim(0) : a.dim(1);
  const int64_t n = opt.trans_b ? b.dim(0) : b.dim(1);
  auto A = [&](int64_t i, int64_t p) {
    return av[static_cast<std::size_t>(opt.trans_a ? p * m + i : i * k + p)];
  };
  auto B = [&](int64_t p, int64_t j) {
    return bv[static_cast<std::size_t>(opt.trans_b ? j * k + p : p * n + j)];
  };
  std::vector<double> out(static_cast<std::size_t>(m * n), 0.0);
  const std::vector<double> cv = c.defined() ? c.to_vector<double>() : std::vector<double>();
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t p = 0; p < k; ++p) acc += A(i, p) * B(p, j);
      double r = opt.alpha * acc;
      if (opt.beta != 0.0) r += opt.beta * cv[static_cast<std::size_t>(i * n + j)];
      out[static_cast<std::size_t>(i * n + j)] = r;
    }
  }
  return ops_detail::make(out, Shape{m, n}, out_dtype);
}

}  // namespace frugal::ref
