// Fused optimizer updates and the gradient-norm reduction on contiguous host buffers (oneTBB over
// fixed chunks). Each update reads and writes every element once; the loops are branch-free in
// the element index (the options are template parameters), so the compiler vectorises them.
#include <tbb/parallel_for.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/dtype_dispatch.hpp"
#include "core/ops_internal.hpp"
#include "frugal/core/float_types.hpp"
#include "frugal/core/philox.hpp"
#include "nn/optim_bf16.hpp"
#include "nn/optim_internal.hpp"

namespace frugal::cpu {
namespace {

// Elements per task: an update costs a few ns per element, so 2^14 amortises the task overhead.
constexpr int64_t kGrain = 1 << 14;

template <class Fn>
void for_chunks(int64_t n, const ExecContext& ctx, Fn&& fn) {
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, kGrain),
                      [&](const tbb::blocked_range<int64_t>& r) { fn(r.begin(), r.end()); });
  });
}

/// Only f32 and f64 reach the optimizer kernels (validated in src/nn/optim.cpp).
template <class F>
void visit_f32_f64(DType t, const char* op, F&& f) {
  if (t == DType::kF64) return f.template operator()<double>();
  if (t == DType::kF32) return f.template operator()<float>();
  detail::fail(ErrorCode::kUnsupported, op, "dtype ", dtype_name(t), " (expected f32 or f64)");
}

template <class T, bool kDecay, bool kMomentum, bool kNesterov, bool kFirst>
void sgd_loop(T* p, const T* g, T* buf, int64_t lo, int64_t hi, T neg_lr, T mom, T damp1, T wd) {
  for (int64_t i = lo; i < hi; ++i) {
    T d = g[i];
    if constexpr (kDecay) d = d + wd * p[i];
    if constexpr (kMomentum) {
      T b;
      if constexpr (kFirst) {
        b = d;
      } else {
        b = buf[i] * mom + damp1 * d;
      }
      buf[i] = b;
      if constexpr (kNesterov) {
        d = d + mom * b;
      } else {
        d = b;
      }
    }
    p[i] = p[i] + neg_lr * d;
  }
}

/// Calls fn.template operator()<B0, B1, B2, B3>() for four runtime booleans.
template <class F>
void with_bools(bool b0, bool b1, bool b2, bool b3, F&& f) {
  auto l3 = [&]<bool B0, bool B1, bool B2>() {
    b3 ? f.template operator()<B0, B1, B2, true>() : f.template operator()<B0, B1, B2, false>();
  };
  auto l2 = [&]<bool B0, bool B1>() {
    b2 ? l3.template operator()<B0, B1, true>() : l3.template operator()<B0, B1, false>();
  };
  auto l1 = [&]<bool B0>() {
    b1 ? l2.template operator()<B0, true>() : l2.template operator()<B0, false>();
  };
  b0 ? l1.template operator()<true>() : l1.template operator()<false>();
}

}  // namespace

void optim_sgd_update(TensorView p, ConstTensorView g, TensorView buf, double lr, double momentum,
                      double dampening, double weight_decay, bool nesterov, bool first,
                      const ExecContext& ctx) {
  visit_f32_f64(p.dtype, "optim_sgd_update", [&]<class T>() {
    T* pp = p.data_as<T>();
    const T* pg = g.data_as<T>();
    T* pb = momentum != 0 ? buf.data_as<T>() : nullptr;
    const T neg_lr = static_cast<T>(-lr);
    const T mom = static_cast<T>(momentum);
    const T damp1 = static_cast<T>(1.0 - dampening);
    const T wd = static_cast<T>(weight_decay);
    with_bools(weight_decay != 0, momentum != 0, nesterov, first,
               [&]<bool kDecay, bool kMomentum, bool kNesterov, bool kFirst>() {
                 for_chunks(p.numel(), ctx, [&](int64_t lo, int64_t hi) {
                   sgd_loop<T, kDecay, kMomentum, kNesterov, kFirst>(pp, pg, pb, lo, hi, neg_lr,
                                                                     mom, damp1, wd);
                 });
               });
  });
}

void optim_adamw_update(TensorView p, ConstTensorView g, TensorView m, TensorView v, double decay,
                        double beta1, double beta2, double step_size, double bc2_sqrt, double eps,
                        const ExecContext& ctx) {
  visit_f32_f64(p.dtype, "optim_adamw_update", [&]<class T>() {
    T* pp = p.data_as<T>();
    const T* pg = g.data_as<T>();
    T* pm = m.data_as<T>();
    T* pv = v.data_as<T>();
    const T dec = static_cast<T>(decay);
    // torch's lerp(m, g, w) = m + w (g - m) for |w| < 0.5, else g - (g - m)(1 - w).
    const double w = 1.0 - beta1;
    const bool low = std::fabs(w) < 0.5;
    const T wt = static_cast<T>(w);
    const T one_minus_w = static_cast<T>(1.0 - w);
    const T b2 = static_cast<T>(beta2);
    const T one_minus_b2 = static_cast<T>(1.0 - beta2);
    const T neg_step = static_cast<T>(-step_size);
    const T bc2 = static_cast<T>(bc2_sqrt);
    const T e = static_cast<T>(eps);
    for_chunks(p.numel(), ctx, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        const T gi = pg[i];
        const T diff = gi - pm[i];
        const T mi = low ? pm[i] + wt * diff : gi - diff * one_minus_w;
        const T vi = pv[i] * b2 + one_minus_b2 * (gi * gi);
        pm[i] = mi;
        pv[i] = vi;
        const T denom = std::sqrt(vi) / bc2 + e;
        pp[i] = pp[i] * dec + neg_step * (mi / denom);
      }
    });
  });
}

void optim_adamw_update_bf16(TensorView p, ConstTensorView g, TensorView m, TensorView v,
                             double decay, double beta1, double beta2, double step_size,
                             double bc2_sqrt, double eps, bool stochastic, uint64_t seed,
                             uint64_t offset, const ExecContext& ctx) {
  float* pp = p.data_as<float>();
  const float* pg = g.data_as<float>();
  auto* pm = static_cast<uint16_t*>(m.data);
  auto* pv = static_cast<uint16_t*>(v.data);
  const double w = 1.0 - beta1;
  const detail::AdamWBf16Step s{
      static_cast<float>(decay),    static_cast<float>(w),           static_cast<float>(1.0 - w),
      static_cast<float>(beta2),    static_cast<float>(1.0 - beta2), static_cast<float>(-step_size),
      static_cast<float>(bc2_sqrt), static_cast<float>(eps),         std::fabs(w) < 0.5};
  const int64_t n = p.numel();
  // m's stream starts at counter `offset`, v's at offset + ceil(n / 8) (nn/optim_bf16.hpp).
  const uint64_t v_offset = offset + detail::adamw_bf16_counters(static_cast<uint64_t>(n)) / 2;
  for_chunks(n, ctx, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      uint32_t rm = 0, rv = 0;
      if (stochastic) {
        const auto e = static_cast<uint64_t>(i);
        rm = detail::adamw_bf16_random(seed, offset, e);
        rv = detail::adamw_bf16_random(seed, v_offset, e);
      }
      pp[i] = detail::adamw_bf16_element(s, pp[i], pg[i], pm[i], pv[i], stochastic, rm, rv);
    }
  });
}

double optim_sum_squares(ConstTensorView x, const ExecContext& ctx) {
  double total = 0;
  visit_f32_f64(x.dtype, "optim_sum_squares", [&]<class T>() {
    const T* px = x.data_as<T>();
    const int64_t n = x.numel();
    const int64_t chunks = (n + detail::kReduceChunk - 1) / detail::kReduceChunk;
    std::vector<double> partial(static_cast<std::size_t>(chunks), 0.0);
    ctx.run([&] {
      tbb::parallel_for(int64_t{0}, chunks, [&](int64_t c) {
        const int64_t lo = c * detail::kReduceChunk;
        const int64_t hi = std::min(n, lo + detail::kReduceChunk);
        double s = 0;
        for (int64_t i = lo; i < hi; ++i) {
          const double v = static_cast<double>(px[i]);
          s += v * v;
        }
        partial[static_cast<std::size_t>(c)] = s;
      });
    });
    for (double s : partial) total += s;
  });
  return total;
}

void optim_scale_inplace(TensorView x, double alpha, const ExecContext& ctx) {
  visit_f32_f64(x.dtype, "optim_scale_inplace", [&]<class T>() {
    T* px = x.data_as<T>();
    const T a = static_cast<T>(alpha);
    for_chunks(x.numel(), ctx, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) px[i] = px[i] * a;
    });
  });
}

}  // namespace frugal::cpu
