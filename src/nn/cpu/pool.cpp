// 2-D pooling on the host: loops per (sample, channel) plane, oneTBB over the planes. Max pooling
// runs each window step over all outputs of a block of planes (max_forward_planes) so it
// vectorises; see there for why the values and indices stay those of the scalar loop. Backward
// passes scatter within one plane in output order (one task owns a plane), which is the same
// summation order as the CUDA gathers, so results are deterministic and match the GPU.
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "nn/spatial_internal.hpp"

namespace frugal::cpu {
namespace {

using detail::Pool2dGeometry;

/// Runs body(lo, hi) over ranges of the (sample, channel) planes in parallel; grain from the
/// plane cost.
template <class F>
void for_each_plane_range(const Pool2dGeometry& g, const ExecContext& ctx, F&& body) {
  const int64_t planes = g.n * g.c;
  const int64_t cost = std::max<int64_t>(1, g.oh * g.ow * g.kh * g.kw + g.h * g.w);
  const int64_t grain = std::max<int64_t>(1, 32768 / cost);
  if (planes <= grain) {  // one task: skip the arena (a few microseconds)
    body(int64_t{0}, planes);
    return;
  }
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, planes, grain),
                      [&](const tbb::blocked_range<int64_t>& r) { body(r.begin(), r.end()); });
  });
}

/// Runs body(plane) for every (sample, channel) plane in parallel.
template <class F>
void for_each_plane(const Pool2dGeometry& g, const ExecContext& ctx, F&& body) {
  for_each_plane_range(g, ctx, [&](int64_t lo, int64_t hi) {
    for (int64_t pl = lo; pl < hi; ++pl) body(pl);
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

/// Max-pool fold step: v replaces best when strictly greater, or when v is the first NaN. Written
/// without branches (| and & on the comparisons) so the loops below vectorise as compare + blend.
template <class T>
inline bool max_takes(T v, T best) {
  return (v > best) | ((v != v) & (best == best));
}

/// Per output o of a block of `planes` consecutive planes (row-major): the offset of its plane,
/// the input row and column of its window's top-left corner (negative in the padding) and the
/// in-plane index of its window's first in-bounds element.
struct MaxWindows {
  int64_t planes = 0;
  std::vector<int64_t> base, hs, ws, first;
};

MaxWindows max_windows(const Pool2dGeometry& g) {
  MaxWindows t;
  const int64_t m = g.oh * g.ow;
  // Blocks of at least ~256 outputs: small planes (the digits CNN's 4 x 4 outputs) would leave
  // the vector loops below with one iteration each.
  t.planes = std::max<int64_t>(1, std::min<int64_t>(256 / m, g.n * g.c));
  const auto size = static_cast<std::size_t>(t.planes * m);
  t.base.resize(size);
  t.hs.resize(size);
  t.ws.resize(size);
  t.first.resize(size);
  for (int64_t p = 0; p < t.planes; ++p)
    for (int64_t oh = 0; oh < g.oh; ++oh)
      for (int64_t ow = 0; ow < g.ow; ++ow) {
        const auto o = static_cast<std::size_t>(p * m + oh * g.ow + ow);
        const Window win = window(oh, ow, g, true);
        t.base[o] = p * g.h * g.w;
        t.hs[o] = oh * g.stride_h - g.pad_h;
        t.ws[o] = ow * g.stride_w - g.pad_w;
        t.first[o] = win.h0 * g.w + win.w0;
      }
  return t;
}

/// `count` (<= t.planes) consecutive planes. Their outputs are flattened and each window step
/// (i, j) is one loop over all of them with indexed loads (gathers): branch-free, so it
/// vectorises whatever the geometry, and short output rows still fill whole vectors. A step
/// outside the plane (padding) is masked out and loads the plane's always-valid element 0
/// instead. Each output sees the in-bounds elements of its window in the scalar order (rows, then
/// columns), starting from the first one, so value and index are those of the scalar loop.
template <class T>
void max_forward_planes(const T* __restrict xp, T* __restrict yp, int64_t* __restrict ip,
                        int64_t count, const MaxWindows& t, const Pool2dGeometry& g) {
  // Locals, not g's fields: stores through ip (int64_t) could alias them and stop vectorisation.
  const int64_t m = count * g.oh * g.ow, h_in = g.h, w_in = g.w, kh = g.kh, kw = g.kw;
  const int64_t* __restrict base = t.base.data();
  const int64_t* __restrict hs = t.hs.data();
  const int64_t* __restrict ws = t.ws.data();
  const int64_t* __restrict first = t.first.data();
  for (int64_t o = 0; o < m; ++o) {
    yp[o] = xp[base[o] + first[o]];
    ip[o] = first[o];
  }
  for (int64_t i = 0; i < kh; ++i) {
    for (int64_t j = 0; j < kw; ++j) {
      for (int64_t o = 0; o < m; ++o) {
        const int64_t h = hs[o] + i;
        const int64_t w = ws[o] + j;
        const bool in = (static_cast<uint64_t>(h) < static_cast<uint64_t>(h_in)) &
                        (static_cast<uint64_t>(w) < static_cast<uint64_t>(w_in));
        const int64_t k = (h * w_in + w) & -static_cast<int64_t>(in);  // 0 when outside
        const T v = xp[base[o] + k];
        const T best = yp[o];
        const bool take = in & max_takes(v, best);
        yp[o] = take ? v : best;
        ip[o] = take ? k : ip[o];
      }
    }
  }
}

template <class T>
void max_forward(const T* x, T* y, int64_t* idx, const Pool2dGeometry& g, const ExecContext& ctx) {
  const MaxWindows t = max_windows(g);
  const int64_t in_plane = g.h * g.w, out_plane = g.oh * g.ow;
  for_each_plane_range(g, ctx, [&](int64_t lo, int64_t hi) {
    for (int64_t p = lo; p < hi; p += t.planes) {
      max_forward_planes(x + p * in_plane, y + p * out_plane, idx + p * out_plane,
                         std::min(t.planes, hi - p), t, g);
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
