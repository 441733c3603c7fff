// Linear quantize / dequantize / fake-quantize on contiguous host buffers.
//
// The flat element range is cut into fixed chunks of kChunk elements (a multiple of 4, so packed
// 4- and 2-bit codes never share a byte between tasks), run by oneTBB on ctx's threads. Inside a
// chunk the elements are walked in pieces that share their parameters in one of two ways:
// "scalar" pieces (one scale for the whole piece: per tensor, per channel with inner > 1, per group
// along the last axis) and "vector" pieces (the parameter index advances with the element:
// per channel along the last axis, per group with inner > 1). Both inner loops are branch-free
// (ternary clamps, std::rint) so GCC vectorizes them (-march=native: AVX2 / AVX-512).
#include <tbb/parallel_for.h>

#include <algorithm>
#include <array>
#include <type_traits>

#include "core/dtype_dispatch.hpp"
#include "frugal/core/philox.hpp"
#include "quant/quant_internal.hpp"

namespace frugal::cpu {
namespace {

using quant::detail::LinearPlan;

// Elements per task: 64 KiB of f32 input, large enough that task overhead vanishes next to the
// memory traffic, small enough that a packed chunk's staging buffer lives on the stack.
constexpr int64_t kChunk = int64_t{1} << 14;

template <class T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

/// The parameters (f32 scale, i32 zero point, read in place) and the code range in the compute
/// type A. at(k) gives the compute-type values of pair k; vector loops read the arrays directly.
template <class A>
struct Params {
  const float* s;
  const int32_t* z;
  A qmin, qmax;
  Params(ConstTensorView scale, ConstTensorView zero_point, const LinearPlan& p)
      : s(scale.data_as<float>()),
        z(zero_point.data_as<int32_t>()),
        qmin(static_cast<A>(p.qmin)),
        qmax(static_cast<A>(p.qmax)) {}
};

/// How elements map onto parameters: pieces of `row` elements; scalar pieces use parameter
/// index(r) for row r, vector pieces start at parameter base(r) + offset in row.
struct Rows {
  int64_t row = 1;
  bool vec = false;
  const LinearPlan* p = nullptr;

  explicit Rows(const LinearPlan& plan, int64_t n) : p(&plan) {
    switch (plan.granularity) {
      case 0:
        row = std::max<int64_t>(n, 1);
        break;
      case 1:
        vec = plan.inner == 1;
        row = vec ? plan.len : plan.inner;
        break;
      default:
        vec = plan.inner != 1;
        row = vec ? plan.inner : plan.group;
        break;
    }
  }
  /// Parameter index of row r (scalar pieces) or of its first element (vector pieces).
  int64_t param(int64_t r) const {
    switch (p->granularity) {
      case 0:
        return 0;
      case 1:
        return vec ? 0 : r % p->len;
      default:
        if (!vec) return r;
        return ((r / p->len) * (p->len / p->group) + (r % p->len) / p->group) * p->inner;
    }
  }
  /// Calls scalar(b, e, k) or vector(b, e, k0) for the pieces of [begin, end).
  template <class Scalar, class Vector>
  void walk(int64_t begin, int64_t end, Scalar&& scalar, Vector&& vector) const {
    for (int64_t i = begin; i < end;) {
      const int64_t r = i / row;
      const int64_t stop = std::min(end, (r + 1) * row);
      if (vec) {
        vector(i, stop, param(r) + (i - r * row));
      } else {
        scalar(i, stop, param(r));
      }
      i = stop;
    }
  }
};

/// Runs fn(begin, end) over [0, n) in chunks of kChunk on ctx's threads.
template <class Fn>
void for_chunks(int64_t n, const ExecContext& ctx, Fn&& fn) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, chunks, 4),
                      [&](const tbb::blocked_range<int64_t>& r) {
                        for (int64_t c = r.begin(); c < r.end(); ++c) {
                          fn(c * kChunk, std::min(n, (c + 1) * kChunk));
                        }
                      });
  });
}

// ---- the inner loops ------------------------------------------------------------------------

template <class T, class C, class A>
void quant_scalar(const T* __restrict x, C* __restrict out, int64_t n, A s, A z, A qmin, A qmax) {
  const A lo = qmin - z, hi = qmax - z;
  for (int64_t i = 0; i < n; ++i) {
    const A q = quant::detail::quant_offset(static_cast<A>(x[i]), s, lo, hi);
    out[i] = static_cast<C>(static_cast<int32_t>(q + z));
  }
}

template <class T, class C, class A>
void quant_vector(const T* __restrict x, C* __restrict out, int64_t n, const float* __restrict s,
                  const int32_t* __restrict z, A qmin, A qmax) {
  for (int64_t i = 0; i < n; ++i) {
    const A zi = static_cast<A>(z[i]);
    const A q = quant::detail::quant_offset(static_cast<A>(x[i]), static_cast<A>(s[i]), qmin - zi,
                                            qmax - zi);
    out[i] = static_cast<C>(static_cast<int32_t>(q + zi));
  }
}

/// Uniform in [0, 1) for element `i` of the Philox stream: 24 bits (float) or 32 bits (double).
template <class A>
A uniform_of(const Uint4& block, int64_t i) {
  const uint32_t bits = lane(block, static_cast<int>(i & 3));
  if constexpr (std::is_same_v<A, double>) {
    return uniform01_f64(bits);
  } else {
    return uniform01(bits);
  }
}

/// Stochastic pieces: element j of the piece is element `flat + j` of the stream.
template <class T, class C, class A>
void quant_stochastic(const T* x, C* out, int64_t n, int64_t flat, const float* s, const int32_t* z,
                      A qmin, A qmax, int64_t pstride, const ExecContext& ctx) {
  Uint4 block{};
  for (int64_t j = 0; j < n; ++j) {
    const int64_t i = flat + j;
    if (j == 0 || (i & 3) == 0)
      block = philox_block(ctx.seed, ctx.offset, static_cast<uint64_t>(i));
    const int64_t k = j * pstride;
    const A zk = static_cast<A>(z[k]);
    const A q = quant::detail::quant_offset_stochastic(
        static_cast<A>(x[j]), static_cast<A>(s[k]), qmin - zk, qmax - zk, uniform_of<A>(block, i));
    out[j] = static_cast<C>(static_cast<int32_t>(q + zk));
  }
}

/// Quantizes [begin, end) of x into out (out[0] is element `begin`).
template <class T, class C, class A>
void quantize_range(const T* x, C* out, int64_t begin, int64_t end, const Rows& rows,
                    const Params<A>& p, const LinearPlan& plan, const ExecContext& ctx) {
  if (plan.rounding == 0) {
    rows.walk(
        begin, end,
        [&](int64_t b, int64_t e, int64_t k) {
          quant_scalar(x + b, out + (b - begin), e - b, static_cast<A>(p.s[k]),
                       static_cast<A>(p.z[k]), p.qmin, p.qmax);
        },
        [&](int64_t b, int64_t e, int64_t k) {
          quant_vector(x + b, out + (b - begin), e - b, p.s + k, p.z + k, p.qmin, p.qmax);
        });
  } else {
    rows.walk(
        begin, end,
        [&](int64_t b, int64_t e, int64_t k) {
          quant_stochastic(x + b, out + (b - begin), e - b, b, p.s + k, p.z + k, p.qmin, p.qmax, 0,
                           ctx);
        },
        [&](int64_t b, int64_t e, int64_t k) {
          quant_stochastic(x + b, out + (b - begin), e - b, b, p.s + k, p.z + k, p.qmin, p.qmax, 1,
                           ctx);
        });
  }
}

/// Packs n codes (a multiple of 4 unless it is the tail) into bytes: 2 or 4 per byte.
template <class C>
void pack_codes(const C* c, uint8_t* dst, int64_t n, int bits) {
  if (bits <= 2) {
    for (int64_t b = 0; b * 4 < n; ++b) {
      uint8_t v = 0;
      for (int j = 0; j < 4 && b * 4 + j < n; ++j) {
        v = static_cast<uint8_t>(v | ((static_cast<uint8_t>(c[b * 4 + j]) & 3u) << (2 * j)));
      }
      dst[b] = v;
    }
  } else {
    for (int64_t b = 0; b * 2 < n; ++b) {
      const uint8_t lo = static_cast<uint8_t>(c[2 * b]) & 0x0Fu;
      const uint8_t hi = 2 * b + 1 < n ? static_cast<uint8_t>(c[2 * b + 1]) & 0x0Fu : 0u;
      dst[b] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

/// Unpacks n codes (sign-extended when signed) from bytes holding 2 or 4 per byte.
template <class C>
void unpack_codes(const uint8_t* src, C* c, int64_t n, int bits) {
  constexpr bool kSigned = std::is_signed_v<C>;
  const int per = bits <= 2 ? 4 : 2;
  const int w = bits <= 2 ? 2 : 4;
  const unsigned mask = (1u << w) - 1u;
  const unsigned half = 1u << (w - 1);
  for (int64_t i = 0; i < n; ++i) {
    const unsigned v = (src[i / per] >> (w * (i % per))) & mask;
    c[i] = kSigned ? static_cast<C>(static_cast<int>(v ^ half) - static_cast<int>(half))
                   : static_cast<C>(v);
  }
}

template <class T, class C>
void quantize_typed(ConstTensorView x, ConstTensorView scale, ConstTensorView zp,
                    const LinearPlan& plan, TensorView codes, const ExecContext& ctx) {
  using A = Acc<T>;
  const int64_t n = x.numel();
  const Params<A> p(scale, zp, plan);
  const Rows rows(plan, n);
  const T* px = x.data_as<T>();
  if (plan.bits > 4) {
    C* out = static_cast<C*>(codes.data);
    for_chunks(n, ctx, [&](int64_t b, int64_t e) {
      quantize_range(px, out + b, b, e, rows, p, plan, ctx);
    });
    return;
  }
  uint8_t* out = static_cast<uint8_t*>(codes.data);
  const int per = plan.bits <= 2 ? 4 : 2;
  for_chunks(n, ctx, [&](int64_t b, int64_t e) {
    std::array<C, kChunk> buf;
    quantize_range(px, buf.data(), b, e, rows, p, plan, ctx);
    pack_codes(buf.data(), out + b / per, e - b, plan.bits);
  });
}

// ---- dequantize -----------------------------------------------------------------------------

template <class C>
void dequant_scalar(const C* __restrict c, float* __restrict out, int64_t n, float s, float z) {
  for (int64_t i = 0; i < n; ++i) out[i] = (static_cast<float>(c[i]) - z) * s;
}

template <class C>
void dequant_vector(const C* __restrict c, float* __restrict out, int64_t n,
                    const float* __restrict s, const int32_t* __restrict z) {
  for (int64_t i = 0; i < n; ++i) {
    out[i] = (static_cast<float>(c[i]) - static_cast<float>(z[i])) * s[i];
  }
}

template <class C>
void dequantize_typed(ConstTensorView codes, ConstTensorView scale, ConstTensorView zp,
                      const LinearPlan& plan, TensorView out, const ExecContext& ctx) {
  const int64_t n = out.numel();
  const Params<float> p(scale, zp, plan);
  const Rows rows(plan, n);
  float* po = out.data_as<float>();
  auto run = [&](const C* c, int64_t begin, int64_t end) {
    rows.walk(
        begin, end,
        [&](int64_t b, int64_t e, int64_t k) {
          dequant_scalar(c + (b - begin), po + b, e - b, p.s[k], static_cast<float>(p.z[k]));
        },
        [&](int64_t b, int64_t e, int64_t k) {
          dequant_vector(c + (b - begin), po + b, e - b, p.s + k, p.z + k);
        });
  };
  if (plan.bits > 4) {
    const C* pc = static_cast<const C*>(codes.data);
    for_chunks(n, ctx, [&](int64_t b, int64_t e) { run(pc + b, b, e); });
    return;
  }
  const uint8_t* pc = static_cast<const uint8_t*>(codes.data);
  const int per = plan.bits <= 2 ? 4 : 2;
  for_chunks(n, ctx, [&](int64_t b, int64_t e) {
    std::array<C, kChunk> buf;
    unpack_codes(pc + b / per, buf.data(), e - b, plan.bits);
    run(buf.data(), b, e);
  });
}

// ---- fake quantize --------------------------------------------------------------------------

template <class T, class A>
void fake_scalar(const T* __restrict x, T* __restrict out, int64_t n, A s, A z, A qmin, A qmax) {
  const A lo = qmin - z, hi = qmax - z;
  for (int64_t i = 0; i < n; ++i) {
    out[i] = static_cast<T>(quant::detail::quant_offset(static_cast<A>(x[i]), s, lo, hi) * s);
  }
}

template <class T, class A>
void fake_vector(const T* __restrict x, T* __restrict out, int64_t n, const float* __restrict s,
                 const int32_t* __restrict z, A qmin, A qmax) {
  for (int64_t i = 0; i < n; ++i) {
    const A zi = static_cast<A>(z[i]);
    const A si = static_cast<A>(s[i]);
    out[i] = static_cast<T>(
        quant::detail::quant_offset(static_cast<A>(x[i]), si, qmin - zi, qmax - zi) * si);
  }
}

template <class T, class A>
void fake_stochastic(const T* x, T* out, int64_t n, int64_t flat, const float* s, const int32_t* z,
                     A qmin, A qmax, int64_t pstride, const ExecContext& ctx) {
  Uint4 block{};
  for (int64_t j = 0; j < n; ++j) {
    const int64_t i = flat + j;
    if (j == 0 || (i & 3) == 0)
      block = philox_block(ctx.seed, ctx.offset, static_cast<uint64_t>(i));
    const int64_t k = j * pstride;
    const A zk = static_cast<A>(z[k]);
    const A sk = static_cast<A>(s[k]);
    const A q = quant::detail::quant_offset_stochastic(static_cast<A>(x[j]), sk, qmin - zk,
                                                       qmax - zk, uniform_of<A>(block, i));
    out[j] = static_cast<T>(q * sk);
  }
}

template <class T>
void fake_typed(ConstTensorView x, ConstTensorView scale, ConstTensorView zp,
                const LinearPlan& plan, TensorView out, const ExecContext& ctx) {
  using A = Acc<T>;
  const int64_t n = x.numel();
  const Params<A> p(scale, zp, plan);
  const Rows rows(plan, n);
  const T* px = x.data_as<T>();
  T* po = out.data_as<T>();
  const bool stochastic = plan.rounding != 0;
  for_chunks(n, ctx, [&](int64_t begin, int64_t end) {
    rows.walk(
        begin, end,
        [&](int64_t b, int64_t e, int64_t k) {
          if (stochastic) {
            fake_stochastic(px + b, po + b, e - b, b, p.s + k, p.z + k, p.qmin, p.qmax, 0, ctx);
          } else {
            fake_scalar(px + b, po + b, e - b, static_cast<A>(p.s[k]), static_cast<A>(p.z[k]),
                        p.qmin, p.qmax);
          }
        },
        [&](int64_t b, int64_t e, int64_t k) {
          if (stochastic) {
            fake_stochastic(px + b, po + b, e - b, b, p.s + k, p.z + k, p.qmin, p.qmax, 1, ctx);
          } else {
            fake_vector(px + b, po + b, e - b, p.s + k, p.z + k, p.qmin, p.qmax);
          }
        });
  });
}

}  // namespace

void quantize_linear(ConstTensorView x, ConstTensorView scale, ConstTensorView zero_point,
                     const LinearPlan& plan, TensorView codes, const ExecContext& ctx) {
  detail::visit_compute_float(x.dtype, "quantize", [&]<class T>() {
    if (plan.is_signed) {
      quantize_typed<T, int8_t>(x, scale, zero_point, plan, codes, ctx);
    } else {
      quantize_typed<T, uint8_t>(x, scale, zero_point, plan, codes, ctx);
    }
  });
}

void dequantize_linear(ConstTensorView codes, ConstTensorView scale, ConstTensorView zero_point,
                       const LinearPlan& plan, TensorView out, const ExecContext& ctx) {
  if (plan.is_signed) {
    dequantize_typed<int8_t>(codes, scale, zero_point, plan, out, ctx);
  } else {
    dequantize_typed<uint8_t>(codes, scale, zero_point, plan, out, ctx);
  }
}

void fake_quantize_linear(ConstTensorView x, ConstTensorView scale, ConstTensorView zero_point,
                          const LinearPlan& plan, TensorView out, const ExecContext& ctx) {
  detail::visit_compute_float(x.dtype, "fake_quantize", [&]<class T>() {
    fake_typed<T>(x, scale, zero_point, plan, out, ctx);
  });
}

}  // namespace frugal::cpu
