// Causal self-attention on the host (llm.c attention_forward / attention_backward): oneTBB over
// the (batch, head) pairs; per pair, Eigen maps over the strided q, k, v columns of qkv do the
// products, and the causal softmax runs row by row in double. Each pair writes only its own slice
// of the outputs, so the result does not depend on the thread count. Under autocast the products
// run on amp::gemm (src/nn/attention.cpp) and only the causal softmax and its backward are here.
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>

#include "amp/low_store.hpp"
#include "frugal/core/float_types.hpp"
#include "nn/cpu/transformer.hpp"

namespace frugal::cpu {
namespace {

template <class T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ConstMap = Eigen::Map<const RowMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class T>
using MutMap = Eigen::Map<RowMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;

struct Dims4 {
  int64_t b, t, c, h, hd;
};

Dims4 dims_of(ConstTensorView qkv, int64_t num_heads) {
  const int64_t c = qkv.shape[2] / 3;
  return {qkv.shape[0], qkv.shape[1], c, num_heads, c / num_heads};
}

template <class T>
void forward_t(ConstTensorView qkv_v, int64_t num_heads, TensorView out_v, TensorView probs_v,
               const ExecContext& ctx) {
  const Dims4 d = dims_of(qkv_v, num_heads);
  const T* qkv = qkv_v.data_as<T>();
  T* out = out_v.data_as<T>();
  T* probs = probs_v.data_as<T>();
  const T scale = T(1) / std::sqrt(T(d.hd));
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, d.b * d.h, 1), [&](const auto& r) {
      for (int64_t bh = r.begin(); bh < r.end(); ++bh) {
        const int64_t b = bh / d.h, h = bh % d.h;
        const T* base = qkv + b * d.t * 3 * d.c + h * d.hd;
        const ConstMap<T> q(base, d.t, d.hd, Eigen::OuterStride<>(3 * d.c));
        const ConstMap<T> k(base + d.c, d.t, d.hd, Eigen::OuterStride<>(3 * d.c));
        const ConstMap<T> v(base + 2 * d.c, d.t, d.hd, Eigen::OuterStride<>(3 * d.c));
        MutMap<T> p(probs + bh * d.t * d.t, d.t, d.t, Eigen::OuterStride<>(d.t));
        MutMap<T> y(out + b * d.t * d.c + h * d.hd, d.t, d.hd, Eigen::OuterStride<>(d.c));
        p.noalias() = scale * (q * k.transpose());
        for (int64_t i = 0; i < d.t; ++i) {
          double m = -std::numeric_limits<double>::infinity();
          for (int64_t j = 0; j <= i; ++j) m = std::max(m, double(p(i, j)));
          double s = 0;
          for (int64_t j = 0; j <= i; ++j) s += std::exp(double(p(i, j)) - m);
          for (int64_t j = 0; j <= i; ++j) p(i, j) = T(std::exp(double(p(i, j)) - m) / s);
          for (int64_t j = i + 1; j < d.t; ++j) p(i, j) = T(0);
        }
        y.noalias() = p * v;
      }
    });
  });
}

template <class T>
void backward_t(ConstTensorView g_v, ConstTensorView qkv_v, ConstTensorView probs_v,
                int64_t num_heads, TensorView gqkv_v, const ExecContext& ctx) {
  const Dims4 d = dims_of(qkv_v, num_heads);
  const T* g = g_v.data_as<T>();
  const T* qkv = qkv_v.data_as<T>();
  const T* probs = probs_v.data_as<T>();
  T* gqkv = gqkv_v.data_as<T>();
  const T scale = T(1) / std::sqrt(T(d.hd));
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, d.b * d.h, 1), [&](const auto& r) {
      RowMatrix<T> dp;
      for (int64_t bh = r.begin(); bh < r.end(); ++bh) {
        const int64_t b = bh / d.h, h = bh % d.h;
        const int64_t off = b * d.t * 3 * d.c + h * d.hd;
        const Eigen::OuterStride<> s3(3 * d.c);
        const ConstMap<T> q(qkv + off, d.t, d.hd, s3);
        const ConstMap<T> k(qkv + off + d.c, d.t, d.hd, s3);
        const ConstMap<T> v(qkv + off + 2 * d.c, d.t, d.hd, s3);
        MutMap<T> dq(gqkv + off, d.t, d.hd, s3);
        MutMap<T> dk(gqkv + off + d.c, d.t, d.hd, s3);
        MutMap<T> dv(gqkv + off + 2 * d.c, d.t, d.hd, s3);
        const ConstMap<T> p(probs + bh * d.t * d.t, d.t, d.t, Eigen::OuterStride<>(d.t));
        const ConstMap<T> dy(g + b * d.t * d.c + h * d.hd, d.t, d.hd, Eigen::OuterStride<>(d.c));
        dp.noalias() = dy * v.transpose();  // dL/dprobs (T, T)
        dv.noalias() = p.transpose() * dy;
        // Softmax backward: dS = P * (dP - sum_j P dP), times the 1/sqrt(hd) of the scores.
        for (int64_t i = 0; i < d.t; ++i) {
          double s = 0;
          for (int64_t j = 0; j <= i; ++j) s += double(p(i, j)) * double(dp(i, j));
          for (int64_t j = 0; j <= i; ++j) {
            dp(i, j) = T(double(p(i, j)) * (double(dp(i, j)) - s) * double(scale));
          }
          for (int64_t j = i + 1; j < d.t; ++j) dp(i, j) = T(0);
        }
        dq.noalias() = dp * k;
        dk.noalias() = dp.transpose() * q;
      }
    });
  });
}

/// Causal softmax of one (T, T) f32 score matrix in double, stored rounded to L.
template <class L>
void softmax_rows_low(const float* sc, L* p, int64_t t) {
  for (int64_t i = 0; i < t; ++i) {
    const float* si = sc + i * t;
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j <= i; ++j) m = std::max(m, double(si[j]));
    double s = 0;
    for (int64_t j = 0; j <= i; ++j) s += std::exp(double(si[j]) - m);
    L* pi = p + i * t;
    for (int64_t j = 0; j <= i; ++j) {
      pi[j] = amp::detail::to_low<L>(static_cast<float>(std::exp(double(si[j]) - m) / s));
    }
    for (int64_t j = i + 1; j < t; ++j) pi[j] = L(0.f);
  }
}

/// dS = P * (dP - sum_j P dP) * scale of one (T, T) matrix in double, stored rounded to L.
template <class L>
void softmax_backward_rows_low(const L* p, const float* dp, double scale, L* ds, int64_t t) {
  for (int64_t i = 0; i < t; ++i) {
    const L* pi = p + i * t;
    const float* di = dp + i * t;
    double s = 0;
    for (int64_t j = 0; j <= i; ++j) s += double(static_cast<float>(pi[j])) * double(di[j]);
    L* oi = ds + i * t;
    for (int64_t j = 0; j <= i; ++j) {
      const double pij = static_cast<float>(pi[j]);
      oi[j] = amp::detail::to_low<L>(static_cast<float>(pij * (double(di[j]) - s) * scale));
    }
    for (int64_t j = i + 1; j < t; ++j) oi[j] = L(0.f);
  }
}

/// (B, T, P*C) f32 -> (P, B*H, T, hd) in L, rounded to nearest even; oneTBB over (b, t) rows.
template <class L>
void split_heads_low_t(ConstTensorView src, int64_t parts, int64_t num_heads, TensorView dst,
                       const ExecContext& ctx) {
  const int64_t b = src.shape[0], t = src.shape[1], c = src.shape[2] / parts;
  const int64_t h = num_heads, hd = c / num_heads;
  const float* s = src.data_as<float>();
  L* d = dst.data_as<L>();
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, b * t, 16), [&](const auto& r) {
      for (int64_t row = r.begin(); row < r.end(); ++row) {
        const int64_t bb = row / t, tt = row % t;
        const float* in = s + row * parts * c;
        for (int64_t p = 0; p < parts; ++p) {
          for (int64_t hh = 0; hh < h; ++hh) {
            L* out = d + ((p * b * h + bb * h + hh) * t + tt) * hd;
            const float* x = in + p * c + hh * hd;
            for (int64_t e = 0; e < hd; ++e) out[e] = amp::detail::to_low<L>(x[e]);
          }
        }
      }
    });
  });
}

template <class L>
void softmax_low_t(ConstTensorView scores, TensorView probs, const ExecContext& ctx) {
  const int64_t n = scores.shape[0], t = scores.shape[1];
  const float* sc = scores.data_as<float>();
  L* p = probs.data_as<L>();
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, 1), [&](const auto& r) {
      for (int64_t i = r.begin(); i < r.end(); ++i)
        softmax_rows_low(sc + i * t * t, p + i * t * t, t);
    });
  });
}

template <class L>
void softmax_backward_low_t(ConstTensorView probs, ConstTensorView dprobs, double scale,
                            TensorView dscores, const ExecContext& ctx) {
  const int64_t n = probs.shape[0], t = probs.shape[1];
  const L* p = probs.data_as<L>();
  const float* dp = dprobs.data_as<float>();
  L* ds = dscores.data_as<L>();
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, 1), [&](const auto& r) {
      for (int64_t i = r.begin(); i < r.end(); ++i) {
        softmax_backward_rows_low(p + i * t * t, dp + i * t * t, scale, ds + i * t * t, t);
      }
    });
  });
}

}  // namespace

void attention_split_heads_low(ConstTensorView src, int64_t parts, int64_t num_heads,
                               TensorView dst, const ExecContext& ctx) {
  if (dst.dtype == DType::kF16) return split_heads_low_t<Half>(src, parts, num_heads, dst, ctx);
  split_heads_low_t<BFloat16>(src, parts, num_heads, dst, ctx);
}

void attention_merge_heads(ConstTensorView src, int64_t num_heads, TensorView dst,
                           const ExecContext& ctx) {
  const int64_t parts = src.shape[0], b = dst.shape[0], t = dst.shape[1];
  const int64_t c = dst.shape[2] / parts, h = num_heads, hd = c / num_heads;
  const float* s = src.data_as<float>();
  float* d = dst.data_as<float>();
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, b * t, 16), [&](const auto& r) {
      for (int64_t row = r.begin(); row < r.end(); ++row) {
        const int64_t bb = row / t, tt = row % t;
        float* out = d + row * parts * c;
        for (int64_t p = 0; p < parts; ++p) {
          for (int64_t hh = 0; hh < h; ++hh) {
            const float* x = s + ((p * b * h + bb * h + hh) * t + tt) * hd;
            std::copy(x, x + hd, out + p * c + hh * hd);
          }
        }
      }
    });
  });
}

void causal_softmax_low(ConstTensorView scores, TensorView probs, const ExecContext& ctx) {
  if (probs.dtype == DType::kF16) return softmax_low_t<Half>(scores, probs, ctx);
  softmax_low_t<BFloat16>(scores, probs, ctx);
}

void causal_softmax_backward_low(ConstTensorView probs, ConstTensorView dprobs, double scale,
                                 TensorView dscores, const ExecContext& ctx) {
  if (probs.dtype == DType::kF16) {
    return softmax_backward_low_t<Half>(probs, dprobs, scale, dscores, ctx);
  }
  softmax_backward_low_t<BFloat16>(probs, dprobs, scale, dscores, ctx);
}

void causal_attention_forward(ConstTensorView qkv, int64_t num_heads, TensorView out,
                              TensorView probs, const ExecContext& ctx) {
  if (qkv.dtype == DType::kF64) return forward_t<double>(qkv, num_heads, out, probs, ctx);
  forward_t<float>(qkv, num_heads, out, probs, ctx);
}

void causal_attention_backward(ConstTensorView grad_out, ConstTensorView qkv, ConstTensorView probs,
                               int64_t num_heads, TensorView grad_qkv, const ExecContext& ctx) {
  if (qkv.dtype == DType::kF64) {
    return backward_t<double>(grad_out, qkv, probs, num_heads, grad_qkv, ctx);
  }
  backward_t<float>(grad_out, qkv, probs, num_heads, grad_qkv, ctx);
}

}  // namespace frugal::cpu
