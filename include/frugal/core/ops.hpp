#pragma once
/// Core tensor ops every module builds on: elementwise arithmetic, reductions, argmax / top-k and
/// GEMM. Each op runs on the device of its inputs (CPU: Eigen + oneTBB; CUDA: kernels + cuBLAS).
///
/// Conventions shared by every op here:
/// - Floating dtypes f32, f64, f16, bf16. f16 / bf16 compute in float, f64 in double, f32 in float.
/// - Inputs may be strided views (slices, transposes); results are new contiguous tensors on the
///   inputs' device unless the op works in place.
/// - Axes may be negative (counted from the end).
/// - min / max / abs_max give NaN when any reduced element is NaN; argmax / topk order a NaN above
///   every number (like torch).
/// - CPU sums accumulate in double in a fixed order (fixed-size chunks combined in index order), so
///   CPU results do not depend on the thread count. CUDA sums accumulate in double with a fixed
///   grid, so they are deterministic run to run (but not bit-identical to the CPU).
#include <cstdint>

#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"

namespace frugal {

// ---- elementwise --------------------------------------------------------------------------

/// a + b elementwise. Same shape, dtype and device (no broadcasting).
Tensor add(ConstTensorView a, ConstTensorView b, const ExecContext& ctx = {});
/// a - b elementwise. Same shape, dtype and device (no broadcasting).
Tensor sub(ConstTensorView a, ConstTensorView b, const ExecContext& ctx = {});
/// a * b elementwise. Same shape, dtype and device (no broadcasting).
Tensor mul(ConstTensorView a, ConstTensorView b, const ExecContext& ctx = {});
/// x * alpha elementwise (alpha is rounded to the compute type: float, or double for f64).
Tensor scale(ConstTensorView x, double alpha, const ExecContext& ctx = {});
/// In place y += alpha * x. x and y have the same shape, dtype and device; y may be strided.
/// x may be y itself but must not otherwise overlap it.
void axpy(double alpha, ConstTensorView x, TensorView y, const ExecContext& ctx = {});

// ---- reductions ---------------------------------------------------------------------------

/// max |x| over every element, as a rank-0 tensor of x's dtype. Throws on an empty tensor.
Tensor abs_max(ConstTensorView x, const ExecContext& ctx = {});
/// Smallest element, as a rank-0 tensor of x's dtype. Throws on an empty tensor.
Tensor min(ConstTensorView x, const ExecContext& ctx = {});
/// Largest element, as a rank-0 tensor of x's dtype. Throws on an empty tensor.
Tensor max(ConstTensorView x, const ExecContext& ctx = {});
/// Sum of every element, as a rank-0 tensor: f64 for f64 input, f32 otherwise. 0 when empty.
Tensor sum(ConstTensorView x, const ExecContext& ctx = {});
/// Mean of every element, rank-0, f64 for f64 input and f32 otherwise. Throws on an empty tensor.
Tensor mean(ConstTensorView x, const ExecContext& ctx = {});

/// max |x| along `axis`; the axis is removed (kept with extent 1 when keepdim). x's dtype.
/// Throws when the axis has length 0.
Tensor abs_max(ConstTensorView x, int axis, bool keepdim = false, const ExecContext& ctx = {});
/// Smallest element along `axis`, x's dtype. Throws when the axis has length 0.
Tensor min(ConstTensorView x, int axis, bool keepdim = false, const ExecContext& ctx = {});
/// Largest element along `axis`, x's dtype. Throws when the axis has length 0.
Tensor max(ConstTensorView x, int axis, bool keepdim = false, const ExecContext& ctx = {});
/// Sum along `axis` (f64 for f64 input, f32 otherwise); 0 where the axis has length 0.
Tensor sum(ConstTensorView x, int axis, bool keepdim = false, const ExecContext& ctx = {});
/// Mean along `axis` (f64 for f64 input, f32 otherwise). Throws when the axis has length 0.
Tensor mean(ConstTensorView x, int axis, bool keepdim = false, const ExecContext& ctx = {});

// ---- selection ----------------------------------------------------------------------------

/// Index of the largest element along `axis`, as i64 with the axis removed (extent 1 when
/// keepdim). Ties give the first index; a NaN counts as the largest value (like torch.argmax).
/// Throws when the axis has length 0.
Tensor argmax(ConstTensorView x, int axis, bool keepdim = false, const ExecContext& ctx = {});

/// Result of topk: `values` (x's dtype) and `indices` (i64), both x's shape with `axis` of length
/// k.
struct TopK {
  Tensor values;
  Tensor indices;
};

/// The k largest (largest = true) or smallest elements along `axis`, sorted best first; equal
/// values are ordered by lower index. A NaN counts as larger than every number (first when largest,
/// last when smallest). Needs 1 <= k <= x.dim(axis).
TopK topk(ConstTensorView x, int64_t k, int axis = -1, bool largest = true,
          const ExecContext& ctx = {});

// ---- GEMM ---------------------------------------------------------------------------------

/// Options of gemm / gemm_into: C = alpha * op(A) * op(B) + beta * C, op(X) = X^T when trans_x.
struct GemmOptions {
  bool trans_a = false;  ///< use A^T
  bool trans_b = false;  ///< use B^T
  double alpha = 1.0;    ///< scale of the product (rounded to float unless f64)
  double beta = 0.0;     ///< scale of the existing C (gemm_into only; gemm needs 0)
};

/// op(A) (M x K) times op(B) (K x N) scaled by alpha, as a new (M, N) tensor of A's dtype.
/// Rank-2 f32, f64, f16 or bf16 inputs of one dtype and device; strided views are accepted.
/// f16 / bf16 accumulate in f32 (CPU: converted to f32 and multiplied with Eigen; CUDA:
/// cublasGemmEx with CUBLAS_COMPUTE_32F). CUDA f32 uses full fp32 (TF32 off) for CPU parity.
/// K = 0 gives zeros. opt.beta must be 0 (there is no C to accumulate into; use gemm_into).
Tensor gemm(ConstTensorView a, ConstTensorView b, const GemmOptions& opt = {},
            const ExecContext& ctx = {});

/// In place C = alpha * op(A) * op(B) + beta * C with C of shape (M, N) and A's dtype, or f32 when
/// A and B are f16 / bf16 (mixed-precision accumulation). beta = 0 ignores C's old contents
/// (NaN included). C may be a strided view; it must not overlap A or B.
void gemm_into(ConstTensorView a, ConstTensorView b, TensorView c, const GemmOptions& opt = {},
               const ExecContext& ctx = {});

/// Matrix product a (M x K) * b (K x N) -> (M x N); gemm with default options.
Tensor matmul(ConstTensorView a, ConstTensorView b, const ExecContext& ctx = {});

}  // namespace frugal
