// Whole-tensor and per-axis reductions, argmax and top-k on contiguous host buffers.
// Every output element is reduced in index order by one task, and whole-tensor reductions combine
// fixed-size chunks in chunk order, so results do not depend on the number of threads.
#include <tbb/parallel_for.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <numeric>
#include <type_traits>
#include <vector>

#include "core/convert.hpp"
#include "core/dtype_dispatch.hpp"
#include "core/ops_internal.hpp"

namespace frugal::cpu {
namespace {

using detail::ReduceKind;

// Elements touched per task: large enough that task overhead is small next to the work.
constexpr int64_t kGrain = 1 << 15;
// Columns of (outer, len, inner) reduced together when inner > 1: a row of accumulators that
// stays in L1 while the task walks down the reduced axis.
constexpr int64_t kColumnBlock = 256;

/// Compute type of T for comparisons: double for f64, float otherwise (exact for every T).
template <class T>
using Cmp = std::conditional_t<std::is_same_v<T, double>, double, float>;

/// One reduction: accumulator type, identity, per-element map and (associative) combine.
template <class T, ReduceKind K>
struct Reducer {
  static constexpr bool kIsSum = K == ReduceKind::kSum || K == ReduceKind::kMean;
  using Acc = std::conditional_t<kIsSum, double, Cmp<T>>;

  static Acc init() {
    if constexpr (kIsSum || K == ReduceKind::kAbsMax) {
      return Acc(0);
    } else if constexpr (K == ReduceKind::kMax) {
      return -std::numeric_limits<Acc>::infinity();
    } else {
      return std::numeric_limits<Acc>::infinity();
    }
  }
  static Acc map(T v) {
    const auto a = static_cast<Acc>(static_cast<Cmp<T>>(v));
    if constexpr (K == ReduceKind::kAbsMax) {
      return std::fabs(a);
    } else {
      return a;
    }
  }
  static Acc combine(Acc acc, Acc v) {
    if constexpr (kIsSum) {
      return acc + v;
    } else if constexpr (K == ReduceKind::kMin) {
      return detail::nan_min(acc, v);
    } else {
      return detail::nan_max(acc, v);
    }
  }
  /// Writes the final value of `count` reduced elements to out[i].
  static void store(Acc acc, int64_t count, TensorView out, int64_t i) {
    if constexpr (kIsSum) {
      const double r = K == ReduceKind::kMean ? acc / static_cast<double>(count) : acc;
      if (out.dtype == DType::kF64) {
        out.data_as<double>()[i] = r;
      } else {
        out.data_as<float>()[i] = static_cast<float>(r);
      }
    } else {
      out.data_as<T>()[i] = detail::convert<T>(acc);
    }
  }
};

template <class T, ReduceKind K>
void reduce_all_typed(ConstTensorView x, TensorView out, const ExecContext& ctx) {
  using R = Reducer<T, K>;
  using Acc = typename R::Acc;
  const T* p = x.data_as<T>();
  const int64_t n = x.numel();
  const int64_t chunks = (n + detail::kReduceChunk - 1) / detail::kReduceChunk;
  std::vector<Acc> partial(static_cast<std::size_t>(chunks));
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, chunks, 1),
                      [&](const tbb::blocked_range<int64_t>& r) {
                        for (int64_t c = r.begin(); c < r.end(); ++c) {
                          const int64_t lo = c * detail::kReduceChunk;
                          const int64_t hi = std::min(n, lo + detail::kReduceChunk);
                          Acc acc = R::init();
                          for (int64_t i = lo; i < hi; ++i) acc = R::combine(acc, R::map(p[i]));
                          partial[static_cast<std::size_t>(c)] = acc;
                        }
                      });
  });
  Acc acc = R::init();
  for (const Acc& v : partial) acc = R::combine(acc, v);
  R::store(acc, n, out, 0);
}

template <class T, ReduceKind K>
void reduce_axis_typed(ConstTensorView x, int64_t outer, int64_t len, int64_t inner, TensorView out,
                       const ExecContext& ctx) {
  using R = Reducer<T, K>;
  using Acc = typename R::Acc;
  const T* p = x.data_as<T>();
  const int64_t blocks = (inner + kColumnBlock - 1) / kColumnBlock;
  const int64_t tasks = outer * blocks;
  const int64_t grain =
      std::max<int64_t>(1, kGrain / std::max<int64_t>(1, len * std::min(inner, kColumnBlock)));
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, tasks, grain),
                      [&](const tbb::blocked_range<int64_t>& r) {
                        std::array<Acc, kColumnBlock> acc;
                        for (int64_t t = r.begin(); t < r.end(); ++t) {
                          const int64_t o = t / blocks;
                          const int64_t i0 = (t % blocks) * kColumnBlock;
                          const int64_t w = std::min(kColumnBlock, inner - i0);
                          std::fill_n(acc.begin(), w, R::init());
                          for (int64_t l = 0; l < len; ++l) {
                            const T* row = p + (o * len + l) * inner + i0;
                            for (int64_t i = 0; i < w; ++i)
                              acc[i] = R::combine(acc[i], R::map(row[i]));
                          }
                          for (int64_t i = 0; i < w; ++i)
                            R::store(acc[i], len, out, o * inner + i0 + i);
                        }
                      });
  });
}

template <class T>
void dispatch_kind(int kind, auto&& fn) {
  switch (static_cast<ReduceKind>(kind)) {
    case ReduceKind::kAbsMax:
      return fn.template operator()<T, ReduceKind::kAbsMax>();
    case ReduceKind::kMin:
      return fn.template operator()<T, ReduceKind::kMin>();
    case ReduceKind::kMax:
      return fn.template operator()<T, ReduceKind::kMax>();
    case ReduceKind::kSum:
      return fn.template operator()<T, ReduceKind::kSum>();
    case ReduceKind::kMean:
      return fn.template operator()<T, ReduceKind::kMean>();
  }
}

}  // namespace

void reduce_all(int kind, ConstTensorView x, TensorView out, const ExecContext& ctx) {
  detail::visit_compute_float(x.dtype, "reduce", [&]<class T>() {
    dispatch_kind<T>(kind, [&]<class U, ReduceKind K>() { reduce_all_typed<U, K>(x, out, ctx); });
  });
}

void reduce_axis(int kind, ConstTensorView x, int64_t outer, int64_t len, int64_t inner,
                 TensorView out, const ExecContext& ctx) {
  detail::visit_compute_float(x.dtype, "reduce", [&]<class T>() {
    dispatch_kind<T>(kind, [&]<class U, ReduceKind K>() {
      reduce_axis_typed<U, K>(x, outer, len, inner, out, ctx);
    });
  });
}

void argmax(ConstTensorView x, int64_t outer, int64_t len, int64_t inner, TensorView out,
            const ExecContext& ctx) {
  detail::visit_compute_float(x.dtype, "argmax", [&]<class T>() {
    using C = Cmp<T>;
    const T* p = x.data_as<T>();
    int64_t* po = out.data_as<int64_t>();
    const int64_t blocks = (inner + kColumnBlock - 1) / kColumnBlock;
    const int64_t tasks = outer * blocks;
    const int64_t grain =
        std::max<int64_t>(1, kGrain / std::max<int64_t>(1, len * std::min(inner, kColumnBlock)));
    ctx.run([&] {
      tbb::parallel_for(tbb::blocked_range<int64_t>(0, tasks, grain),
                        [&](const tbb::blocked_range<int64_t>& r) {
                          std::array<C, kColumnBlock> best;
                          std::array<int64_t, kColumnBlock> arg;
                          for (int64_t t = r.begin(); t < r.end(); ++t) {
                            const int64_t o = t / blocks;
                            const int64_t i0 = (t % blocks) * kColumnBlock;
                            const int64_t w = std::min(kColumnBlock, inner - i0);
                            const T* first = p + o * len * inner + i0;
                            for (int64_t i = 0; i < w; ++i) {
                              best[i] = static_cast<C>(first[i]);
                              arg[i] = 0;
                            }
                            for (int64_t l = 1; l < len; ++l) {
                              const T* row = first + l * inner;
                              for (int64_t i = 0; i < w; ++i) {
                                const auto v = static_cast<C>(row[i]);
                                if (detail::select_before(v, l, best[i], arg[i], true)) {
                                  best[i] = v;
                                  arg[i] = l;
                                }
                              }
                            }
                            std::copy_n(arg.begin(), w, po + o * inner + i0);
                          }
                        });
    });
  });
}

void topk(ConstTensorView x, int64_t outer, int64_t len, int64_t inner, int64_t k, bool largest,
          TensorView values, TensorView indices, const ExecContext& ctx) {
  detail::visit_compute_float(x.dtype, "topk", [&]<class T>() {
    using C = Cmp<T>;
    const T* p = x.data_as<T>();
    T* pv = values.data_as<T>();
    int64_t* pi = indices.data_as<int64_t>();
    const int64_t rows = outer * inner;
    const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(1, len));
    ctx.run([&] {
      tbb::parallel_for(
          tbb::blocked_range<int64_t>(0, rows, grain), [&](const tbb::blocked_range<int64_t>& r) {
            std::vector<C> vals(static_cast<std::size_t>(len));
            std::vector<int64_t> order(static_cast<std::size_t>(len));
            for (int64_t row = r.begin(); row < r.end(); ++row) {
              const int64_t o = row / inner;
              const int64_t i = row % inner;
              const T* src = p + o * len * inner + i;
              for (int64_t l = 0; l < len; ++l) vals[l] = static_cast<C>(src[l * inner]);
              std::iota(order.begin(), order.end(), int64_t{0});
              // A strict total order (ties broken by index), so the selection is unique.
              auto before = [&](int64_t a, int64_t b) {
                return detail::select_before(vals[a], a, vals[b], b, largest);
              };
              if (k < len) std::nth_element(order.begin(), order.begin() + k, order.end(), before);
              std::sort(order.begin(), order.begin() + k, before);
              T* dv = pv + o * k * inner + i;
              int64_t* di = pi + o * k * inner + i;
              for (int64_t j = 0; j < k; ++j) {
                dv[j * inner] = src[order[j] * inner];
                di[j * inner] = order[j];
              }
            }
          });
    });
  });
}

}  // namespace frugal::cpu
