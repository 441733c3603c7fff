// STE and LSQ backward of fake quantization on contiguous host buffers (oneTBB over fixed chunks;
// elementwise, so the result does not depend on the thread count).
#include <tbb/parallel_for.h>

#include <algorithm>
#include <type_traits>

#include "core/dtype_dispatch.hpp"
#include "quant/quant_internal.hpp"

namespace frugal::cpu {
namespace {

using quant::detail::LinearPlan;

constexpr int64_t kGrain = int64_t{1} << 15;

template <class T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <class T, class R>
void backward_typed(const T* dy, const T* x, const float* s, const int32_t* z, const LinearPlan& p,
                    T* gx, R* terms, const ExecContext& ctx) {
  using A = Acc<T>;
  const int64_t n = p.outer * p.len * p.inner;
  const A qmin = static_cast<A>(p.qmin), qmax = static_cast<A>(p.qmax);
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, kGrain),
                      [&](const tbb::blocked_range<int64_t>& r) {
                        for (int64_t i = r.begin(); i < r.end(); ++i) {
                          const int64_t k = quant::detail::param_index(p, i);
                          A term = A(0);
                          gx[i] = static_cast<T>(quant::detail::fake_quant_grad(
                              static_cast<A>(dy[i]), static_cast<A>(x[i]), static_cast<A>(s[k]),
                              static_cast<A>(z[k]), qmin, qmax,
                              terms != nullptr ? &term : nullptr));
                          if (terms != nullptr) terms[i] = static_cast<R>(term);
                        }
                      });
  });
}

}  // namespace

void fake_quantize_backward(ConstTensorView grad_out, ConstTensorView x, ConstTensorView scale,
                            ConstTensorView zero_point, const LinearPlan& plan, TensorView grad_x,
                            TensorView scale_terms, const ExecContext& ctx) {
  detail::visit_compute_float(x.dtype, "fake_quantize_backward", [&]<class T>() {
    using R = std::conditional_t<std::is_same_v<T, double>, double, float>;
    backward_typed<T, R>(grad_out.data_as<T>(), x.data_as<T>(), scale.data_as<float>(),
                         zero_point.data_as<int32_t>(), plan, grad_x.data_as<T>(),
                         static_cast<R*>(scale_terms.data), ctx);
  });
}

}  // namespace frugal::cpu
