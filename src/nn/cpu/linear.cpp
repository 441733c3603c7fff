// Bias add and bias-gradient column sum on the host (oneTBB over row blocks / column blocks).
#include <tbb/parallel_for.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "core/dtype_dispatch.hpp"
#include "nn/basic_ops.hpp"

namespace frugal::nn::cpu {
namespace {

/// Arithmetic type of T: double for f64, float for f32 / f16 / bf16.
template <class T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Elements per task of the bias add: large enough that task overhead is small next to the pass.
constexpr int64_t kAddGrain = 1 << 15;
// Columns per task of the column sum: each task walks every row of its column strip, so strips are
// wide enough for whole cache lines and vector loads, and narrow enough to give every thread work.
constexpr int64_t kColStrip = 64;

}  // namespace

void linear_add_bias(TensorView y, ConstTensorView bias, const ExecContext& ctx) {
  ::frugal::detail::visit_compute_float(y.dtype, "linear_add_bias", [&]<class T>() {
    T* py = y.data_as<T>();
    const T* pb = bias.data_as<T>();
    const int64_t m = y.shape[0];
    const int64_t n = y.shape[1];
    const int64_t grain = std::max<int64_t>(1, kAddGrain / std::max<int64_t>(n, 1));
    ctx.run([&] {
      tbb::parallel_for(tbb::blocked_range<int64_t>(0, m, grain),
                        [&](const tbb::blocked_range<int64_t>& r) {
                          for (int64_t i = r.begin(); i < r.end(); ++i) {
                            T* row = py + i * n;
                            for (int64_t j = 0; j < n; ++j) {
                              row[j] = T(static_cast<Acc<T>>(row[j]) + static_cast<Acc<T>>(pb[j]));
                            }
                          }
                        });
    });
  });
}

void linear_bias_grad(ConstTensorView grad, TensorView grad_bias, const ExecContext& ctx) {
  ::frugal::detail::visit_compute_float(grad.dtype, "linear_bias_grad", [&]<class T>() {
    const T* pg = grad.data_as<T>();
    T* pb = grad_bias.data_as<T>();
    const int64_t m = grad.shape[0];
    const int64_t n = grad.shape[1];
    const int64_t strips = (n + kColStrip - 1) / kColStrip;
    // Every column is summed in double over the rows in order, by exactly one task: the result
    // is independent of the thread count.
    ctx.run([&] {
      tbb::parallel_for(tbb::blocked_range<int64_t>(0, strips, 1),
                        [&](const tbb::blocked_range<int64_t>& r) {
                          double acc[kColStrip];
                          for (int64_t s = r.begin(); s < r.end(); ++s) {
                            const int64_t c0 = s * kColStrip;
                            const int64_t w = std::min(kColStrip, n - c0);
                            std::fill(acc, acc + w, 0.0);
                            for (int64_t i = 0; i < m; ++i) {
                              const T* row = pg + i * n + c0;
                              for (int64_t j = 0; j < w; ++j) {
                                acc[j] += static_cast<double>(static_cast<Acc<T>>(row[j]));
                              }
                            }
                            for (int64_t j = 0; j < w; ++j) {
                              pb[c0 + j] = T(static_cast<Acc<T>>(
                                  static_cast<double>(static_cast<Acc<T>>(pb[c0 + j])) + acc[j]));
                            }
                          }
                        });
    });
  });
}

}  // namespace frugal::nn::cpu
