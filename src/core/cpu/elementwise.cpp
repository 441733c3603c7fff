// Elementwise add / sub / mul / scale / axpy on contiguous host buffers (oneTBB over fixed chunks).
#include <tbb/parallel_for.h>

#include <type_traits>

#include "core/dtype_dispatch.hpp"
#include "core/ops_internal.hpp"

namespace frugal::cpu {
namespace {

// Elements per task: large enough that task overhead is small next to ~1 ns per element.
constexpr int64_t kGrain = 1 << 15;

/// Arithmetic type of T: double for f64, float for f32 / f16 / bf16.
template <class T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

/// Runs fn(begin, end) over [0, n) in chunks of kGrain on ctx's threads.
template <class Fn>
void for_chunks(int64_t n, const ExecContext& ctx, Fn&& fn) {
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, kGrain),
                      [&](const tbb::blocked_range<int64_t>& r) { fn(r.begin(), r.end()); });
  });
}

template <class T, class Op>
void binary_typed(const T* a, const T* b, T* out, int64_t n, const ExecContext& ctx, Op op) {
  for_chunks(n, ctx, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      out[i] = T(op(static_cast<Acc<T>>(a[i]), static_cast<Acc<T>>(b[i])));
    }
  });
}

}  // namespace

void binary_op(int op, ConstTensorView a, ConstTensorView b, TensorView out,
               const ExecContext& ctx) {
  detail::visit_compute_float(a.dtype, "binary_op", [&]<class T>() {
    const T* pa = a.data_as<T>();
    const T* pb = b.data_as<T>();
    T* po = out.data_as<T>();
    const int64_t n = a.numel();
    using A = Acc<T>;
    switch (static_cast<detail::BinaryOp>(op)) {
      case detail::BinaryOp::kAdd:
        return binary_typed(pa, pb, po, n, ctx, [](A x, A y) { return x + y; });
      case detail::BinaryOp::kSub:
        return binary_typed(pa, pb, po, n, ctx, [](A x, A y) { return x - y; });
      case detail::BinaryOp::kMul:
        return binary_typed(pa, pb, po, n, ctx, [](A x, A y) { return x * y; });
    }
  });
}

void scale(ConstTensorView x, double alpha, TensorView out, const ExecContext& ctx) {
  detail::visit_compute_float(x.dtype, "scale", [&]<class T>() {
    const T* px = x.data_as<T>();
    T* po = out.data_as<T>();
    const auto s = static_cast<Acc<T>>(alpha);
    for_chunks(x.numel(), ctx, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) po[i] = T(static_cast<Acc<T>>(px[i]) * s);
    });
  });
}

void axpy(double alpha, ConstTensorView x, TensorView y, const ExecContext& ctx) {
  detail::visit_compute_float(x.dtype, "axpy", [&]<class T>() {
    const T* px = x.data_as<T>();
    T* py = y.data_as<T>();
    const auto s = static_cast<Acc<T>>(alpha);
    for_chunks(x.numel(), ctx, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        py[i] = T(static_cast<Acc<T>>(py[i]) + s * static_cast<Acc<T>>(px[i]));
      }
    });
  });
}

}  // namespace frugal::cpu
