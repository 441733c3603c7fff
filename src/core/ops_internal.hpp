#pragma once
// Backend contract of the core ops (include/frugal/core/ops.hpp). Internal header, usable from
// host code and from .cu files.
//
// src/core/ops.cpp validates arguments, allocates outputs and hands the backends (cpu:: here,
// cu:: through cu_ops.def) contiguous inputs and contiguous outputs, except for gemm, whose
// operands only need a unit inner stride (see cpu::gemm). Reductions along an axis see x as a
// contiguous (outer, len, inner) block and write (outer, inner) results (topk: (outer, k, inner)).
#include <cstdint>

#include "frugal/core/config.hpp"
#include "frugal/core/tensor.hpp"

namespace frugal::detail {

/// Elementwise binary ops; the int value is what cu::binary_op receives.
enum class BinaryOp : int { kAdd = 0, kSub = 1, kMul = 2 };

/// Reductions; the int value is what cu::reduce_all / cu::reduce_axis receive.
enum class ReduceKind : int { kAbsMax = 0, kMin = 1, kMax = 2, kSum = 3, kMean = 4 };

/// Elements per chunk of a whole-tensor CPU sum: each chunk is summed in double in index order,
/// then the chunk sums are added in chunk order, so the result is the same for any thread count.
inline constexpr int64_t kReduceChunk = 1 << 14;

/// Selection order shared by every backend's argmax and topk: true when (a, ia) comes before
/// (b, ib). A NaN counts as larger than every number; equal values (NaN with NaN) go by lower
/// index. With `largest` larger values come first, otherwise smaller ones (NaN last).
template <class A>
FRUGAL_INLINE bool select_before(A a, int64_t ia, A b, int64_t ib, bool largest) {
  const bool an = a != a;
  const bool bn = b != b;
  if (an || bn) {
    if (an && bn) return ia < ib;
    return largest ? an : bn;
  }
  if (a != b) return largest ? a > b : a < b;
  return ia < ib;
}

/// NaN-propagating maximum / minimum: once either side is NaN the result is NaN.
template <class A>
FRUGAL_INLINE A nan_max(A acc, A v) {
  if (acc != acc) return acc;
  return (v != v || v > acc) ? v : acc;
}
template <class A>
FRUGAL_INLINE A nan_min(A acc, A v) {
  if (acc != acc) return acc;
  return (v != v || v < acc) ? v : acc;
}

}  // namespace frugal::detail

namespace frugal::cpu {

/// out = a op b; all contiguous, same shape and dtype.
void binary_op(int op, ConstTensorView a, ConstTensorView b, TensorView out,
               const ExecContext& ctx);
/// out = x * alpha; contiguous.
void scale(ConstTensorView x, double alpha, TensorView out, const ExecContext& ctx);
/// y += alpha * x; contiguous.
void axpy(double alpha, ConstTensorView x, TensorView y, const ExecContext& ctx);
/// out (rank 0) = reduction of every element of x (contiguous, non-empty unless kSum).
void reduce_all(int kind, ConstTensorView x, TensorView out, const ExecContext& ctx);
/// out (outer, inner) = reduction over the middle axis of x viewed as (outer, len, inner).
void reduce_axis(int kind, ConstTensorView x, int64_t outer, int64_t len, int64_t inner,
                 TensorView out, const ExecContext& ctx);
/// out (outer, inner), i64 = index of the largest element along len (first on ties, NaN largest).
void argmax(ConstTensorView x, int64_t outer, int64_t len, int64_t inner, TensorView out,
            const ExecContext& ctx);
/// values / indices (outer, k, inner) = the k best along len, best first, ties by lower index.
void topk(ConstTensorView x, int64_t outer, int64_t len, int64_t inner, int64_t k, bool largest,
          TensorView values, TensorView indices, const ExecContext& ctx);
/// C = alpha * op(A) op(B) + beta * C. A, B, C are rank 2 with strides[1] == 1 and
/// strides[0] >= cols (row-major with a leading dimension). A, B one dtype (f32/f64/f16/bf16); C
/// the same dtype or f32. beta == 0 ignores C's contents.
void gemm(ConstTensorView a, bool trans_a, ConstTensorView b, bool trans_b, double alpha,
          double beta, TensorView c, const ExecContext& ctx);

}  // namespace frugal::cpu
