// Dropout on the host: the Philox keep bits of nn/basic_ops.hpp, oneTBB over chunks of whole
// Philox blocks. Each element's bit depends only on (seed, step, index), so any thread count
// gives the same mask, and the same mask as CUDA.
#include <tbb/parallel_for.h>

#include <algorithm>
#include <type_traits>

#include "core/dtype_dispatch.hpp"
#include "nn/basic_ops.hpp"

namespace frugal::nn::cpu {
namespace {

template <class T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Elements per task (a multiple of 4, whole Philox blocks): ~10 ns per block of 4 elements.
constexpr int64_t kGrain = 1 << 14;

}  // namespace

void dropout_forward(ConstTensorView x, float p, double scale, uint64_t seed, uint64_t step,
                     TensorView y, TensorView mask, const ExecContext& ctx) {
  ::frugal::detail::visit_compute_float(x.dtype, "dropout_forward", [&]<class T>() {
    const T* px = x.data_as<T>();
    T* py = y.data_as<T>();
    uint8_t* pm = mask.data_as<uint8_t>();
    const int64_t n = x.numel();
    const auto s = static_cast<Acc<T>>(scale);
    const int64_t blocks = (n + 3) / 4;
    ctx.run([&] {
      tbb::parallel_for(tbb::blocked_range<int64_t>(0, blocks, kGrain / 4),
                        [&](const tbb::blocked_range<int64_t>& r) {
                          for (int64_t b = r.begin(); b < r.end(); ++b) {
                            // One Philox evaluation per block of 4 elements (detail::dropout_keep's
                            // stream).
                            const Uint4 bits =
                                detail::dropout_block(seed, step, static_cast<uint64_t>(b));
                            const int64_t end = std::min<int64_t>(4 * b + 4, n);
                            for (int64_t i = 4 * b; i < end; ++i) {
                              const bool keep = detail::dropout_keep_word(
                                  lane(bits, static_cast<int>(i - 4 * b)), p);
                              pm[i] = keep ? 1 : 0;
                              py[i] = keep ? T(static_cast<Acc<T>>(px[i]) * s) : T(Acc<T>(0));
                            }
                          }
                        });
    });
  });
}

void dropout_backward(ConstTensorView grad, ConstTensorView mask, double scale, TensorView out,
                      const ExecContext& ctx) {
  ::frugal::detail::visit_compute_float(grad.dtype, "dropout_backward", [&]<class T>() {
    const T* pg = grad.data_as<T>();
    const uint8_t* pm = mask.data_as<uint8_t>();
    T* po = out.data_as<T>();
    const auto s = static_cast<Acc<T>>(scale);
    ctx.run([&] {
      tbb::parallel_for(tbb::blocked_range<int64_t>(0, grad.numel(), kGrain),
                        [&](const tbb::blocked_range<int64_t>& r) {
                          for (int64_t i = r.begin(); i < r.end(); ++i) {
                            po[i] = pm[i] ? T(static_cast<Acc<T>>(pg[i]) * s) : T(Acc<T>(0));
                          }
                        });
    });
  });
}

}  // namespace frugal::nn::cpu
