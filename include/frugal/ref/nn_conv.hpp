#pragma once
/// Scalar reference of 2-D convolution (frugal/nn/conv.hpp): the direct six-deep loop, in double,
/// straight from the definition y[n, o, i, j] = b[o] + sum_{c, a, e} x[n, g * Cg + c,
/// i * s_h - p_h + a * d_h, j * s_w - p_w + e * d_w] * w[o, c, a, e] (g = o's group, zero outside
/// the input). Inputs may be on any device and of any float dtype; results are f64 host tensors.
#include <cstdint>
#include <vector>

#include "frugal/core/tensor.hpp"
#include "frugal/nn/conv.hpp"

namespace frugal::ref {

namespace conv_detail {

struct Geom {
  int64_t n, ci, h, w, co, kh, kw, oh, ow, cig, cog;
};

inline Geom geom(const Shape& xs, const Shape& ws, const nn::Conv2dParams& p) {
  Geom g{};
  g.n = xs[0];
  g.ci = xs[1];
  g.h = xs[2];
  g.w = xs[3];
  g.co = ws[0];
  g.kh = ws[2];
  g.kw = ws[3];
  g.oh = (g.h + 2 * p.padding.h - p.dilation.h * (g.kh - 1) - 1) / p.stride.h + 1;
  g.ow = (g.w + 2 * p.padding.w - p.dilation.w * (g.kw - 1) - 1) / p.stride.w + 1;
  g.cig = g.ci / p.groups;
  g.cog = g.co / p.groups;
  return g;
}

/// Calls f(n, o, i, j, c_in, ih, iw, c, a, e) for every in-bounds (output, weight tap) pair,
/// where c_in is the input channel and (c, a, e) the weight index within output channel o.
template <class F>
void for_each_tap(const Geom& g, const nn::Conv2dParams& p, F&& f) {
  for (int64_t n = 0; n < g.n; ++n)
    for (int64_t o = 0; o < g.co; ++o) {
      const int64_t grp = o / g.cog;
      for (int64_t i = 0; i < g.oh; ++i)
        for (int64_t j = 0; j < g.ow; ++j)
          for (int64_t c = 0; c < g.cig; ++c)
            for (int64_t a = 0; a < g.kh; ++a) {
              const int64_t ih = i * p.stride.h - p.padding.h + a * p.dilation.h;
              if (ih < 0 || ih >= g.h) continue;
              for (int64_t e = 0; e < g.kw; ++e) {
                const int64_t iw = j * p.stride.w - p.padding.w + e * p.dilation.w;
                if (iw < 0 || iw >= g.w) continue;
                f(n, o, i, j, grp * g.cig + c, ih, iw, c, a, e);
              }
            }
    }
}

}  // namespace conv_detail

/// y (N, C_out, H_out, W_out) = conv2d(x, w) + bias (an undefined `bias` means none).
inline Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias,
                     const nn::Conv2dParams& p) {
  const auto g = conv_detail::geom(x.shape(), w.shape(), p);
  const auto xv = x.to_vector<double>();
  const auto wv = w.to_vector<double>();
  std::vector<double> y(static_cast<std::size_t>(g.n * g.co * g.oh * g.ow), 0.0);
  if (bias.defined()) {
    const auto bv = bias.to_vector<double>();
    for (int64_t n = 0; n < g.n; ++n)
      for (int64_t o = 0; o < g.co; ++o)
        for (int64_t k = 0; k < g.oh * g.ow; ++k) y[(n * g.co + o) * g.oh * g.ow + k] = bv[o];
  }
  conv_detail::for_each_tap(g, p,
                            [&](int64_t n, int64_t o, int64_t i, int64_t j, int64_t cin, int64_t ih,
                                int64_t iw, int64_t c, int64_t a, int64_t e) {
                              y[((n * g.co + o) * g.oh + i) * g.ow + j] +=
                                  xv[((n * g.ci + cin) * g.h + ih) * g.w + iw] *
                                  wv[((o * g.cig + c) * g.kh + a) * g.kw + e];
                            });
  return Tensor::from_vector(y, Shape{g.n, g.co, g.oh, g.ow});
}

/// dL/dx (x_shape) for upstream gradient dy (N, C_out, H_out, W_out).
inline Tensor conv2d_backward_input(const Tensor& dy, const Tensor& w, const Shape& x_shape,
                                    const nn::Conv2dParams& p) {
  const auto g = conv_detail::geom(x_shape, w.shape(), p);
  const auto dyv = dy.to_vector<double>();
  const auto wv = w.to_vector<double>();
  std::vector<double> dx(static_cast<std::size_t>(x_shape.numel()), 0.0);
  conv_detail::for_each_tap(g, p,
                            [&](int64_t n, int64_t o, int64_t i, int64_t j, int64_t cin, int64_t ih,
                                int64_t iw, int64_t c, int64_t a, int64_t e) {
                              dx[((n * g.ci + cin) * g.h + ih) * g.w + iw] +=
                                  dyv[((n * g.co + o) * g.oh + i) * g.ow + j] *
                                  wv[((o * g.cig + c) * g.kh + a) * g.kw + e];
                            });
  return Tensor::from_vector(dx, x_shape);
}

/// dL/dw (w_shape) for upstream gradient dy and input x.
inline Tensor conv2d_backward_weight(const Tensor& dy, const Tensor& x, const Shape& w_shape,
                                     const nn::Conv2dParams& p) {
  const auto g = conv_detail::geom(x.shape(), w_shape, p);
  const auto dyv = dy.to_vector<double>();
  const auto xv = x.to_vector<double>();
  std::vector<double> dw(static_cast<std::size_t>(w_shape.numel()), 0.0);
  conv_detail::for_each_tap(g, p,
                            [&](int64_t n, int64_t o, int64_t i, int64_t j, int64_t cin, int64_t ih,
                                int64_t iw, int64_t c, int64_t a, int64_t e) {
                              dw[((o * g.cig + c) * g.kh + a) * g.kw + e] +=
                                  dyv[((n * g.co + o) * g.oh + i) * g.ow + j] *
                                  xv[((n * g.ci + cin) * g.h + ih) * g.w + iw];
                            });
  return Tensor::from_vector(dw, w_shape);
}

/// dL/dbias (C_out): dy summed over N, H_out, W_out.
inline Tensor conv2d_backward_bias(const Tensor& dy) {
  const int64_t n = dy.dim(0), co = dy.dim(1), hw = dy.dim(2) * dy.dim(3);
  const auto dyv = dy.to_vector<double>();
  std::vector<double> db(static_cast<std::size_t>(co), 0.0);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t o = 0; o < co; ++o)
      for (int64_t k = 0; k < hw; ++k) db[o] += dyv[(b * co + o) * hw + k];
  return Tensor::from_vector(db, Shape{co});
}

}  // namespace frugal::ref
