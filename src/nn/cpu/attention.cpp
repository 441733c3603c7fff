// Causal self-attention on the host (llm.c attention_forward / attention_backward): oneTBB over
// the (batch, head) pairs; per pair, Eigen maps over the strided q, k, v columns of qkv do the
// products, and the causal softmax runs row by row in double. Each pair writes only its own slice
// of the outputs, so the result does not depend on the thread count.
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <Eigen/Core>
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

/// Widens rows [0, t) x cols [0, hd) of a strided low-precision slice (row stride `ld`) to f32.
template <class L>
void widen(const L* src, int64_t t, int64_t hd, int64_t ld, RowMatrix<float>& dst) {
  dst.resize(t, hd);
  for (int64_t i = 0; i < t; ++i) {
    for (int64_t j = 0; j < hd; ++j) dst(i, j) = static_cast<float>(src[i * ld + j]);
  }
}

template <class L>
void forward_low_t(ConstTensorView qkv_v, int64_t num_heads, TensorView out_v, TensorView probs_v,
                   const ExecContext& ctx) {
  const Dims4 d = dims_of(qkv_v, num_heads);
  const L* qkv = qkv_v.data_as<L>();
  float* out = out_v.data_as<float>();
  L* probs = probs_v.data_as<L>();
  const float scale = 1.f / std::sqrt(static_cast<float>(d.hd));
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, d.b * d.h, 1), [&](const auto& r) {
      RowMatrix<float> q, k, v, p;  // per-task buffers: (T, hd) x 3 and (T, T)
      for (int64_t bh = r.begin(); bh < r.end(); ++bh) {
        const int64_t b = bh / d.h, h = bh % d.h;
        const L* base = qkv + b * d.t * 3 * d.c + h * d.hd;
        widen(base, d.t, d.hd, 3 * d.c, q);
        widen(base + d.c, d.t, d.hd, 3 * d.c, k);
        widen(base + 2 * d.c, d.t, d.hd, 3 * d.c, v);
        p.noalias() = scale * (q * k.transpose());
        L* pl = probs + bh * d.t * d.t;
        for (int64_t i = 0; i < d.t; ++i) {
          double m = -std::numeric_limits<double>::infinity();
          for (int64_t j = 0; j <= i; ++j) m = std::max(m, double(p(i, j)));
          double s = 0;
          for (int64_t j = 0; j <= i; ++j) s += std::exp(double(p(i, j)) - m);
          for (int64_t j = 0; j <= i; ++j) {
            const L pij =
                amp::detail::to_low<L>(static_cast<float>(std::exp(double(p(i, j)) - m) / s));
            pl[i * d.t + j] = pij;
            p(i, j) = static_cast<float>(pij);  // P V takes the stored (rounded) probabilities
          }
          for (int64_t j = i + 1; j < d.t; ++j) {
            pl[i * d.t + j] = L(0.f);
            p(i, j) = 0.f;
          }
        }
        MutMap<float> y(out + b * d.t * d.c + h * d.hd, d.t, d.hd, Eigen::OuterStride<>(d.c));
        y.noalias() = p * v;
      }
    });
  });
}

template <class L>
void backward_low_t(ConstTensorView g_v, ConstTensorView qkv_v, ConstTensorView probs_v,
                    int64_t num_heads, TensorView gqkv_v, const ExecContext& ctx) {
  const Dims4 d = dims_of(qkv_v, num_heads);
  const float* g = g_v.data_as<float>();
  const L* qkv = qkv_v.data_as<L>();
  const L* probs = probs_v.data_as<L>();
  float* gqkv = gqkv_v.data_as<float>();
  const float scale = 1.f / std::sqrt(static_cast<float>(d.hd));
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, d.b * d.h, 1), [&](const auto& r) {
      RowMatrix<float> q, k, v, p, dy, dp;
      for (int64_t bh = r.begin(); bh < r.end(); ++bh) {
        const int64_t b = bh / d.h, h = bh % d.h;
        const int64_t off = b * d.t * 3 * d.c + h * d.hd;
        widen(qkv + off, d.t, d.hd, 3 * d.c, q);
        widen(qkv + off + d.c, d.t, d.hd, 3 * d.c, k);
        widen(qkv + off + 2 * d.c, d.t, d.hd, 3 * d.c, v);
        widen(probs + bh * d.t * d.t, d.t, d.t, d.t, p);
        // The output gradient enters the products rounded to the low dtype.
        const float* gy = g + b * d.t * d.c + h * d.hd;
        dy.resize(d.t, d.hd);
        for (int64_t i = 0; i < d.t; ++i) {
          for (int64_t j = 0; j < d.hd; ++j)
            dy(i, j) = static_cast<float>(amp::detail::to_low<L>(gy[i * d.c + j]));
        }
        const Eigen::OuterStride<> s3(3 * d.c);
        MutMap<float> dq(gqkv + off, d.t, d.hd, s3);
        MutMap<float> dk(gqkv + off + d.c, d.t, d.hd, s3);
        MutMap<float> dv(gqkv + off + 2 * d.c, d.t, d.hd, s3);
        dp.noalias() = dy * v.transpose();
        dv.noalias() = p.transpose() * dy;
        for (int64_t i = 0; i < d.t; ++i) {
          double s = 0;
          for (int64_t j = 0; j <= i; ++j) s += double(p(i, j)) * double(dp(i, j));
          for (int64_t j = 0; j <= i; ++j) {
            dp(i, j) = static_cast<float>(double(p(i, j)) * (double(dp(i, j)) - s) * double(scale));
          }
          for (int64_t j = i + 1; j < d.t; ++j) dp(i, j) = 0.f;
        }
        dq.noalias() = dp * k;
        dk.noalias() = dp.transpose() * q;
      }
    });
  });
}

}  // namespace

void causal_attention_forward_low(ConstTensorView qkv, int64_t num_heads, TensorView out,
                                  TensorView probs, const ExecContext& ctx) {
  if (qkv.dtype == DType::kF16) return forward_low_t<Half>(qkv, num_heads, out, probs, ctx);
  forward_low_t<BFloat16>(qkv, num_heads, out, probs, ctx);
}

void causal_attention_backward_low(ConstTensorView grad_out, ConstTensorView qkv,
                                   ConstTensorView probs, int64_t num_heads, TensorView grad_qkv,
                                   const ExecContext& ctx) {
  if (qkv.dtype == DType::kF16) {
    return backward_low_t<Half>(grad_out, qkv, probs, num_heads, grad_qkv, ctx);
  }
  backward_low_t<BFloat16>(grad_out, qkv, probs, num_heads, grad_qkv, ctx);
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
