// Unscale-and-check on the CPU, multi-tensor: one oneTBB loop runs over the chunks of all tensors
// (amp::detail::unscale_chunks: at most 64K elements each) (one pass, one parallel region
// per call however many tensors a model has). Each chunk does g *= inv_scale and tests the input
// bits for an all-ones exponent; a chunk that saw one stores 1 in its tensor's flag (an OR, so the
// flags do not depend on the thread count or the order of the chunks).
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "amp/amp_internal.hpp"

namespace frugal::cpu {
namespace {

// g[0, n) *= inv_scale; true when an input was Inf or NaN.
bool unscale_range(float* g, int64_t n, float inv_scale) {
  uint32_t nf = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float v = g[i];
    nf |= static_cast<uint32_t>((detail::bit_cast<uint32_t>(v) & 0x7F800000u) == 0x7F800000u);
    g[i] = v * inv_scale;
  }
  return nf != 0;
}

}  // namespace

std::vector<uint8_t> amp_unscale_check_multi(const std::vector<amp::detail::UnscaleChunk>& chunks,
                                             int64_t num_tensors, float inv_scale,
                                             const ExecContext& ctx) {
  std::vector<std::atomic<uint8_t>> flags(static_cast<size_t>(num_tensors));
  for (auto& f : flags) f.store(0, std::memory_order_relaxed);
  auto run = [&](size_t begin, size_t end) {
    for (size_t c = begin; c < end; ++c) {
      if (unscale_range(chunks[c].data, chunks[c].n, inv_scale)) {
        flags[static_cast<size_t>(chunks[c].tensor)].store(1, std::memory_order_relaxed);
      }
    }
  };
  if (chunks.size() <= 1) {
    run(0, chunks.size());  // one chunk: no parallel region
  } else {
    ctx.run([&] {
      tbb::parallel_for(tbb::blocked_range<size_t>(0, chunks.size(), 1),
                        [&](const tbb::blocked_range<size_t>& r) { run(r.begin(), r.end()); });
    });
  }
  std::vector<uint8_t> out(flags.size());
  for (size_t t = 0; t < flags.size(); ++t) out[t] = flags[t].load(std::memory_order_relaxed);
  return out;
}

}  // namespace frugal::cpu
