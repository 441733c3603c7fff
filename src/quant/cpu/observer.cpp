// Observer passes on the host: min / max and the |x| histogram. Min and max do not depend on the
// order of evaluation and histogram counts are integers, so every thread count gives the same
// state. Chunks of kChunk elements are the unit of parallel work.
#include <tbb/enumerable_thread_specific.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "quant/observer_internal.hpp"

namespace frugal::cpu {
namespace {

constexpr int64_t kChunk = 1 << 16;

struct Acc {
  float min = std::numeric_limits<float>::infinity();
  float max = -std::numeric_limits<float>::infinity();
  int64_t nonfinite = 0;
};

// Min / max of the finite elements of p[0, n); the comparisons vectorize, the non-finite count is
// taken only when a chunk's result says there might be one.
void minmax_range(const float* p, int64_t n, Acc& acc) {
  float lo = acc.min, hi = acc.max;
  float bad = 0.f;  // becomes NaN / Inf when any element is
  for (int64_t i = 0; i < n; ++i) {
    const float v = p[i];
    bad += v * 0.f;  // 0 for finite v, NaN for NaN or Inf
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
  }
  if (bad != bad) {
    lo = acc.min;
    hi = acc.max;
    for (int64_t i = 0; i < n; ++i) {
      const float v = p[i];
      if (!std::isfinite(v)) {
        ++acc.nonfinite;
        continue;
      }
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  }
  acc.min = lo;
  acc.max = hi;
}

}  // namespace

detail::MinMaxStats observer_minmax(ConstTensorView x, const ExecContext& ctx) {
  const float* p = x.data_as<float>();
  const int64_t n = x.numel();
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<Acc> parts(static_cast<size_t>(chunks));
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, chunks, 1),
                      [&](const tbb::blocked_range<int64_t>& r) {
                        for (int64_t c = r.begin(); c < r.end(); ++c) {
                          const int64_t b = c * kChunk;
                          minmax_range(p + b, std::min(kChunk, n - b), parts[c]);
                        }
                      });
  });
  Acc all;
  for (const Acc& a : parts) {
    all.min = std::min(all.min, a.min);
    all.max = std::max(all.max, a.max);
    all.nonfinite += a.nonfinite;
  }
  return {all.min, all.max, all.nonfinite};
}

int64_t observer_minmax_axis(ConstTensorView x, int64_t outer, int64_t len, int64_t inner,
                             float* min, float* max, const ExecContext& ctx) {
  const float* p = x.data_as<float>();
  std::vector<int64_t> bad(static_cast<size_t>(len), 0);
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, len, 1),
                      [&](const tbb::blocked_range<int64_t>& r) {
                        for (int64_t c = r.begin(); c < r.end(); ++c) {
                          Acc acc;
                          for (int64_t o = 0; o < outer; ++o)
                            minmax_range(p + (o * len + c) * inner, inner, acc);
                          min[c] = acc.min;
                          max[c] = acc.max;
                          bad[c] = acc.nonfinite;
                        }
                      });
  });
  int64_t total = 0;
  for (int64_t b : bad) total += b;
  return total;
}

void observer_histogram(ConstTensorView x, float inv_width, int bins, int64_t* hist,
                        const ExecContext& ctx) {
  const float* p = x.data_as<float>();
  const int64_t n = x.numel();
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  // 32-bit counters per task, flushed into the worker's 64-bit ones before they could overflow.
  tbb::enumerable_thread_specific<std::vector<int64_t>> local(
      [&] { return std::vector<int64_t>(static_cast<size_t>(2 * bins), 0); });
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, chunks, 1),
                      [&](const tbb::blocked_range<int64_t>& r) {
                        std::vector<int64_t>& h = local.local();
                        std::vector<uint32_t> c32(static_cast<size_t>(2 * bins), 0);
                        int64_t pending = 0;
                        auto flush = [&] {
                          for (size_t k = 0; k < c32.size(); ++k) h[k] += c32[k];
                          std::fill(c32.begin(), c32.end(), 0u);
                          pending = 0;
                        };
                        for (int64_t c = r.begin(); c < r.end(); ++c) {
                          const int64_t b = c * kChunk;
                          const int64_t e = std::min(n, b + kChunk);
                          for (int64_t i = b; i < e; ++i) {
                            ++c32[detail::observer_bin(p[i], inv_width, bins)];
                          }
                          pending += e - b;
                          if (pending > (int64_t{1} << 31)) flush();
                        }
                        flush();
                      });
  });
  for (const std::vector<int64_t>& h : local) {
    for (int k = 0; k < 2 * bins; ++k) hist[k] += h[k];
  }
}

}  // namespace frugal::cpu
