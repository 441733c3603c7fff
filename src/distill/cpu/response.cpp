// Response KD on the host: one fused pass per row (see include/frugal/distill/response.hpp).
//
// A row is read from memory once: pass 1 (maxima and a finiteness check) brings it into L1, the
// next passes (exponentials and sums, then the gradient) run from cache, so the kernel is bound
// by memory traffic (read s and t, write the gradient) plus two or three exponentials per
// element. Reductions run in 16 independent lanes (a fixed lane order the compiler maps onto
// SIMD registers of any width) whose sums are added in double at the end of the row: the results
// do not depend on the thread count.
#include <tbb/parallel_for.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "distill/distill_internal.hpp"

// The row kernel uses GCC vector extensions of 16 floats, which the compiler lowers to the
// registers of the build's -march (FRUGAL_CPU_ARCH: one zmm with AVX-512, two ymm with AVX2,
// four xmm at baseline). FMA contraction is left on (GCC's C++ default): it makes the kernel ~20%
// faster; results are deterministic for a build and any thread count, and may differ in the last
// bit between builds for different ISAs.

namespace frugal::distill::cpu {
namespace {

using detail::KdBad;

/// SIMD types of the row kernel: GCC vector extensions, which every target clone lowers to its own
/// registers (one zmm, two ymm or four xmm for 16 floats). f64 (for tests and references) runs
/// scalar with std::exp.
template <class T>
struct Simd;
template <>
struct Simd<float> {
  typedef float V __attribute__((vector_size(64)));
  typedef int32_t VI __attribute__((vector_size(64)));
  static constexpr int kLanes = 16;
};
template <>
struct Simd<double> {
  using V = double;
  using VI = int64_t;
  static constexpr int kLanes = 1;
};

template <class V>
[[gnu::always_inline]] inline V splat(double c) {
  return V{} + static_cast<float>(c);
}
template <>
[[gnu::always_inline]] inline double splat<double>(double c) {
  return c;
}

template <class V>
[[gnu::always_inline]] inline V load(const void* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof(V));
  return v;
}
template <class V>
[[gnu::always_inline]] inline void store(void* p, V v) {
  __builtin_memcpy(p, &v, sizeof(V));
}

/// Sum of the lanes in double, lane 0 first.
[[gnu::always_inline]] inline double hsum(Simd<float>::V v) {
  double s = 0.0;
  for (int l = 0; l < 16; ++l) s += static_cast<double>(v[l]);
  return s;
}
[[gnu::always_inline]] inline double hsum(double v) { return v; }
[[gnu::always_inline]] inline float hmax(Simd<float>::V v) {
  float m = v[0];
  for (int l = 1; l < 16; ++l) m = v[l] > m ? v[l] : m;
  return m;
}
[[gnu::always_inline]] inline double hmax(double v) { return v; }

/// exp(x) for x <= 0 in float (V = float or a vector of floats): Cody-Waite reduction
/// x = n ln2 + f, |f| <= ln2 / 2, and the degree-7 polynomial of Cephes expf for e^f; 2^n goes
/// into the exponent bits. Relative error <= 1.2e-7 over [-87, 0] (measured against double exp);
/// x < -87 gives 0 (the true value is below 1.7e-38). Branch-free, so it vectorises.
template <class V, class VI>
[[gnu::always_inline]] inline V exp_poly(V x) {
  const V lo = splat<V>(-87.0);
  const V magic = splat<V>(12582912.0);  // 1.5 * 2^23: adding it rounds to an integer
  const V xc = x < lo ? lo : x;
  const V t = xc * splat<V>(1.44269504088896341) + magic;
  const VI n = __builtin_bit_cast(VI, t) - __builtin_bit_cast(VI, magic);
  const V nf = t - magic;
  V f = xc - nf * splat<V>(0.693145751953125);
  f = f - nf * splat<V>(1.428606765330187045e-06);
  V p = splat<V>(1.9875691500e-4);
  p = p * f + splat<V>(1.3981999507e-3);
  p = p * f + splat<V>(8.3334519073e-3);
  p = p * f + splat<V>(4.1665795894e-2);
  p = p * f + splat<V>(1.6666665459e-1);
  p = p * f + splat<V>(5.0000001201e-1);
  p = p * f * f + f + splat<V>(1.0);
  const V r = __builtin_bit_cast(V, __builtin_bit_cast(VI, p) + n * (1 << 23));
  return x < lo ? V{} : r;
}
[[gnu::always_inline]] inline Simd<float>::V exp_nonpos(Simd<float>::V x) {
  return exp_poly<Simd<float>::V, Simd<float>::VI>(x);
}
[[gnu::always_inline]] inline float exp_nonpos(float x) { return exp_poly<float, int32_t>(x); }
[[gnu::always_inline]] inline double exp_nonpos(double x) { return std::exp(x); }

struct RowKd {
  double kl = 0.0;
  double ce = 0.0;
  int bad = KdBad::kKdOk;
};

/// Max over x[0, n), plus sum of (x - x), which is 0 unless an element is NaN or Inf.
template <class T>
[[gnu::always_inline]] inline void max_and_check(const T* __restrict x, int64_t n, T& m, T& chk) {
  using V = typename Simd<T>::V;
  constexpr int L = Simd<T>::kLanes;
  V mv = splat<V>(-std::numeric_limits<double>::infinity());
  V cv = V{};
  const int64_t nb = n / L * L;
  for (int64_t j = 0; j < nb; j += L) {
    const V v = load<V>(x + j);
    mv = v > mv ? v : mv;
    cv += v - v;
  }
  m = static_cast<T>(hmax(mv));
  chk = static_cast<T>(hsum(cv));
  for (int64_t j = nb; j < n; ++j) {
    m = x[j] > m ? x[j] : m;
    chk += x[j] - x[j];
  }
}

/// e[j] = exp(x[j] * scale - offset) (every exponent <= 0) and returns their sum.
template <class T>
[[gnu::always_inline]] inline double exp_store_sum(const T* __restrict x, int64_t n, T scale,
                                                   T offset, T* __restrict e) {
  using V = typename Simd<T>::V;
  constexpr int L = Simd<T>::kLanes;
  const V sv = splat<V>(scale), ov = splat<V>(offset);
  V zv = V{};
  const int64_t nb = n / L * L;
  for (int64_t j = 0; j < nb; j += L) {
    const V v = exp_nonpos(load<V>(x + j) * sv - ov);
    store(e + j, v);
    zv += v;
  }
  double z = hsum(zv);
  for (int64_t j = nb; j < n; ++j) {
    e[j] = exp_nonpos(x[j] * scale - offset);
    z += static_cast<double>(e[j]);
  }
  return z;
}

/// One row. s (c); t (c) dense or (k) top-k values with idx (k); lse: the row's teacher
/// log-sum-exp at T for the uniform-tail top-k teacher, or null; g (c) out; st, sc scratch of
/// (c or k) and (c). kd_scale = alpha T / N, ce_scale = (1 - alpha) / N (label < 0: no CE).
template <class T>
[[gnu::always_inline]] inline RowKd kd_row(const T* __restrict s, const T* __restrict t,
                                           const int64_t* __restrict idx, const T* lse, int64_t k,
                                           int64_t label, int64_t c, T inv_t, T kd_scale,
                                           T ce_scale, T* __restrict g, T* __restrict st,
                                           T* __restrict sc) {
  using V = typename Simd<T>::V;
  constexpr int L = Simd<T>::kLanes;
  RowKd out;
  T tail_q = T(0);  // uniform tail: q of every class not stored
  const bool dense = idx == nullptr;
  const int64_t nt = dense ? c : k;
  const bool ce = label >= 0;
  if (ce && label >= c) {
    out.bad = KdBad::kKdBadLabel;
    return out;
  }
  if (!dense) {
    for (int64_t i = 0; i < k; ++i) {
      if (idx[i] < 0 || idx[i] >= c) {
        out.bad = KdBad::kKdBadIndex;
        return out;
      }
    }
  }
  // Pass 1: maxima; (x - x) sums to 0 unless a NaN or Inf is present.
  T ms, mt, cs, ct;
  max_and_check(s, c, ms, cs);
  max_and_check(t, nt, mt, ct);
  if (lse != nullptr) ct += *lse - *lse;
  if (!std::isfinite(cs + ct)) {
    out.bad = KdBad::kKdNonFinite;
    return out;
  }
  const T os = ms * inv_t;
  const T ot = mt * inv_t;
  // Pass 2: p numerators into g, q numerators into st, their sums, and W = sum_c e_q (b - a)
  // with a = s / T - max, b = t / T - max, so KL = W / Z_q - log Z_q + log Z_p.
  double zs, zt, w;
  if (dense) {
    const V iv = splat<V>(inv_t), osv = splat<V>(os), otv = splat<V>(ot);
    V zsv = V{}, ztv = V{}, wv = V{};
    const int64_t cb = c / L * L;
    for (int64_t j = 0; j < cb; j += L) {
      const V a = load<V>(s + j) * iv - osv;
      const V b = load<V>(t + j) * iv - otv;
      const V ea = exp_nonpos(a);
      const V eb = exp_nonpos(b);
      store(g + j, ea);
      store(st + j, eb);
      zsv += ea;
      ztv += eb;
      wv += eb * (b - a);
    }
    zs = hsum(zsv);
    zt = hsum(ztv);
    w = hsum(wv);
    for (int64_t j = cb; j < c; ++j) {
      const T a = s[j] * inv_t - os;
      const T b = t[j] * inv_t - ot;
      const T ea = exp_nonpos(a);
      const T eb = exp_nonpos(b);
      g[j] = ea;
      st[j] = eb;
      zs += static_cast<double>(ea);
      zt += static_cast<double>(eb);
      w += static_cast<double>(eb * (b - a));
    }
  } else if (lse == nullptr) {
    zs = exp_store_sum(s, c, inv_t, os, g);
    zt = w = 0.0;
    for (int64_t i = 0; i < k; ++i) {
      const T a = s[idx[i]] * inv_t - os;
      const T b = t[i] * inv_t - ot;
      const T eb = exp_nonpos(b);
      st[i] = eb;
      zt += static_cast<double>(eb);
      w += static_cast<double>(eb * (b - a));
    }
  } else {
    // Uniform tail: q_i = exp(t_i / T - lse) stored, m = 1 - sum q_i over the other C - k
    // classes, m / (C - k) each. With a = s / T - max (log p = a - log Z_p):
    // KL = sum_i q_i (log q_i - a_i) + m log(m / (C - k)) - (m / (C - k)) sum_{c not stored} a_c
    //      + (sum_c q_c) log Z_p.
    zs = exp_store_sum(s, c, inv_t, os, g);
    // sum over all c of a_c = (sum s) / T - c max / T; sum s in SIMD lanes, added in double.
    double sum_s = 0.0;
    {
      V acc = V{};
      const int64_t cb = c / L * L;
      for (int64_t j = 0; j < cb; j += L) acc += load<V>(s + j);
      sum_s = hsum(acc);
      for (int64_t j = cb; j < c; ++j) sum_s += static_cast<double>(s[j]);
    }
    const double sum_a =
        sum_s * static_cast<double>(inv_t) - static_cast<double>(c) * static_cast<double>(os);
    double qsum = 0.0, sum_a_stored = 0.0;
    w = 0.0;
    for (int64_t i = 0; i < k; ++i) {
      const T a = s[idx[i]] * inv_t - os;
      const T lq = t[i] * inv_t - *lse;
      const T q = exp_nonpos(lq < T(0) ? lq : T(0));
      st[i] = q;
      qsum += static_cast<double>(q);
      sum_a_stored += static_cast<double>(a);
      w += static_cast<double>(q) * (static_cast<double>(lq) - static_cast<double>(a));
    }
    const double m = qsum < 1.0 ? 1.0 - qsum : 0.0;
    const double qt = k < c ? m / static_cast<double>(c - k) : 0.0;
    w += (m > 0.0 && k < c ? m * std::log(qt) : 0.0) - qt * (sum_a - sum_a_stored);
    out.kl = w + (qsum + (k < c ? m : 0.0)) * std::log(zs);
    tail_q = static_cast<T>(qt);
    zt = 1.0;
  }
  if (lse == nullptr) out.kl = w / zt - std::log(zt) + std::log(zs);
  // Cross-entropy at temperature 1 shares the row maximum.
  double zc = 1.0;
  if (ce) {
    zc = exp_store_sum(s, c, T(1), ms, sc);
    out.ce = (static_cast<double>(ms) - static_cast<double>(s[label])) + std::log(zc);
  }
  // Pass 3: the gradient.
  const T as = static_cast<T>(static_cast<double>(kd_scale) / zs);
  const T at = static_cast<T>(static_cast<double>(kd_scale) / zt);
  const T ac = static_cast<T>(static_cast<double>(ce_scale) / zc);
  const V asv = splat<V>(as), acv = splat<V>(ac);
  const int64_t cb = c / L * L;
  if (dense && !ce) {
    // (e_p - e_q) a_p + e_q (a_p - a_q) = e_p a_p - e_q a_q, written so that identical rows give
    // exactly 0 whether or not the compiler fuses the multiply-adds.
    const V dv = splat<V>(as - at);
    for (int64_t j = 0; j < cb; j += L) {
      const V eq = load<V>(st + j);
      store(g + j, (load<V>(g + j) - eq) * asv + eq * dv);
    }
    for (int64_t j = cb; j < c; ++j) g[j] = (g[j] - st[j]) * as + st[j] * (as - at);
  } else if (dense) {
    const V dv = splat<V>(as - at);
    for (int64_t j = 0; j < cb; j += L) {
      const V eq = load<V>(st + j);
      store(g + j, (load<V>(g + j) - eq) * asv + eq * dv + load<V>(sc + j) * acv);
    }
    for (int64_t j = cb; j < c; ++j) {
      g[j] = (g[j] - st[j]) * as + st[j] * (as - at) + sc[j] * ac;
    }
  } else if (lse == nullptr && !ce) {
    for (int64_t j = 0; j < cb; j += L) store(g + j, load<V>(g + j) * asv);
    for (int64_t j = cb; j < c; ++j) g[j] = g[j] * as;
  } else if (lse == nullptr) {
    for (int64_t j = 0; j < cb; j += L) store(g + j, load<V>(g + j) * asv + load<V>(sc + j) * acv);
    for (int64_t j = cb; j < c; ++j) g[j] = g[j] * as + sc[j] * ac;
  } else {
    // Uniform tail: kd_scale (p - q_tail) everywhere, the stored classes corrected below.
    const T tq = tail_q * kd_scale;
    const V tqv = splat<V>(tq);
    if (ce) {
      for (int64_t j = 0; j < cb; j += L) {
        store(g + j, load<V>(g + j) * asv - tqv + load<V>(sc + j) * acv);
      }
      for (int64_t j = cb; j < c; ++j) g[j] = g[j] * as - tq + sc[j] * ac;
    } else {
      for (int64_t j = 0; j < cb; j += L) store(g + j, load<V>(g + j) * asv - tqv);
      for (int64_t j = cb; j < c; ++j) g[j] = g[j] * as - tq;
    }
  }
  if (!dense && lse == nullptr) {
    for (int64_t i = 0; i < k; ++i) g[idx[i]] -= st[i] * at;
  } else if (!dense) {
    for (int64_t i = 0; i < k; ++i) g[idx[i]] -= (st[i] - tail_q) * kd_scale;
  }
  if (ce) g[label] -= ce_scale;
  return out;
}

RowKd kd_row_f32(const float* s, const float* t, const int64_t* idx, const float* lse, int64_t k,
                 int64_t label, int64_t c, float inv_t, float kd_scale, float ce_scale, float* g,
                 float* st, float* sc) {
  return kd_row<float>(s, t, idx, lse, k, label, c, inv_t, kd_scale, ce_scale, g, st, sc);
}

RowKd kd_row_any(const float* s, const float* t, const int64_t* idx, const float* lse, int64_t k,
                 int64_t label, int64_t c, float inv_t, float kd_scale, float ce_scale, float* g,
                 float* st, float* sc) {
  return kd_row_f32(s, t, idx, lse, k, label, c, inv_t, kd_scale, ce_scale, g, st, sc);
}
RowKd kd_row_any(const double* s, const double* t, const int64_t* idx, const double* lse, int64_t k,
                 int64_t label, int64_t c, double inv_t, double kd_scale, double ce_scale,
                 double* g, double* st, double* sc) {
  return kd_row<double>(s, t, idx, lse, k, label, c, inv_t, kd_scale, ce_scale, g, st, sc);
}

// Logits per task: rows are grouped up to this many elements.
constexpr int64_t kRowGrainElems = 1 << 14;

}  // namespace

void distill_kd_loss(ConstTensorView student, ConstTensorView teacher, ConstTensorView indices,
                     ConstTensorView lse, ConstTensorView labels, double temperature,
                     double kd_scale, double ce_scale, TensorView grad, double* out,
                     const ExecContext& ctx) {
  const int64_t n = student.shape[0];
  const int64_t c = student.shape[1];
  const bool dense = indices.data == nullptr;
  const int64_t nt = teacher.shape[1];
  const int64_t k = dense ? 0 : nt;
  const int64_t* pl = labels.data != nullptr ? labels.data_as<int64_t>() : nullptr;
  const int64_t* pi = dense ? nullptr : indices.data_as<int64_t>();
  std::vector<double> row_kl(static_cast<std::size_t>(n), 0.0);
  std::vector<double> row_ce(static_cast<std::size_t>(n), 0.0);
  std::vector<int> row_bad(static_cast<std::size_t>(n), KdBad::kKdOk);
  detail::visit_real(student.dtype, "distill_kd_loss", [&]<class T>() {
    const T* ps = student.data_as<T>();
    const T* pt = teacher.data_as<T>();
    const T* pz = lse.data != nullptr ? lse.data_as<T>() : nullptr;
    T* pg = grad.data_as<T>();
    const T inv_t = static_cast<T>(1.0 / temperature);
    const auto ks = static_cast<T>(kd_scale);
    const auto cs = static_cast<T>(ce_scale);
    const int64_t grain = std::max<int64_t>(1, kRowGrainElems / std::max<int64_t>(c, 1));
    ctx.run([&] {
      tbb::parallel_for(
          tbb::blocked_range<int64_t>(0, n, grain), [&](const tbb::blocked_range<int64_t>& r) {
            std::vector<T> scratch(static_cast<std::size_t>(nt + c));
            for (int64_t i = r.begin(); i < r.end(); ++i) {
              const RowKd rk = kd_row_any(ps + i * c, pt + i * nt, dense ? nullptr : pi + i * k,
                                          pz != nullptr ? pz + i : nullptr, k,
                                          pl != nullptr ? (pl[i] < 0 ? c : pl[i]) : -1, c, inv_t,
                                          ks, cs, pg + i * c, scratch.data(), scratch.data() + nt);
              row_kl[i] = rk.kl;
              row_ce[i] = rk.ce;
              row_bad[i] = rk.bad;
            }
          });
    });
  });
  double kl = 0.0, ce = 0.0;
  for (int64_t i = 0; i < n; ++i) {  // row order: thread-count invariant
    kl += row_kl[i];
    ce += row_ce[i];
  }
  out[detail::kKdSum] = kl;
  out[detail::kCeSum] = ce;
  out[detail::kBadRow] = -1.0;
  out[detail::kBadKind] = KdBad::kKdOk;
  for (int64_t i = 0; i < n; ++i) {
    if (row_bad[i] != KdBad::kKdOk) {
      out[detail::kBadRow] = static_cast<double>(i);
      out[detail::kBadKind] = row_bad[i];
      break;
    }
  }
}

void distill_row_lse(ConstTensorView x, double temperature, TensorView lse,
                     const ExecContext& ctx) {
  const int64_t n = x.shape[0];
  const int64_t c = x.shape[1];
  double* out = lse.data_as<double>();
  const double inv_t = 1.0 / temperature;
  detail::visit_real(x.dtype, "distill_row_lse", [&]<class T>() {
    const T* px = x.data_as<T>();
    const int64_t grain = std::max<int64_t>(1, kRowGrainElems / std::max<int64_t>(c, 1));
    ctx.run([&] {
      tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, grain),
                        [&](const tbb::blocked_range<int64_t>& r) {
                          for (int64_t i = r.begin(); i < r.end(); ++i) {
                            const T* row = px + i * c;
                            double m = -std::numeric_limits<double>::infinity();
                            double chk = 0.0;
                            for (int64_t j = 0; j < c; ++j) {
                              const double v = static_cast<double>(row[j]) * inv_t;
                              m = v > m ? v : m;
                              chk += v - v;
                            }
                            double z = 0.0;
                            for (int64_t j = 0; j < c; ++j) {
                              z += std::exp(static_cast<double>(row[j]) * inv_t - m);
                            }
                            out[i] = std::isfinite(chk) ? m + std::log(z) : chk;
                          }
                        });
    });
  });
}

}  // namespace frugal::distill::cpu
