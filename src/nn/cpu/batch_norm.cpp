// Batch norm on the host: one oneTBB task per channel (a channel's statistics and its outputs are
// independent of the others). Sums run in double over samples then positions, a fixed order, so
// results do not depend on the thread count. Statistics use two passes (mean, then the sum of
// squared deviations), which stays accurate when |mean| >> std.
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>

#include "nn/spatial_internal.hpp"

namespace frugal::cpu {
namespace {

template <class F>
void for_each_channel(int64_t n, int64_t c, int64_t hw, const ExecContext& ctx, F&& body) {
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, n * hw));
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, c, grain),
                      [&](const tbb::blocked_range<int64_t>& r) {
                        for (int64_t ch = r.begin(); ch < r.end(); ++ch) body(ch);
                      });
  });
}

/// gamma and beta of channel ch (1 and 0 without weight / bias).
template <class T>
double gamma_of(const T* w, int64_t ch) {
  return w != nullptr ? static_cast<double>(w[ch]) : 1.0;
}
template <class T>
double beta_of(const T* b, int64_t ch) {
  return b != nullptr ? static_cast<double>(b[ch]) : 0.0;
}

/// y = (x - mean) * invstd * gamma + beta over channel ch, as y = x * scale + shift.
template <class T>
void normalize_channel(const T* x, T* y, int64_t ch, int64_t n, int64_t c, int64_t hw, double mean,
                       double invstd, double gamma, double beta) {
  const double scale = invstd * gamma;
  const double shift = beta - mean * scale;
  for (int64_t b = 0; b < n; ++b) {
    const T* xp = x + (b * c + ch) * hw;
    T* yp = y + (b * c + ch) * hw;
    for (int64_t i = 0; i < hw; ++i) {
      yp[i] = static_cast<T>(static_cast<double>(xp[i]) * scale + shift);
    }
  }
}

template <class T>
void train_typed(const T* x, const T* w, const T* bias, T* rmean, T* rvar, T* mean_out,
                 T* invstd_out, T* y, int64_t n, int64_t c, int64_t hw, double momentum, double eps,
                 const ExecContext& ctx) {
  const double m = static_cast<double>(n * hw);
  for_each_channel(n, c, hw, ctx, [&](int64_t ch) {
    double s = 0.0;
    for (int64_t b = 0; b < n; ++b) {
      const T* xp = x + (b * c + ch) * hw;
      for (int64_t i = 0; i < hw; ++i) s += static_cast<double>(xp[i]);
    }
    const double mean = s / m;
    double ss = 0.0;
    for (int64_t b = 0; b < n; ++b) {
      const T* xp = x + (b * c + ch) * hw;
      for (int64_t i = 0; i < hw; ++i) {
        const double d = static_cast<double>(xp[i]) - mean;
        ss += d * d;
      }
    }
    const double var = ss / m;  // biased: normalisation
    const double invstd = 1.0 / std::sqrt(var + eps);
    mean_out[ch] = static_cast<T>(mean);
    invstd_out[ch] = static_cast<T>(invstd);
    if (rmean != nullptr) {
      rmean[ch] =
          static_cast<T>((1.0 - momentum) * static_cast<double>(rmean[ch]) + momentum * mean);
    }
    if (rvar != nullptr) {
      const double unbiased = ss / (m - 1.0);
      rvar[ch] =
          static_cast<T>((1.0 - momentum) * static_cast<double>(rvar[ch]) + momentum * unbiased);
    }
    normalize_channel(x, y, ch, n, c, hw, mean, invstd, gamma_of(w, ch), beta_of(bias, ch));
  });
}

template <class T>
void eval_typed(const T* x, const T* w, const T* bias, const T* rmean, const T* rvar, T* mean_out,
                T* invstd_out, T* y, int64_t n, int64_t c, int64_t hw, double eps,
                const ExecContext& ctx) {
  for_each_channel(n, c, hw, ctx, [&](int64_t ch) {
    const double mean = static_cast<double>(rmean[ch]);
    const double invstd = 1.0 / std::sqrt(static_cast<double>(rvar[ch]) + eps);
    mean_out[ch] = rmean[ch];
    invstd_out[ch] = static_cast<T>(invstd);
    normalize_channel(x, y, ch, n, c, hw, mean, invstd, gamma_of(w, ch), beta_of(bias, ch));
  });
}

template <class T>
void backward_typed(const T* dy, const T* x, const T* w, const T* mean, const T* invstd,
                    bool batch_stats, T* dx, T* gw, T* gb, int64_t n, int64_t c, int64_t hw,
                    const ExecContext& ctx) {
  const double m = static_cast<double>(n * hw);
  for_each_channel(n, c, hw, ctx, [&](int64_t ch) {
    const double mu = static_cast<double>(mean[ch]);
    const double is = static_cast<double>(invstd[ch]);
    const double gamma = gamma_of(w, ch);
    double sum_dy = 0.0;
    double sum_dy_xhat = 0.0;
    for (int64_t b = 0; b < n; ++b) {
      const T* xp = x + (b * c + ch) * hw;
      const T* dp = dy + (b * c + ch) * hw;
      for (int64_t i = 0; i < hw; ++i) {
        const double d = static_cast<double>(dp[i]);
        sum_dy += d;
        sum_dy_xhat += d * (static_cast<double>(xp[i]) - mu) * is;
      }
    }
    if (gw != nullptr) gw[ch] = static_cast<T>(static_cast<double>(gw[ch]) + sum_dy_xhat);
    if (gb != nullptr) gb[ch] = static_cast<T>(static_cast<double>(gb[ch]) + sum_dy);
    // Training: dx = gamma invstd (dy - mean(dy) - xhat mean(dy xhat)). Eval: gamma invstd dy.
    const double k = gamma * is;
    const double mean_dy = batch_stats ? sum_dy / m : 0.0;
    const double mean_dy_xhat = batch_stats ? sum_dy_xhat / m : 0.0;
    for (int64_t b = 0; b < n; ++b) {
      const T* xp = x + (b * c + ch) * hw;
      const T* dp = dy + (b * c + ch) * hw;
      T* op = dx + (b * c + ch) * hw;
      for (int64_t i = 0; i < hw; ++i) {
        const double xhat = (static_cast<double>(xp[i]) - mu) * is;
        op[i] = static_cast<T>(k * (static_cast<double>(dp[i]) - mean_dy - xhat * mean_dy_xhat));
      }
    }
  });
}

}  // namespace

void batch_norm_train(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                      TensorView running_mean, TensorView running_var, TensorView mean,
                      TensorView invstd, TensorView y, int64_t n, int64_t c, int64_t hw,
                      double momentum, double eps, const ExecContext& ctx) {
  if (x.dtype == DType::kF64) {
    train_typed<double>(x.data_as<double>(), weight.data_as<double>(), bias.data_as<double>(),
                        running_mean.data_as<double>(), running_var.data_as<double>(),
                        mean.data_as<double>(), invstd.data_as<double>(), y.data_as<double>(), n, c,
                        hw, momentum, eps, ctx);
  } else {
    train_typed<float>(x.data_as<float>(), weight.data_as<float>(), bias.data_as<float>(),
                       running_mean.data_as<float>(), running_var.data_as<float>(),
                       mean.data_as<float>(), invstd.data_as<float>(), y.data_as<float>(), n, c, hw,
                       momentum, eps, ctx);
  }
}

void batch_norm_eval(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                     ConstTensorView running_mean, ConstTensorView running_var, TensorView mean,
                     TensorView invstd, TensorView y, int64_t n, int64_t c, int64_t hw, double eps,
                     const ExecContext& ctx) {
  if (x.dtype == DType::kF64) {
    eval_typed<double>(x.data_as<double>(), weight.data_as<double>(), bias.data_as<double>(),
                       running_mean.data_as<double>(), running_var.data_as<double>(),
                       mean.data_as<double>(), invstd.data_as<double>(), y.data_as<double>(), n, c,
                       hw, eps, ctx);
  } else {
    eval_typed<float>(x.data_as<float>(), weight.data_as<float>(), bias.data_as<float>(),
                      running_mean.data_as<float>(), running_var.data_as<float>(),
                      mean.data_as<float>(), invstd.data_as<float>(), y.data_as<float>(), n, c, hw,
                      eps, ctx);
  }
}

void batch_norm_backward(ConstTensorView dy, ConstTensorView x, ConstTensorView weight,
                         ConstTensorView mean, ConstTensorView invstd, bool batch_stats,
                         TensorView dx, TensorView grad_weight, TensorView grad_bias, int64_t n,
                         int64_t c, int64_t hw, const ExecContext& ctx) {
  if (x.dtype == DType::kF64) {
    backward_typed<double>(dy.data_as<double>(), x.data_as<double>(), weight.data_as<double>(),
                           mean.data_as<double>(), invstd.data_as<double>(), batch_stats,
                           dx.data_as<double>(), grad_weight.data_as<double>(),
                           grad_bias.data_as<double>(), n, c, hw, ctx);
  } else {
    backward_typed<float>(dy.data_as<float>(), x.data_as<float>(), weight.data_as<float>(),
                          mean.data_as<float>(), invstd.data_as<float>(), batch_stats,
                          dx.data_as<float>(), grad_weight.data_as<float>(),
                          grad_bias.data_as<float>(), n, c, hw, ctx);
  }
}

}  // namespace frugal::cpu
