// Unscale-and-check on the CPU: g *= inv_scale and a non-finite test in one pass, oneTBB blocks
// of 64K elements. The test is on the input bits (exponent all ones), so it does not depend on
// the product, and the flag is an OR, independent of the thread count.
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_reduce.h>

#include <algorithm>
#include <cstdint>
#include <functional>

#include "amp/amp_internal.hpp"

namespace frugal::cpu {

bool amp_unscale_check(TensorView g, float inv_scale, const ExecContext& ctx) {
  constexpr int64_t kBlock = int64_t{1} << 16;
  const int64_t n = g.numel();
  float* p = g.data_as<float>();
  bool bad = false;
  ctx.run([&] {
    bad = tbb::parallel_reduce(
        tbb::blocked_range<int64_t>(0, n, kBlock), false,
        [&](const tbb::blocked_range<int64_t>& r, bool acc) {
          uint32_t nf = 0;
          for (int64_t i = r.begin(); i < r.end(); ++i) {
            const float v = p[i];
            nf |=
                static_cast<uint32_t>((detail::bit_cast<uint32_t>(v) & 0x7F800000u) == 0x7F800000u);
            p[i] = v * inv_scale;
          }
          return acc || nf != 0;
        },
        std::logical_or<bool>());
  });
  return bad;
}

}  // namespace frugal::cpu
