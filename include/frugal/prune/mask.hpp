#pragma once
/// Pruning masks: unstructured (per tensor and global across tensors, like
/// torch.nn.utils.prune.l1_unstructured / global_unstructured), N:M semi-structured (NVIDIA ASP;
/// 2:4 by default), with an optional input-channel permutation search, and mask application.
///
/// Masks are u8 tensors (1 = kept, 0 = pruned) of the scores' shape and device.
///
/// Exact counts and ties: at sparsity s over n elements exactly k = llround(s * n) elements are
/// pruned (llround: halves round away from zero). The pruned ones are the k smallest scores;
/// among equal scores the one with the LOWER linear index is pruned first (for global masks the
/// index runs over the tensors in the order given, each in row-major order). So the mask is a
/// deterministic function of the scores, identical on CPU and CUDA.
///
/// Selection, not sorting: the CPU finds the k-th smallest score with a radix select on the
/// order-preserving integer image of the floats (16-bit digits, two passes for f32), O(n).
/// CUDA: the same keys sorted with cub::DeviceRadixSort, then one pass that applies the tie rule.
#include <cstdint>
#include <span>
#include <vector>

#include "frugal/core/tensor.hpp"

namespace frugal::prune {

/// Number of elements pruned at sparsity s of n elements: llround(s * n).
int64_t pruned_count(double sparsity, int64_t n);

/// Unstructured mask that prunes the llround(sparsity * n) smallest `scores` (f32 or f64,
/// contiguous or not, CPU or CUDA). sparsity in [0, 1). NaN scores throw InvalidArgument
/// (on CUDA this check reads one count back, so the call synchronizes ctx's stream).
Tensor unstructured_mask(ConstTensorView scores, double sparsity, const ExecContext& ctx = {});

/// unstructured_mask(|w|, sparsity): magnitude pruning (torch's l1_unstructured).
Tensor magnitude_mask(ConstTensorView w, double sparsity, const ExecContext& ctx = {});

/// Result of a global selection across several tensors.
struct GlobalMask {
  std::vector<Tensor> masks;  ///< one u8 mask per input, same shapes
  /// The smallest kept score: the (n - k)-th largest over all tensors (torch's global
  /// threshold); +inf when nothing is kept.
  double threshold = 0.0;
  int64_t pruned = 0;  ///< k = llround(sparsity * total)
  int64_t total = 0;   ///< elements over all tensors
};

/// One threshold across `scores` (all f32 or all f64, host): prunes the k smallest of the union,
/// ties as documented above. Like torch.nn.utils.prune.global_unstructured with L1Unstructured
/// when given magnitude scores.
GlobalMask global_unstructured_masks(std::span<const ConstTensorView> scores, double sparsity,
                                     const ExecContext& ctx = {});
/// Magnitude version: global_unstructured_masks of |w| for each weight.
GlobalMask global_magnitude_masks(std::span<const ConstTensorView> weights, double sparsity,
                                  const ExecContext& ctx = {});

/// N:M mask along the last dimension: of each group of m consecutive elements, keep the n with
/// the largest scores (ties: the lower index is kept). 0 < n < m <= 16, last dim divisible by m;
/// f32 or f64 scores, CPU or CUDA. Default 2:4 (NVIDIA Ampere sparse tensor cores).
Tensor nm_mask(ConstTensorView scores, int n = 2, int m = 4, const ExecContext& ctx = {});

/// True when `mask` (u8, any device) keeps at most n of every m along the last dimension.
bool is_nm_sparse(ConstTensorView mask, int n = 2, int m = 4);

/// Options of the permutation search.
struct PermutationOptions {
  int max_passes = 20;  ///< full sweeps over all column pairs (each applies the best swap found)
};

/// Result of nm_permutation_search.
struct Permutation {
  Tensor perm;         ///< (K) i64: column j of the permuted matrix is column perm[j]
  double kept_before;  ///< sum of kept scores of nm_mask on the identity order
  double kept_after;   ///< ... on the permuted order (>= kept_before)
  int passes = 0;      ///< sweeps done (stops early when no swap improves)
};

/// Input-channel permutation search for N:M (the "channel swap" strategy of NVIDIA ASP's
/// permutation search, Pool & Yu, "Channel Permutations for N:M Sparsity", NeurIPS 2021): from
/// the identity, each pass evaluates swapping every pair of columns in different groups and
/// applies the single swap that increases the total kept score the most; stops when none does or
/// after max_passes. Greedy: a local optimum, not the global one. Cost per pass
/// O(K^2 * rows * m). scores: (rows, K) f32/f64 host, K divisible by m.
Permutation nm_permutation_search(ConstTensorView scores, int n = 2, int m = 4,
                                  const PermutationOptions& opt = {});

/// N:M mask of scores whose columns are read in the order `perm`, returned in the ORIGINAL
/// column order: the N:M property holds for permute_columns(mask, perm).
Tensor nm_mask_permuted(ConstTensorView scores, ConstTensorView perm, int n = 2, int m = 4);

/// out[:, j] = x[:, perm[j]] for x (rows, K) on the host (any dtype of size 1, 4 or 8 bytes).
Tensor permute_columns(ConstTensorView x, ConstTensorView perm);

/// w *= mask in place (w f32/f64, mask u8 of w's shape, same device).
void apply_mask(TensorView w, ConstTensorView mask, const ExecContext& ctx = {});

/// Fraction of zero entries of a mask (u8, any device).
double mask_sparsity(ConstTensorView mask);

}  // namespace frugal::prune
