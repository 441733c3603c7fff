// LayerNorm on the host (llm.c layernorm_forward / layernorm_backward): oneTBB over rows for the
// output and the input gradient, over column blocks for the parameter gradients, so every sum
// runs in one fixed order and the result does not depend on the thread count. Sums in double.
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "nn/cpu/transformer.hpp"

namespace frugal::cpu {
namespace {

// Rows per task: about 16K elements of work each.
int64_t row_grain(int64_t c) { return std::max<int64_t>(1, (int64_t{1} << 14) / c); }
// Parameter-gradient columns per task (each task walks every row for its columns).
constexpr int64_t kColBlock = 64;

template <class T>
void forward_t(ConstTensorView xv, ConstTensorView wv, ConstTensorView bv, double eps,
               TensorView outv, TensorView meanv, TensorView rstdv, const ExecContext& ctx) {
  const int64_t n = xv.shape[0], c = xv.shape[1];
  const T* x = xv.data_as<T>();
  const T* w = wv.data_as<T>();
  const T* b = bv.data_as<T>();
  T* out = outv.data_as<T>();
  T* mean = meanv.data_as<T>();
  T* rstd = rstdv.data_as<T>();
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, row_grain(c)), [&](const auto& r) {
      for (int64_t i = r.begin(); i < r.end(); ++i) {
        const T* xi = x + i * c;
        double m = 0;
        for (int64_t j = 0; j < c; ++j) m += xi[j];
        m /= static_cast<double>(c);
        double v = 0;  // two-pass variance: no cancellation when |mean| >> std
        for (int64_t j = 0; j < c; ++j) v += (xi[j] - m) * (xi[j] - m);
        v /= static_cast<double>(c);
        const double s = 1.0 / std::sqrt(v + eps);
        T* oi = out + i * c;
        for (int64_t j = 0; j < c; ++j) {
          double y = (xi[j] - m) * s;
          if (w) y *= w[j];
          if (b) y += b[j];
          oi[j] = static_cast<T>(y);
        }
        mean[i] = static_cast<T>(m);
        rstd[i] = static_cast<T>(s);
      }
    });
  });
}

template <class T>
void backward_t(ConstTensorView gv, ConstTensorView xv, ConstTensorView wv, ConstTensorView mv,
                ConstTensorView rv, TensorView giv, TensorView gwv, TensorView gbv,
                const ExecContext& ctx) {
  const int64_t n = xv.shape[0], c = xv.shape[1];
  const T* g = gv.data_as<T>();
  const T* x = xv.data_as<T>();
  const T* w = wv.data_as<T>();
  const T* mean = mv.data_as<T>();
  const T* rstd = rv.data_as<T>();
  T* gi = giv.data_as<T>();
  T* gw = gwv.data_as<T>();
  T* gb = gbv.data_as<T>();
  ctx.run([&] {
    // dx = rstd * (w*dy - mean(w*dy) - xhat * mean(w*dy*xhat)).
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, row_grain(c)), [&](const auto& r) {
      for (int64_t i = r.begin(); i < r.end(); ++i) {
        const T* gi_row = g + i * c;
        const T* xi = x + i * c;
        const double m = mean[i], s = rstd[i];
        double sum_d = 0, sum_dx = 0;
        for (int64_t j = 0; j < c; ++j) {
          const double d = w ? static_cast<double>(w[j]) * gi_row[j] : gi_row[j];
          sum_d += d;
          sum_dx += d * (xi[j] - m) * s;
        }
        const double mean_d = sum_d / c, mean_dx = sum_dx / c;
        T* out = gi + i * c;
        for (int64_t j = 0; j < c; ++j) {
          const double d = w ? static_cast<double>(w[j]) * gi_row[j] : gi_row[j];
          const double xhat = (xi[j] - m) * s;
          out[j] = static_cast<T>((d - mean_d - xhat * mean_dx) * s);
        }
      }
    });
    if (!gw && !gb) return;
    // dweight[j] += sum_i dy[i, j] * xhat[i, j], dbias[j] += sum_i dy[i, j], rows in order.
    const int64_t blocks = (c + kColBlock - 1) / kColBlock;
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, blocks, 1), [&](const auto& r) {
      for (int64_t blk = r.begin(); blk < r.end(); ++blk) {
        const int64_t j0 = blk * kColBlock, j1 = std::min(c, j0 + kColBlock);
        double acc_w[kColBlock] = {}, acc_b[kColBlock] = {};
        for (int64_t i = 0; i < n; ++i) {
          const T* gi_row = g + i * c;
          const T* xi = x + i * c;
          const double m = mean[i], s = rstd[i];
          for (int64_t j = j0; j < j1; ++j) {
            acc_w[j - j0] += static_cast<double>(gi_row[j]) * ((xi[j] - m) * s);
            acc_b[j - j0] += gi_row[j];
          }
        }
        for (int64_t j = j0; j < j1; ++j) {
          if (gw) gw[j] = static_cast<T>(gw[j] + acc_w[j - j0]);
          if (gb) gb[j] = static_cast<T>(gb[j] + acc_b[j - j0]);
        }
      }
    });
  });
}

}  // namespace

void layer_norm_forward(ConstTensorView x, ConstTensorView weight, ConstTensorView bias, double eps,
                        TensorView out, TensorView mean, TensorView rstd, const ExecContext& ctx) {
  if (x.dtype == DType::kF64) return forward_t<double>(x, weight, bias, eps, out, mean, rstd, ctx);
  forward_t<float>(x, weight, bias, eps, out, mean, rstd, ctx);
}

void layer_norm_backward(ConstTensorView grad_out, ConstTensorView x, ConstTensorView weight,
                         ConstTensorView mean, ConstTensorView rstd, TensorView grad_input,
                         TensorView grad_weight, TensorView grad_bias, const ExecContext& ctx) {
  if (x.dtype == DType::kF64) {
    return backward_t<double>(grad_out, x, weight, mean, rstd, grad_input, grad_weight, grad_bias,
                              ctx);
  }
  backward_t<float>(grad_out, x, weight, mean, rstd, grad_input, grad_weight, grad_bias, ctx);
}

}  // namespace frugal::cpu
