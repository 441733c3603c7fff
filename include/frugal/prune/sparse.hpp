#pragma once
/// Sparse weight formats and their products with dense activations:
///   CSR (i32 row pointers and column indices, cuSPARSE's CUSPARSE_INDEX_32I layout),
///   BSR (dense br x bc blocks, block-CSR), and
///   the 2:4 compressed format: values (M, K/2) plus 2-bit in-group column indices packed four
///   per byte, (M, K/8) u8 (the layout of Ampere sparse tensor-core metadata, in spirit).
/// SpMM Y (M, N) = W (M, K, sparse) * X (K, N, dense, row-major).
///   CPU: oneTBB over blocks of rows; the inner loop is a vectorised axpy over a tile of N columns
///        kept in registers (tiles of 64 columns so a tile of X stays in L2).
///   CUDA: CSR through cuSPARSE's generic SpMM (cusparseSpMM, CUSPARSE_SPMM_ALG_DEFAULT);
///         BSR and 2:4 through frugal's own kernels (cuSPARSELt is not used).
/// f32 (and f64 on the CPU and through cuSPARSE). A product is summed per output element in
/// column-index order, so the CPU results do not depend on the thread count.
#include <cstdint>

#include "frugal/core/tensor.hpp"

namespace frugal::prune {

/// Compressed sparse rows of an (rows, cols) matrix.
struct CsrMatrix {
  int64_t rows = 0, cols = 0;
  Tensor row_ptr;  ///< (rows + 1) i32
  Tensor col_idx;  ///< (nnz) i32, increasing within a row
  Tensor values;   ///< (nnz) f32 or f64
  int64_t nnz() const { return values.defined() ? values.numel() : 0; }
  Device device() const { return values.device(); }
  /// The same matrix on `device`.
  CsrMatrix to(Device device, const ExecContext& ctx = {}) const;
  /// Bytes of the three arrays.
  int64_t nbytes() const;
};

/// Block compressed rows: rows / block_rows block rows, each a list of dense blocks.
struct BsrMatrix {
  int64_t rows = 0, cols = 0, block_rows = 4, block_cols = 4;
  Tensor row_ptr;  ///< (rows / block_rows + 1) i32
  Tensor col_idx;  ///< (nblocks) i32 block-column indices, increasing within a block row
  Tensor values;   ///< (nblocks, block_rows, block_cols) row-major blocks
  /// Stored (kept) blocks.
  int64_t num_blocks() const { return col_idx.defined() ? col_idx.numel() : 0; }
  /// Where the arrays live.
  Device device() const { return values.device(); }
  /// The same matrix on `device`.
  BsrMatrix to(Device device, const ExecContext& ctx = {}) const;
  int64_t nbytes() const;
};

/// The 2:4 compressed format of an (rows, cols) matrix with at most 2 nonzeros per 4 columns.
struct Sparse24Matrix {
  int64_t rows = 0, cols = 0;
  Tensor values;   ///< (rows, cols / 2) f32: the two kept values of each group, in column order
  Tensor indices;  ///< (rows, cols / 8) u8: byte b holds groups 2b and 2b+1, 4 bits each
                   ///< (low nibble first); a group's nibble = i0 | i1 << 2 (i0 < i1 in 0..3)
  Device device() const { return values.device(); }
  Sparse24Matrix to(Device device, const ExecContext& ctx = {}) const;
  int64_t nbytes() const;
};

/// CSR of `dense` (rows, cols) f32/f64 keeping the entries where mask (u8, same shape) is
/// nonzero, or, with an undefined/empty mask view, the nonzero entries. Built on the host; the
/// result lives on dense's device.
CsrMatrix to_csr(ConstTensorView dense, ConstTensorView mask = {}, const ExecContext& ctx = {});
/// Dense (rows, cols) of a CSR matrix, on its device.
Tensor csr_to_dense(const CsrMatrix& a, const ExecContext& ctx = {});

/// BSR with block_rows x block_cols blocks (each dividing the matrix extents): a block is kept
/// when any of its entries is kept (mask nonzero, or value nonzero without a mask); its pruned
/// entries are stored as zeros. Built on the host (a CUDA input is copied); the result is on the
/// host (BsrMatrix::to moves it).
BsrMatrix to_bsr(ConstTensorView dense, int64_t block_rows = 4, int64_t block_cols = 4,
                 ConstTensorView mask = {});
/// Dense (rows, cols) of a BSR matrix, on the host.
Tensor bsr_to_dense(const BsrMatrix& a);

/// Compresses dense (rows, cols) f32 whose mask (u8, or the nonzeros without a mask) keeps at
/// most 2 of every 4 columns; groups with fewer than 2 kept entries store explicit zeros.
/// cols divisible by 8. Throws InvalidArgument when a group keeps more than 2. Host only
/// (the result is moved to dense's device).
Sparse24Matrix compress_24(ConstTensorView dense, ConstTensorView mask = {},
                           const ExecContext& ctx = {});
/// Dense (rows, cols) of a 2:4 matrix.
Tensor decompress_24(const Sparse24Matrix& a, const ExecContext& ctx = {});

/// Y (M, N) = A (M, K) CSR * X (K, N) dense (contiguous row-major, A's dtype and device).
Tensor spmm(const CsrMatrix& a, ConstTensorView x, const ExecContext& ctx = {});
/// Y (M, N) = A (M, K) BSR * X (K, N) dense, on A's device: CPU (the panel kernel) or CUDA (an
/// own kernel, any block shape; cuSPARSE's bsrmm is deprecated since CUDA 12.8 and takes square
/// blocks only).
Tensor spmm(const BsrMatrix& a, ConstTensorView x, const ExecContext& ctx = {});
/// Y (M, N) = A (M, K) 2:4 * X (K, N) dense f32 (CPU or CUDA).
Tensor spmm(const Sparse24Matrix& a, ConstTensorView x, const ExecContext& ctx = {});

}  // namespace frugal::prune
