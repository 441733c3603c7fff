#pragma once
/// Scalar references of 2-D pooling (frugal/nn/pool.hpp), straight from the definitions, in
/// double. Windows start at (oh * stride - pad, ow * stride - pad); positions outside the input
/// are padding (never the max; counted in the average's divisor only with count_include_pad).
/// Inputs may be on any device; results are host tensors (values f64, indices i64).
#include <cmath>
#include <cstdint>
#include <vector>

#include "frugal/core/tensor.hpp"
#include "frugal/nn/pool.hpp"

namespace frugal::ref {

namespace pool_detail {
struct Geom {
  int64_t n, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow;
};
inline Geom geom(const Shape& xs, const nn::Pool2dParams& p) {
  Geom g{xs[0],
         xs[1],
         xs[2],
         xs[3],
         p.kernel.h,
         p.kernel.w,
         p.stride.h == 0 ? p.kernel.h : p.stride.h,
         p.stride.w == 0 ? p.kernel.w : p.stride.w,
         p.padding.h,
         p.padding.w,
         0,
         0};
  g.oh = (g.h + 2 * g.ph - g.kh) / g.sh + 1;
  g.ow = (g.w + 2 * g.pw - g.kw) / g.sw + 1;
  return g;
}
/// Calls f(plane, o, ih, iw) for every in-bounds element of the window of output o (flat
/// oh * ow index) of every plane, in row-major window order.
template <class F>
void for_each_window_element(const Geom& g, F&& f) {
  for (int64_t pl = 0; pl < g.n * g.c; ++pl)
    for (int64_t oh = 0; oh < g.oh; ++oh)
      for (int64_t ow = 0; ow < g.ow; ++ow)
        for (int64_t a = 0; a < g.kh; ++a)
          for (int64_t e = 0; e < g.kw; ++e) {
            const int64_t ih = oh * g.sh - g.ph + a, iw = ow * g.sw - g.pw + e;
            if (ih >= 0 && ih < g.h && iw >= 0 && iw < g.w) f(pl, oh * g.ow + ow, ih, iw);
          }
}
/// Divisor of output (oh, ow): the full kernel, or its in-bounds elements.
inline int64_t divisor(const Geom& g, int64_t o, bool count_include_pad) {
  if (count_include_pad) return g.kh * g.kw;
  const int64_t oh = o / g.ow, ow = o % g.ow;
  int64_t cnt = 0;
  for (int64_t a = 0; a < g.kh; ++a)
    for (int64_t e = 0; e < g.kw; ++e) {
      const int64_t ih = oh * g.sh - g.ph + a, iw = ow * g.sw - g.pw + e;
      cnt += (ih >= 0 && ih < g.h && iw >= 0 && iw < g.w) ? 1 : 0;
    }
  return cnt;
}
}  // namespace pool_detail

/// Max pooling: values and i64 argmax (first index on ties; NaN counts as the largest).
inline nn::MaxPool2dResult max_pool2d(const Tensor& x, const nn::Pool2dParams& p) {
  const auto g = pool_detail::geom(x.shape(), p);
  const auto xv = x.to_vector<double>();
  const std::size_t m = static_cast<std::size_t>(g.n * g.c * g.oh * g.ow);
  std::vector<double> y(m, 0.0);
  std::vector<int64_t> idx(m, -1);
  pool_detail::for_each_window_element(g, [&](int64_t pl, int64_t o, int64_t ih, int64_t iw) {
    const std::size_t k = static_cast<std::size_t>(pl * g.oh * g.ow + o);
    const double v = xv[static_cast<std::size_t>((pl * g.h + ih) * g.w + iw)];
    const bool better = idx[k] < 0 || v > y[k] || (std::isnan(v) && !std::isnan(y[k]));
    if (better) {
      y[k] = v;
      idx[k] = ih * g.w + iw;
    }
  });
  const Shape ys{g.n, g.c, g.oh, g.ow};
  return {Tensor::from_vector(y, ys), Tensor::from_vector(idx, ys)};
}

/// dL/dx of max pooling: each dy element added to its window's argmax (from ref::max_pool2d).
inline Tensor max_pool2d_backward(const Tensor& dy, const Tensor& x, const nn::Pool2dParams& p) {
  const auto g = pool_detail::geom(x.shape(), p);
  const auto idx = max_pool2d(x, p).indices.to_vector<int64_t>();
  const auto dyv = dy.to_vector<double>();
  std::vector<double> dx(static_cast<std::size_t>(x.numel()), 0.0);
  for (int64_t pl = 0; pl < g.n * g.c; ++pl)
    for (int64_t o = 0; o < g.oh * g.ow; ++o) {
      const std::size_t k = static_cast<std::size_t>(pl * g.oh * g.ow + o);
      dx[static_cast<std::size_t>(pl * g.h * g.w + idx[k])] += dyv[k];
    }
  return Tensor::from_vector(dx, x.shape());
}

/// Average pooling.
inline Tensor avg_pool2d(const Tensor& x, const nn::Pool2dParams& p, bool count_include_pad) {
  const auto g = pool_detail::geom(x.shape(), p);
  const auto xv = x.to_vector<double>();
  std::vector<double> y(static_cast<std::size_t>(g.n * g.c * g.oh * g.ow), 0.0);
  pool_detail::for_each_window_element(g, [&](int64_t pl, int64_t o, int64_t ih, int64_t iw) {
    y[static_cast<std::size_t>(pl * g.oh * g.ow + o)] +=
        xv[static_cast<std::size_t>((pl * g.h + ih) * g.w + iw)];
  });
  for (std::size_t k = 0; k < y.size(); ++k) {
    y[k] /= static_cast<double>(
        pool_detail::divisor(g, static_cast<int64_t>(k) % (g.oh * g.ow), count_include_pad));
  }
  return Tensor::from_vector(y, Shape{g.n, g.c, g.oh, g.ow});
}

/// dL/dx of average pooling for input shape xs.
inline Tensor avg_pool2d_backward(const Tensor& dy, const Shape& xs, const nn::Pool2dParams& p,
                                  bool count_include_pad) {
  const auto g = pool_detail::geom(xs, p);
  const auto dyv = dy.to_vector<double>();
  std::vector<double> dx(static_cast<std::size_t>(xs.numel()), 0.0);
  pool_detail::for_each_window_element(g, [&](int64_t pl, int64_t o, int64_t ih, int64_t iw) {
    dx[static_cast<std::size_t>((pl * g.h + ih) * g.w + iw)] +=
        dyv[static_cast<std::size_t>(pl * g.oh * g.ow + o)] /
        static_cast<double>(pool_detail::divisor(g, o, count_include_pad));
  });
  return Tensor::from_vector(dx, xs);
}

}  // namespace frugal::ref
