#pragma once
// CPU backends of the amp module (src/amp/cpu/*.cpp).
#include <cstdint>
#include <vector>

#include "frugal/amp/cast.hpp"
#include "frugal/core/tensor.hpp"

namespace frugal::amp::detail {

/// One piece of a multi-tensor unscale-and-check: `n` f32 elements at `data`, of tensor `tensor`.
struct UnscaleChunk {
  float* data;
  int64_t n;
  int64_t tensor;
};

/// The tensors cut into chunks of at most 64K elements, in order (empty tensors give none): the
/// work list of the CPU loop and, as a table, of the CUDA kernel.
inline std::vector<UnscaleChunk> unscale_chunks(const std::vector<TensorView>& grads) {
  constexpr int64_t kChunk = int64_t{1} << 16;
  std::vector<UnscaleChunk> chunks;
  for (size_t t = 0; t < grads.size(); ++t) {
    float* p = grads[t].data_as<float>();
    const int64_t n = grads[t].numel();
    for (int64_t b = 0; b < n; b += kChunk) {
      chunks.push_back({p + b, n - b < kChunk ? n - b : kChunk, static_cast<int64_t>(t)});
    }
  }
  return chunks;
}

}  // namespace frugal::amp::detail

namespace frugal::cpu {

/// amp::cast on the CPU: writes `out` (contiguous, format of amp/cast_bits.hpp), returns the amax
/// of x when opt.compute_amax (else 0).
float amp_cast(ConstTensorView x, TensorView out, int format, const amp::CastOptions& opt,
               const ExecContext& ctx);

/// Multi-tensor unscale-and-check: every chunk *= inv_scale in place, one parallel pass over the
/// chunks of all `num_tensors` tensors; element t of the result is 1 when tensor t held a
/// non-finite value.
std::vector<uint8_t> amp_unscale_check_multi(const std::vector<amp::detail::UnscaleChunk>& chunks,
                                             int64_t num_tensors, float inv_scale,
                                             const ExecContext& ctx);

}  // namespace frugal::cpu
