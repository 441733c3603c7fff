// Philox random fills on the CPU: oneTBB over blocks of 4 elements (one Philox output each). Every
// element is a pure function of its index, so the result never depends on the thread count.
#include "core/random.hpp"

#include <tbb/parallel_for.h>

#include <type_traits>

#include "core/convert.hpp"
#include "core/dtype_dispatch.hpp"
#include "frugal/core/philox.hpp"

namespace frugal::cpu {
namespace {

// Philox blocks per task: ~4K blocks (16K elements) take some tens of microseconds.
constexpr int64_t kGrainBlocks = 1 << 12;

/// Offset (in elements) of the element with row-major linear index `i`.
inline int64_t strided_offset(int64_t i, const Shape& shape, const Strides& strides) {
  int64_t off = 0;
  for (int d = shape.rank() - 1; d >= 0; --d) {
    const int64_t n = shape[d];
    off += (i % n) * strides[d];
    i /= n;
  }
  return off;
}

/// Runs gen(block, out[4]) for every block of dst and stores the (up to) 4 values it produces.
/// C is the compute type (float, or double for f64); T the element type.
template <class T, class C, class Gen>
void fill_blocks(TensorView dst, const ExecContext& ctx, Gen gen) {
  T* d = dst.data_as<T>();
  const int64_t n = dst.numel();
  const int64_t blocks = static_cast<int64_t>(philox_counters(n));
  const bool contiguous = dst.is_contiguous();
  ctx.run([&] {
    tbb::parallel_for(
        tbb::blocked_range<int64_t>(0, blocks, kGrainBlocks),
        [&](const tbb::blocked_range<int64_t>& r) {
          for (int64_t b = r.begin(); b < r.end(); ++b) {
            C v[4];
            gen(static_cast<uint64_t>(b), v);
            const int64_t first = 4 * b;
            const int64_t count = n - first < 4 ? n - first : 4;
            for (int64_t l = 0; l < count; ++l) {
              const int64_t i = first + l;
              d[contiguous ? i : strided_offset(i, dst.shape, dst.strides)] =
                  detail::convert<T>(v[l]);
            }
          }
        },
        tbb::simple_partitioner());
  });
}

}  // namespace

void fill_uniform(TensorView dst, float lo, float hi, const ExecContext& ctx) {
  const uint64_t seed = ctx.seed, offset = ctx.offset;
  detail::visit_compute_float(dst.dtype, "fill_uniform", [&]<class T>() {
    using C = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const C clo = static_cast<C>(lo);
    const C span = static_cast<C>(hi) - static_cast<C>(lo);
    fill_blocks<T, C>(dst, ctx, [=](uint64_t b, C* v) {
      uniform4(Philox4x32::generate(philox_counter(b, offset), seed), clo, span, v);
    });
  });
}

void fill_normal(TensorView dst, float mean, float std, const ExecContext& ctx) {
  const uint64_t seed = ctx.seed, offset = ctx.offset;
  detail::visit_compute_float(dst.dtype, "fill_normal", [&]<class T>() {
    using C = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const C m = static_cast<C>(mean), s = static_cast<C>(std);
    fill_blocks<T, C>(dst, ctx, [=](uint64_t b, C* v) {
      normal4<C>(Philox4x32::generate(philox_counter(b, offset), seed), m, s, v);
    });
  });
}

}  // namespace frugal::cpu
