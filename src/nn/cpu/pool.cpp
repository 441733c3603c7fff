// 2-D pooling on the host: plain loops per (sample, channel) plane, oneTBB over the planes.
// Backward passes scatter within one plane in output order (one task owns a plane), which is the
// same summation order as the CUDA gathers, so results are deterministic and match the GPU.
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>

#include "nn/spatial_internal.hpp"

namespace frugal::cpu {
namespace {

using detail::Pool2dGeometry;

/// Runs body(plane) for every (sample, channel) plane in parallel; grain from the plane cost.
template <class F>
void for_each_plane(const Pool2dGeometry& g, const ExecContext& ctx, F&& body) {
  const int64_t planes = g.n * g.c;
  const int64_t cost = std::max<int64_t>(1, g.oh * g.ow * g.kh * g.kw + g.h * g.w);
  const int64_t grain = std::max<int64_t>(1, 32768 / cost);
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, planes, grain),
                      [&](const tbb::blocked_range<int64_t>& r) {
                        for (int64_t pl = r.begin(); pl < r.end(); ++pl) body(pl);
                      });
  });
}

/// The in-bounds part [h0, h1) x [w0, w1) of the window of output (oh, ow), and its divisor.
struct Window {
  int64_t h0, h1, w0, w1;
  int64_t divisor;
};
inline Window window(int64_t oh, int64_t ow, const Pool2dGeometry& g, bool count_include_pad) {
  const int64_t hs = oh * g.stride_h - g.pad_h;
  const int64_t ws = ow * g.stride_w - g.pad_w;
  Window r{std::max<int64_t>(hs, 0), std::min(hs + g.kh, g.h), std::max<int64_t>(ws, 0),
           std::min(ws + g.kw, g.w), 0};
  r.divisor = count_include_pad ? g.kh * g.kw : (r.h1 - r.h0) * (r.w1 - r.w0);
  return r;
}

template <class T>
void max_forward(const T* x, T* y, int64_t* idx, const Pool2dGeometry& g, const ExecContext& ctx) {
  for_each_plane(g, ctx, [&](int64_t pl) {
    const T* xp = x + pl * g.h * g.w;
    T* yp = y + pl * g.oh * g.ow;
    int64_t* ip = idx + pl * g.oh * g.ow;
    for (int64_t oh = 0; oh < g.oh; ++oh)
      for (int64_t ow = 0; ow < g.ow; ++ow) {
        const Window win = window(oh, ow, g, true);
        int64_t best_i = win.h0 * g.w + win.w0;
        T best = xp[best_i];
        for (int64_t h = win.h0; h < win.h1; ++h)
          for (int64_t w = win.w0; w < win.w1; ++w) {
            const T v = xp[h * g.w + w];
            // Strictly greater keeps the first index on ties; NaN wins once and stays.
            if (v > best || (std::isnan(v) && !std::isnan(best))) {
              best = v;
              best_i = h * g.w + w;
            }
          }
        yp[oh * g.ow + ow] = best;
        ip[oh * g.ow + ow] = best_i;
      }
  });
}

template <class T>
void max_backward(const T* dy, const int64_t* idx, T* dx, const Pool2dGeometry& g,
                  const ExecContext& ctx) {
  for_each_plane(g, ctx, [&](int64_t pl) {
    T* dxp = dx + pl * g.h * g.w;
    const T* dyp = dy + pl * g.oh * g.ow;
    const int64_t* ip = idx + pl * g.oh * g.ow;
    std::fill(dxp, dxp + g.h * g.w, T(0));
    for (int64_t o = 0; o < g.oh * g.ow; ++o) dxp[ip[o]] += dyp[o];
  });
}

template <class T>
void avg_forward(const T* x, T* y, const Pool2dGeometry& g, bool count_include_pad,
                 const ExecContext& ctx) {
  for_each_plane(g, ctx, [&](int64_t pl) {
    const T* xp = x + pl * g.h * g.w;
    T* yp = y + pl * g.oh * g.ow;
    for (int64_t oh = 0; oh < g.oh; ++oh)
      for (int64_t ow = 0; ow < g.ow; ++ow) {
        const Window win = window(oh, ow, g, count_include_pad);
        double s = 0.0;
        for (int64_t h = win.h0; h < win.h1; ++h)
          for (int64_t w = win.w0; w < win.w1; ++w) s += static_cast<double>(xp[h * g.w + w]);
        yp[oh * g.ow + ow] = static_cast<T>(s / static_cast<double>(win.divisor));
      }
  });
}

template <class T>
void avg_backward(const T* dy, T* dx, const Pool2dGeometry& g, bool count_include_pad,
                  const ExecContext& ctx) {
  for_each_plane(g, ctx, [&](int64_t pl) {
    T* dxp = dx + pl * g.h * g.w;
    const T* dyp = dy + pl * g.oh * g.ow;
    std::fill(dxp, dxp + g.h * g.w, T(0));
    for (int64_t oh = 0; oh < g.oh; ++oh)
      for (int64_t ow = 0; ow < g.ow; ++ow) {
        const Window win = window(oh, ow, g, count_include_pad);
        const T v = static_cast<T>(static_cast<double>(dyp[oh * g.ow + ow]) /
                                   static_cast<double>(win.divisor));
        for (int64_t h = win.h0; h < win.h1; ++h)
          for (int64_t w = win.w0; w < win.w1; ++w) dxp[h * g.w + w] += v;
      }
  });
}

}  // namespace

void max_pool2d_forward(ConstTensorView x, TensorView y, TensorView indices,
                        const Pool2dGeometry& g, const ExecContext& ctx) {
  if (x.dtype == DType::kF64) {
    max_forward(x.data_as<double>(), y.data_as<double>(), indices.data_as<int64_t>(), g, ctx);
  } else {
    max_forward(x.data_as<float>(), y.data_as<float>(), indices.data_as<int64_t>(), g, ctx);
  }
}

void max_pool2d_backward(ConstTensorView dy, ConstTensorView indices, TensorView dx,
                         const Pool2dGeometry& g, const ExecContext& ctx) {
  if (dy.dtype == DType::kF64) {
    max_backward(dy.data_as<double>(), indices.data_as<int64_t>(), dx.data_as<double>(), g, ctx);
  } else {
    max_backward(dy.data_as<float>(), indices.data_as<int64_t>(), dx.data_as<float>(), g, ctx);
  }
}

void avg_pool2d_forward(ConstTensorView x, TensorView y, const Pool2dGeometry& g,
                        bool count_include_pad, const ExecContext& ctx) {
  if (x.dtype == DType::kF64) {
    avg_forward(x.data_as<double>(), y.data_as<double>(), g, count_include_pad, ctx);
  } else {
    avg_forward(x.data_as<float>(), y.data_as<float>(), g, count_include_pad, ctx);
  }
}

void avg_pool2d_backward(ConstTensorView dy, TensorView dx, const Pool2dGeometry& g,
                         bool count_include_pad, const ExecContext& ctx) {
  if (dy.dtype == DType::kF64) {
    avg_backward(dy.data_as<double>(), dx.data_as<double>(), g, count_include_pad, ctx);
  } else {
    avg_backward(dy.data_as<float>(), dx.data_as<float>(), g, count_include_pad, ctx);
  }
}

}  // namespace frugal::cpu
