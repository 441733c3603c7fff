// 2-D pooling on one CUDA device, f32 and f64. Forward: one thread per output element. Backward:
// one thread per input element gathering the outputs whose windows cover it, in row-major output
// order, the same order in which the CPU scatters them; no atomics, so results are deterministic
// and bit-identical to the CPU (average sums run in double on both).
#include <type_traits>

#include "common/check.cuh"
#include "common/launch.cuh"
#include "cu_ops.hpp"

namespace frugal::cu {
namespace {

struct Window2d {
  int64_t n, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow;
};

Window2d make_window(const Shape& xs, const Shape& ys, int64_t kh, int64_t kw, int64_t sh,
                     int64_t sw, int64_t ph, int64_t pw) {
  return {xs[0], xs[1], xs[2], xs[3], kh, kw, sh, sw, ph, pw, ys[2], ys[3]};
}

/// In-bounds rows [h0, h1), columns [w0, w1) of the window of output (oh, ow).
struct Span {
  int64_t h0, h1, w0, w1;
};
__device__ inline Span span_of(int64_t oh, int64_t ow, const Window2d& g) {
  const int64_t hs = oh * g.sh - g.ph, ws = ow * g.sw - g.pw;
  return {hs > 0 ? hs : 0, hs + g.kh < g.h ? hs + g.kh : g.h, ws > 0 ? ws : 0,
          ws + g.kw < g.w ? ws + g.kw : g.w};
}
__device__ inline int64_t divisor_of(const Span& s, const Window2d& g, bool include_pad) {
  return include_pad ? g.kh * g.kw : (s.h1 - s.h0) * (s.w1 - s.w0);
}

/// Outputs [lo, hi] along one axis whose windows cover input position i.
__device__ inline void covering(int64_t i, int64_t pad, int64_t k, int64_t stride, int64_t out,
                                int64_t& lo, int64_t& hi) {
  lo = i + pad < k ? 0 : (i + pad - k) / stride + 1;
  hi = (i + pad) / stride;
  if (hi > out - 1) hi = out - 1;
}

template <class T>
__global__ void max_forward_kernel(const T* x, T* y, int64_t* idx, Window2d g, int64_t total) {
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < total;
       o += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ow = o % g.ow, oh = (o / g.ow) % g.oh, pl = o / (g.ow * g.oh);
    const T* xp = x + pl * g.h * g.w;
    const Span s = span_of(oh, ow, g);
    int64_t best_i = s.h0 * g.w + s.w0;
    T best = xp[best_i];
    for (int64_t h = s.h0; h < s.h1; ++h)
      for (int64_t w = s.w0; w < s.w1; ++w) {
        const T v = xp[h * g.w + w];
        if (v > best || (v != v && best == best)) {  // first index on ties; NaN wins
          best = v;
          best_i = h * g.w + w;
        }
      }
    y[o] = best;
    idx[o] = best_i;
  }
}

template <class T>
__global__ void max_backward_kernel(const T* dy, const int64_t* idx, T* dx, Window2d g,
                                    int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t iw = i % g.w, ih = (i / g.w) % g.h, pl = i / (g.w * g.h);
    int64_t oh0, oh1, ow0, ow1;
    covering(ih, g.ph, g.kh, g.sh, g.oh, oh0, oh1);
    covering(iw, g.pw, g.kw, g.sw, g.ow, ow0, ow1);
    const int64_t me = ih * g.w + iw;
    const int64_t base = pl * g.oh * g.ow;
    T acc = T(0);
    for (int64_t oh = oh0; oh <= oh1; ++oh)
      for (int64_t ow = ow0; ow <= ow1; ++ow) {
        const int64_t o = base + oh * g.ow + ow;
        if (idx[o] == me) acc += dy[o];
      }
    dx[i] = acc;
  }
}

template <class T>
__global__ void avg_forward_kernel(const T* x, T* y, Window2d g, bool include_pad, int64_t total) {
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < total;
       o += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ow = o % g.ow, oh = (o / g.ow) % g.oh, pl = o / (g.ow * g.oh);
    const T* xp = x + pl * g.h * g.w;
    const Span s = span_of(oh, ow, g);
    double acc = 0.0;
    for (int64_t h = s.h0; h < s.h1; ++h)
      for (int64_t w = s.w0; w < s.w1; ++w) acc += static_cast<double>(xp[h * g.w + w]);
    y[o] = static_cast<T>(acc / static_cast<double>(divisor_of(s, g, include_pad)));
  }
}

template <class T>
__global__ void avg_backward_kernel(const T* dy, T* dx, Window2d g, bool include_pad,
                                    int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t iw = i % g.w, ih = (i / g.w) % g.h, pl = i / (g.w * g.h);
    int64_t oh0, oh1, ow0, ow1;
    covering(ih, g.ph, g.kh, g.sh, g.oh, oh0, oh1);
    covering(iw, g.pw, g.kw, g.sw, g.ow, ow0, ow1);
    const int64_t base = pl * g.oh * g.ow;
    T acc = T(0);
    for (int64_t oh = oh0; oh <= oh1; ++oh)
      for (int64_t ow = ow0; ow <= ow1; ++ow) {
        const Span s = span_of(oh, ow, g);
        acc += static_cast<T>(static_cast<double>(dy[base + oh * g.ow + ow]) /
                              static_cast<double>(divisor_of(s, g, include_pad)));
      }
    dx[i] = acc;
  }
}

/// Calls f.template operator()<T>() for f32 / f64.
template <class F>
void visit(DType t, F&& f) {
  if (t == DType::kF64) {
    f.template operator()<double>();
  } else {
    f.template operator()<float>();
  }
}

}  // namespace

void max_pool2d_forward(ConstTensorView x, TensorView y, TensorView indices, int64_t kh, int64_t kw,
                        int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                        const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(x.device.index));
  const Window2d g = make_window(x.shape, y.shape, kh, kw, stride_h, stride_w, pad_h, pad_w);
  const int64_t total = y.numel();
  const LaunchShape ls = grid_stride_launch(total);
  visit(x.dtype, [&]<class T>() {
    max_forward_kernel<T><<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(
        x.data_as<T>(), y.data_as<T>(), indices.data_as<int64_t>(), g, total);
  });
  FRUGAL_CUDA_CHECK_LAUNCH();
}

void max_pool2d_backward(ConstTensorView dy, ConstTensorView indices, TensorView dx, int64_t kh,
                         int64_t kw, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                         int64_t pad_w, const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(dy.device.index));
  const Window2d g = make_window(dx.shape, dy.shape, kh, kw, stride_h, stride_w, pad_h, pad_w);
  const int64_t total = dx.numel();
  const LaunchShape ls = grid_stride_launch(total);
  visit(dy.dtype, [&]<class T>() {
    max_backward_kernel<T><<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(
        dy.data_as<T>(), indices.data_as<int64_t>(), dx.data_as<T>(), g, total);
  });
  FRUGAL_CUDA_CHECK_LAUNCH();
}

void avg_pool2d_forward(ConstTensorView x, TensorView y, int64_t kh, int64_t kw, int64_t stride_h,
                        int64_t stride_w, int64_t pad_h, int64_t pad_w, bool count_include_pad,
                        const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(x.device.index));
  const Window2d g = make_window(x.shape, y.shape, kh, kw, stride_h, stride_w, pad_h, pad_w);
  const int64_t total = y.numel();
  const LaunchShape ls = grid_stride_launch(total);
  visit(x.dtype, [&]<class T>() {
    avg_forward_kernel<T><<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(
        x.data_as<T>(), y.data_as<T>(), g, count_include_pad, total);
  });
  FRUGAL_CUDA_CHECK_LAUNCH();
}

void avg_pool2d_backward(ConstTensorView dy, TensorView dx, int64_t kh, int64_t kw,
                         int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                         bool count_include_pad, const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(dy.device.index));
  const Window2d g = make_window(dx.shape, dy.shape, kh, kw, stride_h, stride_w, pad_h, pad_w);
  const int64_t total = dx.numel();
  const LaunchShape ls = grid_stride_launch(total);
  visit(dy.dtype, [&]<class T>() {
    avg_backward_kernel<T><<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(
        dy.data_as<T>(), dx.data_as<T>(), g, count_include_pad, total);
  });
  FRUGAL_CUDA_CHECK_LAUNCH();
}

}  // namespace frugal::cu
