// 2-D convolution on the host: im2col + Eigen GEMM per block of samples and group, oneTBB over the
// blocks of the batch (Caffe's formulation, as PyTorch's slow_conv2d and MLX's CPU conv).
//
//   forward        y_g (Cog, P)  = w_g (Cog, K) * col (K, P)            P = oh * ow, K = Cig kh kw
//   backward data  dcol (K, P)   = w_g^T * dy_g, then col2im (+=) into dx
//   backward filt  dw_g (Cog, K) += dy_g * col^T
//
// A block holds nb samples side by side in one col matrix (K, nb * P), so that small spatial
// extents still give GEMMs with a few hundred columns. The im2col buffer comes from the thread's
// Workspace (touched once, reused). 1x1 convolutions with stride 1 and no padding skip im2col.
//
// Determinism: forward and backward data write disjoint outputs per block. The weight gradient
// sums partial products over fixed chunks of blocks (their number depends only on the shapes),
// then adds the chunk partials in chunk order, so results do not depend on the thread count.
#include <tbb/parallel_for.h>

#include <Eigen/Core>
#include <algorithm>
#include <vector>

#include "frugal/core/memory.hpp"
#include "nn/spatial_internal.hpp"

namespace frugal::cpu {
namespace {

using detail::Conv2dGeometry;

template <class T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using MatMap = Eigen::Map<RowMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class T>
using ConstMatMap = Eigen::Map<const RowMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;

template <class T>
MatMap<T> mat(T* p, int64_t rows, int64_t cols, int64_t ld) {
  return MatMap<T>(p, rows, cols, Eigen::OuterStride<>(ld));
}
template <class T>
ConstMatMap<T> cmat(const T* p, int64_t rows, int64_t cols, int64_t ld) {
  return ConstMatMap<T>(p, rows, cols, Eigen::OuterStride<>(ld));
}

/// Columns a GEMM should have at least; blocks of samples are formed to reach it.
constexpr int64_t kTargetColumns = 256;
/// At most this many weight-gradient partials (and at most kMaxPartialBytes of them).
constexpr int64_t kMaxFilterChunks = 16;
constexpr int64_t kMaxPartialBytes = int64_t{64} << 20;

/// Samples per block: enough to give kTargetColumns GEMM columns.
int64_t samples_per_block(const Conv2dGeometry& g) {
  const int64_t p = g.oh * g.ow;
  return std::clamp<int64_t>(kTargetColumns / p, 1, g.n);
}

/// 1x1 kernel, stride 1, no padding: the input plane is its own im2col matrix.
bool is_pointwise(const Conv2dGeometry& g) {
  return g.kh == 1 && g.kw == 1 && g.stride_h == 1 && g.stride_w == 1 && g.pad_h == 0 &&
         g.pad_w == 0;
}

/// Output columns ow whose input column ow * stride + off lies in [0, w): [lo, hi).
struct ColumnRange {
  int64_t lo, hi;
};
ColumnRange valid_columns(int64_t off, const Conv2dGeometry& g) {
  const int64_t lo = off >= 0 ? 0 : (-off + g.stride_w - 1) / g.stride_w;
  const int64_t hi = (g.w - 1 - off) < 0 ? 0 : (g.w - 1 - off) / g.stride_w + 1;
  const int64_t h = std::min(hi, g.ow);
  const int64_t l = std::min(lo, h);
  return {l, h};
}

/// col (K rows with leading dimension ld, P columns) = im2col of one sample's group input
/// x_g (Cig, h, w). Out-of-bounds taps are zero.
template <class T>
void im2col(const T* x, T* col, int64_t ld, const Conv2dGeometry& g) {
  const int64_t cig = g.c_in_per_group();
  for (int64_t c = 0; c < cig; ++c) {
    const T* xc = x + c * g.h * g.w;
    for (int64_t a = 0; a < g.kh; ++a) {
      for (int64_t e = 0; e < g.kw; ++e) {
        T* row = col + ((c * g.kh + a) * g.kw + e) * ld;
        const int64_t off = e * g.dil_w - g.pad_w;
        const ColumnRange r = valid_columns(off, g);
        for (int64_t oh = 0; oh < g.oh; ++oh) {
          T* d = row + oh * g.ow;
          const int64_t ih = oh * g.stride_h - g.pad_h + a * g.dil_h;
          if (ih < 0 || ih >= g.h) {
            std::fill(d, d + g.ow, T(0));
            continue;
          }
          const T* s = xc + ih * g.w;  // column ow taps s[ow * stride_w + off]
          std::fill(d, d + r.lo, T(0));
          if (g.stride_w == 1) {
            if (r.hi > r.lo) std::copy(s + r.lo + off, s + r.hi + off, d + r.lo);
          } else {
            for (int64_t ow = r.lo; ow < r.hi; ++ow) d[ow] = s[ow * g.stride_w + off];
          }
          std::fill(d + r.hi, d + g.ow, T(0));
        }
      }
    }
  }
}

/// dx_g (Cig, h, w) += col2im of col (K rows with leading dimension ld, P columns), the exact
/// transpose of im2col. Taps are added in row order, so the sum order is fixed.
template <class T>
void col2im(const T* col, int64_t ld, T* dx, const Conv2dGeometry& g) {
  const int64_t cig = g.c_in_per_group();
  for (int64_t c = 0; c < cig; ++c) {
    T* xc = dx + c * g.h * g.w;
    for (int64_t a = 0; a < g.kh; ++a) {
      for (int64_t e = 0; e < g.kw; ++e) {
        const T* row = col + ((c * g.kh + a) * g.kw + e) * ld;
        const int64_t off = e * g.dil_w - g.pad_w;
        const ColumnRange r = valid_columns(off, g);
        for (int64_t oh = 0; oh < g.oh; ++oh) {
          const int64_t ih = oh * g.stride_h - g.pad_h + a * g.dil_h;
          if (ih < 0 || ih >= g.h) continue;
          const T* s = row + oh * g.ow;
          T* d = xc + ih * g.w;
          for (int64_t ow = r.lo; ow < r.hi; ++ow) d[ow * g.stride_w + off] += s[ow];
        }
      }
    }
  }
}

/// Runs body(first_sample, samples) for every block of samples, in parallel.
template <class F>
void for_each_block(const Conv2dGeometry& g, const ExecContext& ctx, F&& body) {
  const int64_t nb = samples_per_block(g);
  const int64_t blocks = (g.n + nb - 1) / nb;
  auto run = [&](int64_t b) { body(b * nb, std::min(nb, g.n - b * nb)); };
  if (blocks == 1) {
    run(0);
    return;
  }
  ctx.run([&] {
    tbb::parallel_for(
        tbb::blocked_range<int64_t>(0, blocks, 1),
        [&](const tbb::blocked_range<int64_t>& r) {
          for (int64_t b = r.begin(); b < r.end(); ++b) run(b);
        },
        tbb::simple_partitioner());
  });
}

/// gather_group copies channels [c0, c0 + rows) of samples [n0, n0 + cnt) of a (n, c_total, P)
/// tensor into dst (rows, cnt * P), sample s in columns [s * P, (s + 1) * P); scatter_group
/// copies them back.
template <class T>
void gather_group(const T* src, T* dst, int64_t n0, int64_t cnt, int64_t c_total, int64_t c0,
                  int64_t rows, int64_t p) {
  for (int64_t s = 0; s < cnt; ++s)
    for (int64_t r = 0; r < rows; ++r) {
      const T* a = src + ((n0 + s) * c_total + c0 + r) * p;
      std::copy(a, a + p, dst + r * cnt * p + s * p);
    }
}
template <class T>
void scatter_group(const T* src, T* dst, int64_t n0, int64_t cnt, int64_t c_total, int64_t c0,
                   int64_t rows, int64_t p) {
  for (int64_t s = 0; s < cnt; ++s)
    for (int64_t r = 0; r < rows; ++r) {
      const T* a = src + r * cnt * p + s * p;
      std::copy(a, a + p, dst + ((n0 + s) * c_total + c0 + r) * p);
    }
}

/// Fills col (K, cnt * P) with the im2col matrices of samples [n0, n0 + cnt), group grp.
template <class T>
void im2col_block(const T* x, T* col, int64_t n0, int64_t cnt, int64_t grp,
                  const Conv2dGeometry& g) {
  const int64_t p = g.oh * g.ow;
  const int64_t cig = g.c_in_per_group();
  for (int64_t s = 0; s < cnt; ++s) {
    im2col(x + ((n0 + s) * g.c_in + grp * cig) * g.h * g.w, col + s * p, cnt * p, g);
  }
}

template <class T>
void forward_typed(const T* x, const T* w, const T* bias, T* y, const Conv2dGeometry& g,
                   const ExecContext& ctx) {
  const int64_t p = g.oh * g.ow;
  const int64_t k = g.col_rows();
  const int64_t cog = g.c_out_per_group();
  const int64_t cig = g.c_in_per_group();
  const bool pointwise = is_pointwise(g);
  for_each_block(g, ctx, [&](int64_t n0, int64_t cnt) {
    const int64_t cols = cnt * p;
    const bool direct = cnt == 1;  // GEMM straight into y
    const bool need_col = !(pointwise && cnt == 1);
    T* ws = thread_workspace().get_as<T>((need_col ? k * cols : 0) + (direct ? 0 : cog * cols));
    T* col = ws;
    T* tmp = ws + (need_col ? k * cols : 0);
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      const T* cp = col;
      if (need_col) {
        im2col_block(x, col, n0, cnt, grp, g);
      } else {
        cp = x + (n0 * g.c_in + grp * cig) * p;
      }
      T* out = direct ? y + (n0 * g.c_out + grp * cog) * p : tmp;
      auto Y = mat(out, cog, cols, cols);
      Y.noalias() = cmat(w + grp * cog * k, cog, k, k) * cmat(cp, k, cols, cols);
      if (bias != nullptr) {
        for (int64_t o = 0; o < cog; ++o) Y.row(o).array() += bias[grp * cog + o];
      }
      if (!direct) scatter_group(tmp, y, n0, cnt, g.c_out, grp * cog, cog, p);
    }
  });
}

template <class T>
void backward_data_typed(const T* dy, const T* w, T* dx, const Conv2dGeometry& g,
                         const ExecContext& ctx) {
  const int64_t p = g.oh * g.ow;
  const int64_t k = g.col_rows();
  const int64_t cog = g.c_out_per_group();
  const int64_t cig = g.c_in_per_group();
  const int64_t plane = g.h * g.w;
  const bool pointwise = is_pointwise(g);
  for_each_block(g, ctx, [&](int64_t n0, int64_t cnt) {
    const int64_t cols = cnt * p;
    const bool direct = cnt == 1;  // dy of the sample used in place
    const bool need_col = !(pointwise && cnt == 1);
    T* ws = thread_workspace().get_as<T>((need_col ? k * cols : 0) + (direct ? 0 : cog * cols));
    T* col = ws;
    T* tmp = ws + (need_col ? k * cols : 0);
    if (need_col) std::fill(dx + n0 * g.c_in * plane, dx + (n0 + cnt) * g.c_in * plane, T(0));
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      const T* d = dy + (n0 * g.c_out + grp * cog) * p;
      if (!direct) {
        gather_group(dy, tmp, n0, cnt, g.c_out, grp * cog, cog, p);
        d = tmp;
      }
      const auto Wt = cmat(w + grp * cog * k, cog, k, k).transpose();
      if (!need_col) {
        mat(dx + (n0 * g.c_in + grp * cig) * plane, k, cols, cols).noalias() =
            Wt * cmat(d, cog, cols, cols);
        continue;
      }
      mat(col, k, cols, cols).noalias() = Wt * cmat(d, cog, cols, cols);
      for (int64_t s = 0; s < cnt; ++s) {
        col2im(col + s * p, cols, dx + ((n0 + s) * g.c_in + grp * cig) * plane, g);
      }
    }
  });
}

template <class T>
void backward_filter_typed(const T* dy, const T* x, T* dw, const Conv2dGeometry& g,
                           const ExecContext& ctx) {
  const int64_t p = g.oh * g.ow;
  const int64_t k = g.col_rows();
  const int64_t cog = g.c_out_per_group();
  const int64_t cig = g.c_in_per_group();
  const int64_t wsize = g.c_out * k;
  const bool pointwise = is_pointwise(g);
  const int64_t nb = samples_per_block(g);
  const int64_t blocks = (g.n + nb - 1) / nb;
  const int64_t max_by_memory =
      std::max<int64_t>(1, kMaxPartialBytes / (wsize * static_cast<int64_t>(sizeof(T))));
  const int64_t chunks = std::min({blocks, kMaxFilterChunks, max_by_memory});

  // Adds the gradient of blocks [b0, b1) to acc (c_out, k).
  auto chunk_body = [&](int64_t b0, int64_t b1, T* acc) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t n0 = b * nb;
      const int64_t cnt = std::min(nb, g.n - n0);
      const int64_t cols = cnt * p;
      const bool direct = cnt == 1;
      const bool need_col = !(pointwise && cnt == 1);
      T* ws = thread_workspace().get_as<T>((need_col ? k * cols : 0) + (direct ? 0 : cog * cols));
      T* col = ws;
      T* tmp = ws + (need_col ? k * cols : 0);
      for (int64_t grp = 0; grp < g.groups; ++grp) {
        const T* cp = col;
        if (need_col) {
          im2col_block(x, col, n0, cnt, grp, g);
        } else {
          cp = x + (n0 * g.c_in + grp * cig) * p;
        }
        const T* d = dy + (n0 * g.c_out + grp * cog) * p;
        if (!direct) {
          gather_group(dy, tmp, n0, cnt, g.c_out, grp * cog, cog, p);
          d = tmp;
        }
        mat(acc + grp * cog * k, cog, k, k).noalias() +=
            cmat(d, cog, cols, cols) * cmat(cp, k, cols, cols).transpose();
      }
    }
  };

  if (chunks == 1) {
    chunk_body(0, blocks, dw);
    return;
  }
  std::vector<T> partial(static_cast<std::size_t>(chunks * wsize), T(0));
  ctx.run([&] {
    tbb::parallel_for(
        tbb::blocked_range<int64_t>(0, chunks, 1),
        [&](const tbb::blocked_range<int64_t>& r) {
          for (int64_t i = r.begin(); i < r.end(); ++i) {
            chunk_body(i * blocks / chunks, (i + 1) * blocks / chunks, partial.data() + i * wsize);
          }
        },
        tbb::simple_partitioner());
  });
  // dw += partial_0 + partial_1 + ... in chunk order, element by element.
  for (int64_t i = 0; i < wsize; ++i) {
    T s = partial[static_cast<std::size_t>(i)];
    for (int64_t c = 1; c < chunks; ++c) s += partial[static_cast<std::size_t>(c * wsize + i)];
    dw[i] += s;
  }
}

template <class T>
void backward_bias_typed(const T* dy, T* db, int64_t n, int64_t c, int64_t hw,
                         const ExecContext& ctx) {
  auto channel = [&](int64_t o) {
    double s = 0.0;  // fixed order: samples, then positions
    for (int64_t b = 0; b < n; ++b) {
      const T* d = dy + (b * c + o) * hw;
      for (int64_t i = 0; i < hw; ++i) s += static_cast<double>(d[i]);
    }
    db[o] = static_cast<T>(static_cast<double>(db[o]) + s);
  };
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, c, std::max<int64_t>(1, 16384 / (n * hw))),
                      [&](const tbb::blocked_range<int64_t>& r) {
                        for (int64_t o = r.begin(); o < r.end(); ++o) channel(o);
                      });
  });
}

}  // namespace

void conv2d_forward(ConstTensorView x, ConstTensorView w, ConstTensorView bias, TensorView y,
                    const Conv2dGeometry& g, const ExecContext& ctx) {
  if (x.dtype == DType::kF64) {
    forward_typed<double>(x.data_as<double>(), w.data_as<double>(), bias.data_as<double>(),
                          y.data_as<double>(), g, ctx);
  } else {
    forward_typed<float>(x.data_as<float>(), w.data_as<float>(), bias.data_as<float>(),
                         y.data_as<float>(), g, ctx);
  }
}

void conv2d_backward_data(ConstTensorView dy, ConstTensorView w, TensorView dx,
                          const Conv2dGeometry& g, const ExecContext& ctx) {
  if (dy.dtype == DType::kF64) {
    backward_data_typed<double>(dy.data_as<double>(), w.data_as<double>(), dx.data_as<double>(), g,
                                ctx);
  } else {
    backward_data_typed<float>(dy.data_as<float>(), w.data_as<float>(), dx.data_as<float>(), g,
                               ctx);
  }
}

void conv2d_backward_filter(ConstTensorView dy, ConstTensorView x, TensorView dw,
                            const Conv2dGeometry& g, const ExecContext& ctx) {
  if (dy.dtype == DType::kF64) {
    backward_filter_typed<double>(dy.data_as<double>(), x.data_as<double>(), dw.data_as<double>(),
                                  g, ctx);
  } else {
    backward_filter_typed<float>(dy.data_as<float>(), x.data_as<float>(), dw.data_as<float>(), g,
                                 ctx);
  }
}

void conv2d_backward_bias(ConstTensorView dy, TensorView db, int64_t n, int64_t c, int64_t hw,
                          const ExecContext& ctx) {
  if (dy.dtype == DType::kF64) {
    backward_bias_typed<double>(dy.data_as<double>(), db.data_as<double>(), n, c, hw, ctx);
  } else {
    backward_bias_typed<float>(dy.data_as<float>(), db.data_as<float>(), n, c, hw, ctx);
  }
}

}  // namespace frugal::cpu
