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

namespace {

/// f32 -> bf16 bits: nearest even (float_types.hpp), or stochastic with 16 random bits: adding
/// them to the dropped half and truncating rounds up with probability (dropped bits) / 2^16.
inline uint16_t moment_to_bf16(float x, bool stochastic, uint32_t r) {
  if (!stochastic || std::isnan(x)) return float_to_bf16_bits(x);
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const uint32_t exp = u & 0x7F800000u;
  if (exp == 0x7F800000u) return static_cast<uint16_t>(u >> 16);  // Inf stays Inf
  const uint32_t sum = u + (r & 0xFFFFu);
  // A carry into the exponent field of the max finite bf16 would give Inf: keep the truncation.
  if ((sum & 0x7F800000u) == 0x7F800000u) return static_cast<uint16_t>(u >> 16);
  return static_cast<uint16_t>(sum >> 16);
}

inline float bf16_to_f32(uint16_t b) { return bf16_bits_to_float(b); }

}  // namespace

void optim_adamw_update_bf16(TensorView p, ConstTensorView g, TensorView m, TensorView v,
                             double decay, double beta1, double beta2, double step_size,
                             double bc2_sqrt, double eps, bool stochastic, uint64_t seed,
                             uint64_t offset, const ExecContext& ctx) {
  float* pp = p.data_as<float>();
  const float* pg = g.data_as<float>();
  auto* pm = static_cast<uint16_t*>(m.data);
  auto* pv = static_cast<uint16_t*>(v.data);
  const float dec = static_cast<float>(decay);
  const double w = 1.0 - beta1;
  const bool low = std::fabs(w) < 0.5;
  const auto wt = static_cast<float>(w);
  const auto one_minus_w = static_cast<float>(1.0 - w);
  const auto b2 = static_cast<float>(beta2);
  const auto one_minus_b2 = static_cast<float>(1.0 - beta2);
  const auto neg_step = static_cast<float>(-step_size);
  const auto bc2 = static_cast<float>(bc2_sqrt);
  const auto e = static_cast<float>(eps);
  const int64_t n = p.numel();
  // Counter ranges: m uses blocks [offset, offset + ceil(n / 2)), v the next as many (two 16-bit
  // draws per 32-bit lane, four lanes per block: one block covers 2 elements of each moment).
  const uint64_t half = static_cast<uint64_t>((n + 1) / 2);
  for_chunks(n, ctx, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      uint32_t rm = 0, rv = 0;
      if (stochastic) {
        const auto blk = static_cast<uint64_t>(i) / 2;
        const Uint4 a = philox_block(seed, offset, blk);
        const Uint4 b = philox_block(seed, offset + half, blk);
        rm = (i & 1) ? a.y : a.x;
        rv = (i & 1) ? b.y : b.x;
      }
      // Update in fp32 registers from the stored bf16 moments, as the f32 kernel does.
      const float gi = pg[i];
      const float m0 = bf16_to_f32(pm[i]);
      const float diff = gi - m0;
      const float mi = low ? m0 + wt * diff : gi - diff * one_minus_w;
      const float vi = bf16_to_f32(pv[i]) * b2 + one_minus_b2 * (gi * gi);
      pm[i] = moment_to_bf16(mi, stochastic, rm);
      pv[i] = moment_to_bf16(vi, stochastic, rv);
      const float denom = std::sqrt(vi) / bc2 + e;
      pp[i] = pp[i] * dec + neg_step * (mi / denom);
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
