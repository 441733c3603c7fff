// Logarithmic quantize / dequantize on contiguous host buffers; the per-element rule is
// quant::detail::log_code / log_value, shared with the CUDA kernels.
#include <tbb/parallel_for.h>

#include "core/convert.hpp"
#include "core/dtype_dispatch.hpp"
#include "quant/quant_internal.hpp"

namespace frugal::cpu {
namespace {

constexpr int64_t kGrain = int64_t{1} << 14;

template <class Fn>
void for_range(int64_t n, const ExecContext& ctx, Fn&& fn) {
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, kGrain),
                      [&](const tbb::blocked_range<int64_t>& r) {
                        for (int64_t i = r.begin(); i < r.end(); ++i) fn(i);
                      });
  });
}

}  // namespace

void log_quantize(ConstTensorView x, const quant::detail::LogPlan& plan, TensorView codes,
                  const ExecContext& ctx) {
  uint8_t* out = codes.data_as<uint8_t>();
  detail::visit_compute_float(x.dtype, "log_quantize", [&]<class T>() {
    const T* px = x.data_as<T>();
    for_range(x.numel(), ctx,
              [&](int64_t i) { out[i] = quant::detail::log_code(plan, detail::to_double(px[i])); });
  });
}

void log_dequantize(ConstTensorView codes, const quant::detail::LogPlan& plan, TensorView out,
                    const ExecContext& ctx) {
  const uint8_t* pc = codes.data_as<uint8_t>();
  float* po = out.data_as<float>();
  for_range(out.numel(), ctx, [&](int64_t i) { po[i] = quant::detail::log_value(plan, pc[i]); });
}

}  // namespace frugal::cpu
