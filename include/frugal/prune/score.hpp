#pragma once
/// Importance scores for pruning: magnitude |w|, L1 / L2 norms of rows (neurons of a Linear,
/// filters of a Conv2d seen as (C_out, C_in * kh * kw)), first-order Taylor |w * g| accumulated
/// over batches (Molchanov et al. 2017/2019), and Philox random scores (the baseline).
/// Higher score = more important = kept. Tensors only: nothing here knows about nn.
#include <cstdint>

#include "frugal/core/tensor.hpp"

namespace frugal::prune {

/// Which norm a structured score uses.
enum class Norm { kL1, kL2 };

/// |w| elementwise as a new tensor of w's dtype, shape and device (f32 or f64; any strides).
Tensor magnitude_scores(ConstTensorView w, const ExecContext& ctx = {});

/// Per-row norms of w viewed as (dim 0, product of the other dims): (rows) f64 on the host.
/// For a Linear weight (out, in) one score per output neuron; for a Conv2d weight
/// (C_out, C_in, kh, kw) one score per filter. L1 = sum |w|, L2 = sqrt(sum w^2), summed in
/// double in index order. w: rank >= 2, f32 or f64, any device (copied to the host).
Tensor row_norm_scores(ConstTensorView w, Norm norm = Norm::kL2, const ExecContext& ctx = {});

/// Uniform [0, 1) f32 scores of `shape` from Philox (ctx.seed, ctx.offset), the random baseline.
/// Identical on CPU and CUDA for the same seed (frugal/core/random.hpp).
Tensor random_scores(Shape shape, Device device = Device::cpu(), const ExecContext& ctx = {});

/// First-order Taylor importance accumulated over batches: after each backward, accumulate(w, g)
/// adds |w * g| elementwise (Molchanov et al., "Importance Estimation for Neural Network
/// Pruning", CVPR 2019, the per-weight form). Sums are kept in f64 on the host.
class TaylorAccumulator {
 public:
  TaylorAccumulator() = default;
  /// Adds |w * g| (same shape; f32 or f64; any device, copied to the host).
  void accumulate(ConstTensorView w, ConstTensorView grad);
  /// The sum so far (f64, w's shape; host). Throws InvalidArgument before any accumulate.
  Tensor scores() const;
  /// Per-row sums of the accumulated scores (rows = dim 0), for neuron / filter pruning.
  Tensor row_scores() const;
  /// Number of accumulate() calls.
  int64_t count() const { return count_; }
  /// Forgets the sums.
  void reset();

 private:
  Tensor sum_;
  int64_t count_ = 0;
};

}  // namespace frugal::prune
