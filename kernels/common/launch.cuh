#pragma once
// Launch-shape helpers shared by the kernels.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "frugal/core/exec_context.hpp"

namespace frugal::cu {

struct LaunchShape {
  unsigned blocks;
  unsigned threads;
};

/// Grid for a grid-stride loop over n elements: 256 threads per block, at most 65535*4 blocks
/// (the loop covers the rest), at least one block.
inline LaunchShape grid_stride_launch(int64_t n, unsigned threads = 256) {
  const int64_t blocks = std::clamp<int64_t>((n + threads - 1) / threads, 1, 65535 * 4);
  return {static_cast<unsigned>(blocks), threads};
}

inline cudaStream_t stream_of(const ExecContext& ctx) {
  return static_cast<cudaStream_t>(ctx.stream);
}

}  // namespace frugal::cu
