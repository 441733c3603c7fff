// Softmax cross-entropy and MSE on the host. oneTBB over rows (cross-entropy) or fixed chunks
// (MSE); per-row / per-chunk losses are written to their own slots and added in index order, so
// the loss does not depend on the thread count.
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/dtype_dispatch.hpp"
#include "nn/basic_ops.hpp"

namespace frugal::nn::cpu {
namespace {

template <class T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Logits per cross-entropy task (rows are grouped up to this many elements).
constexpr int64_t kRowGrainElems = 1 << 14;
// Elements per MSE chunk: fixed, so the chunk partial sums (and their order) depend only on n.
constexpr int64_t kMseChunk = 1 << 14;

/// One row of the fused cross-entropy: max, log-sum-exp, loss and gradient. Returns loss_r.
template <class T>
double ce_row(const T* x, T* g, int64_t c, int64_t t, double eps, double inv_count) {
  using A = Acc<T>;
  // Pass 1: max (NaN-ignoring here; a NaN still reaches the sum below) and the sum of the logits.
  A m = -std::numeric_limits<A>::infinity();
  double sum_x = 0.0;
  for (int64_t j = 0; j < c; ++j) {
    const A v = static_cast<A>(x[j]);
    m = v > m ? v : m;
    sum_x += static_cast<double>(v);
  }
  // Pass 2: e_j = exp(x_j - m) into g, and their sum in double.
  double s = 0.0;
  for (int64_t j = 0; j < c; ++j) {
    const A e = std::exp(static_cast<A>(x[j]) - m);
    g[j] = T(e);
    s += static_cast<double>(e);
  }
  // lse - x_j = (m - x_j) + log s: the large parts cancel exactly before the log is added.
  const double log_s = std::log(s);
  const double md = static_cast<double>(m);
  const double nll = (md - static_cast<double>(static_cast<A>(x[t]))) + log_s;
  const double smooth = (md - sum_x / static_cast<double>(c)) + log_s;
  // Pass 3: dL/dx_j = (p_j - (1 - eps) [j == t] - eps / C) / count.
  const auto inv_s = static_cast<A>(1.0 / s);
  const auto off = static_cast<A>(eps / static_cast<double>(c));
  const auto ic = static_cast<A>(inv_count);
  for (int64_t j = 0; j < c; ++j) g[j] = T((static_cast<A>(g[j]) * inv_s - off) * ic);
  g[t] = T(static_cast<A>(g[t]) - static_cast<A>((1.0 - eps) * inv_count));
  return (1.0 - eps) * nll + eps * smooth;
}

}  // namespace

double softmax_cross_entropy(ConstTensorView logits, ConstTensorView targets,
                             double label_smoothing, int64_t ignore_index, int64_t num_valid,
                             TensorView grad, const ExecContext& ctx) {
  return ::frugal::detail::visit_compute_float(
      logits.dtype, "softmax_cross_entropy", [&]<class T>() -> double {
        const T* px = logits.data_as<T>();
        const int64_t* pt = targets.data_as<int64_t>();
        T* pg = grad.data_as<T>();
        const int64_t n = logits.shape[0];
        const int64_t c = logits.shape[1];
        const double inv_count = num_valid > 0 ? 1.0 / static_cast<double>(num_valid) : 0.0;
        std::vector<double> row_loss(static_cast<std::size_t>(n), 0.0);
        const int64_t grain = std::max<int64_t>(1, kRowGrainElems / c);
        ctx.run([&] {
          tbb::parallel_for(
              tbb::blocked_range<int64_t>(0, n, grain), [&](const tbb::blocked_range<int64_t>& r) {
                for (int64_t i = r.begin(); i < r.end(); ++i) {
                  T* g = pg + i * c;
                  if (pt[i] == ignore_index) {
                    std::fill(g, g + c, T(Acc<T>(0)));
                    continue;
                  }
                  row_loss[i] = ce_row<T>(px + i * c, g, c, pt[i], label_smoothing, inv_count);
                }
              });
        });
        double total = 0.0;
        for (double l : row_loss) total += l;  // index order: thread-count invariant
        return total * inv_count;
      });
}

double mse_loss(ConstTensorView pred, ConstTensorView target, TensorView grad,
                const ExecContext& ctx) {
  return ::frugal::detail::visit_compute_float(pred.dtype, "mse_loss", [&]<class T>() -> double {
    using A = Acc<T>;
    const T* pp = pred.data_as<T>();
    const T* pt = target.data_as<T>();
    T* pg = grad.data_as<T>();
    const int64_t n = pred.numel();
    const int64_t chunks = (n + kMseChunk - 1) / kMseChunk;
    const auto two_over_n = static_cast<A>(2.0 / static_cast<double>(n));
    std::vector<double> partial(static_cast<std::size_t>(chunks), 0.0);
    ctx.run([&] {
      tbb::parallel_for(tbb::blocked_range<int64_t>(0, chunks, 1),
                        [&](const tbb::blocked_range<int64_t>& r) {
                          for (int64_t k = r.begin(); k < r.end(); ++k) {
                            const int64_t lo = k * kMseChunk;
                            const int64_t hi = std::min(n, lo + kMseChunk);
                            double acc = 0.0;
                            for (int64_t i = lo; i < hi; ++i) {
                              const A d = static_cast<A>(pp[i]) - static_cast<A>(pt[i]);
                              acc += static_cast<double>(d) * static_cast<double>(d);
                              pg[i] = T(d * two_over_n);
                            }
                            partial[k] = acc;
                          }
                        });
    });
    double total = 0.0;
    for (double p : partial) total += p;  // chunk order: thread-count invariant
    return total / static_cast<double>(n);
  });
}

}  // namespace frugal::nn::cpu
