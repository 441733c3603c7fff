// GEMM on the host: Eigen's blocked GEMM over row-major maps of the operands, split into row
// blocks of C that oneTBB runs in parallel. The row blocks depend only on the problem shape, never
// on the thread count, so every thread count gives bit-identical results.
// f16 / bf16 operands are converted to f32 and multiplied in f32 (Eigen has no fast half GEMM).
#include <tbb/parallel_for.h>

#include <Eigen/Core>
#include <algorithm>

#include "core/copy.hpp"
#include "core/ops_internal.hpp"

namespace frugal::cpu {
namespace {

template <class T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ConstMap = Eigen::Map<const RowMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class T>
using MutMap = Eigen::Map<RowMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;

// Rows of C per task. Eigen re-packs op(B) for every block, which costs O(K N) against O(rows K N)
// multiply-adds, so blocks stay tall: 64-row blocks cost ~15% at n = 1024 on one thread, 256-row
// blocks are within noise of a single Eigen call (bench/core/bench_gemm.cpp). At most 16 blocks;
// a product with fewer than kMinParallelFlops runs as one block (task overhead would dominate).
constexpr int64_t kMinBlockRows = 256;
constexpr int64_t kTargetBlocks = 16;
constexpr double kMinParallelFlops = 4e6;

template <class T>
ConstMap<T> map_of(ConstTensorView v) {
  return ConstMap<T>(v.data_as<T>(), v.shape[0], v.shape[1], Eigen::OuterStride<>(v.strides[0]));
}

template <class T>
void gemm_typed(ConstTensorView a, bool trans_a, ConstTensorView b, bool trans_b, double alpha,
                double beta, TensorView c, const ExecContext& ctx) {
  const ConstMap<T> A = map_of<T>(a);
  const ConstMap<T> B = map_of<T>(b);
  MutMap<T> C(c.data_as<T>(), c.shape[0], c.shape[1], Eigen::OuterStride<>(c.strides[0]));
  const int64_t m = C.rows();
  const int64_t n = C.cols();
  const int64_t k = trans_a ? A.rows() : A.cols();
  const T al = static_cast<T>(alpha);
  const T be = static_cast<T>(beta);

  // C[r0 : r0 + rows] = alpha * op(A)[r0 : r0 + rows] * op(B) + beta * C[r0 : r0 + rows].
  auto block = [&](int64_t r0, int64_t rows) {
    auto Cb = C.middleRows(r0, rows);
    if (beta == 0.0) {
      Cb.setZero();  // beta = 0 ignores C entirely, NaN included (BLAS semantics)
    } else if (beta != 1.0) {
      Cb *= be;
    }
    if (k == 0) return;
    if (!trans_a && !trans_b) {
      Cb.noalias() += al * A.middleRows(r0, rows) * B;
    } else if (!trans_a && trans_b) {
      Cb.noalias() += al * A.middleRows(r0, rows) * B.transpose();
    } else if (trans_a && !trans_b) {
      Cb.noalias() += al * A.middleCols(r0, rows).transpose() * B;
    } else {
      Cb.noalias() += al * A.middleCols(r0, rows).transpose() * B.transpose();
    }
  };

  const double flops =
      2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  int64_t block_rows = std::max(kMinBlockRows, (m + kTargetBlocks - 1) / kTargetBlocks);
  if (flops < kMinParallelFlops) block_rows = m;
  const int64_t blocks = (m + block_rows - 1) / block_rows;
  if (blocks <= 1) {
    block(0, m);
    return;
  }
  ctx.run([&] {
    tbb::parallel_for(
        tbb::blocked_range<int64_t>(0, blocks, 1),
        [&](const tbb::blocked_range<int64_t>& r) {
          for (int64_t i = r.begin(); i < r.end(); ++i) {
            const int64_t r0 = i * block_rows;
            block(r0, std::min(block_rows, m - r0));
          }
        },
        tbb::simple_partitioner());
  });
}

/// A contiguous f32 copy of `v` (strides need not be contiguous).
Tensor to_f32(ConstTensorView v, const ExecContext& ctx) {
  Tensor t = Tensor::empty(v.shape, DType::kF32, v.device, ctx);
  detail::copy(v, t.view(), ctx);
  return t;
}

}  // namespace

void gemm(ConstTensorView a, bool trans_a, ConstTensorView b, bool trans_b, double alpha,
          double beta, TensorView c, const ExecContext& ctx) {
  switch (a.dtype) {
    case DType::kF32:
      return gemm_typed<float>(a, trans_a, b, trans_b, alpha, beta, c, ctx);
    case DType::kF64:
      return gemm_typed<double>(a, trans_a, b, trans_b, alpha, beta, c, ctx);
    default:
      break;
  }
  // f16 / bf16: multiply f32 copies, accumulating in f32 like cublasGemmEx(CUBLAS_COMPUTE_32F).
  const Tensor a32 = to_f32(a, ctx);
  const Tensor b32 = to_f32(b, ctx);
  if (c.dtype == DType::kF32) {
    gemm_typed<float>(a32.cview(), trans_a, b32.cview(), trans_b, alpha, beta, c, ctx);
    return;
  }
  Tensor c32 = Tensor::empty(c.shape, DType::kF32, c.device, ctx);
  if (beta != 0.0) detail::copy(c, c32.view(), ctx);
  gemm_typed<float>(a32.cview(), trans_a, b32.cview(), trans_b, alpha, beta, c32.view(), ctx);
  detail::copy(c32.cview(), c, ctx);
}

}  // namespace frugal::cpu
