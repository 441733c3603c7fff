// Sparse formats and products (include/frugal/prune/sparse.hpp): conversions on the host,
// validation and device dispatch of the products.
#include "frugal/prune/sparse.hpp"

#include <limits>
#include <utility>
#include <vector>

#include "cu_ops.hpp"
#include "frugal/core/error.hpp"
#include "prune/prune_internal.hpp"

namespace frugal::prune {
namespace {

Tensor host_contiguous(ConstTensorView v) {
  Tensor t = Tensor::wrap_strided(const_cast<void*>(v.data), v.shape, v.strides, v.dtype, v.device);
  return t.to(Device::cpu()).contiguous();
}

void check_dense(const char* op, ConstTensorView d, ConstTensorView mask, bool f32_only = false) {
  FRUGAL_REQUIRE(d.rank() == 2, op, "expected a rank-2 matrix, got rank ", d.rank());
  FRUGAL_REQUIRE(d.numel() > 0, op, "empty tensor");
  if (f32_only) {
    FRUGAL_REQUIRE(d.dtype == DType::kF32, op, "expected f32, got ", dtype_name(d.dtype));
  } else {
    FRUGAL_REQUIRE(d.dtype == DType::kF32 || d.dtype == DType::kF64, op,
                   "expected f32 or f64, got ", dtype_name(d.dtype));
  }
  if (mask.data != nullptr) {
    FRUGAL_REQUIRE(mask.dtype == DType::kU8, op, "mask must be u8, got ", dtype_name(mask.dtype));
    FRUGAL_REQUIRE(mask.shape == d.shape, op, "mask shape differs from the matrix's");
  }
}

// keep[i] for the row-major dense matrix: mask != 0, or value != 0 without a mask.
std::vector<uint8_t> keep_flags(const Tensor& d, ConstTensorView mask) {
  if (mask.data != nullptr) return host_contiguous(mask).to_vector<uint8_t>();
  const std::vector<double> v = d.to_vector<double>();
  std::vector<uint8_t> k(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) k[i] = v[i] != 0.0;
  return k;
}

void check_x(const char* op, int64_t K, DType dt, Device dev, ConstTensorView x) {
  FRUGAL_REQUIRE(x.rank() == 2, op, "x must be rank 2 (K, N), got rank ", x.rank());
  FRUGAL_REQUIRE(x.dim(0) == K, op, "x has ", x.dim(0), " rows, the sparse matrix has ", K,
                 " columns");
  FRUGAL_REQUIRE(x.dtype == dt, op, "x dtype ", dtype_name(x.dtype), " differs from the matrix's ",
                 dtype_name(dt));
  FRUGAL_REQUIRE(x.device == dev, op, "x and the sparse matrix are on different devices");
}

Tensor contig(ConstTensorView x, const ExecContext& ctx) {
  return Tensor::wrap_strided(const_cast<void*>(x.data), x.shape, x.strides, x.dtype, x.device)
      .contiguous(ctx);
}

}  // namespace

CsrMatrix CsrMatrix::to(Device device, const ExecContext& ctx) const {
  return {rows, cols, row_ptr.to(device, ctx), col_idx.to(device, ctx), values.to(device, ctx)};
}
int64_t CsrMatrix::nbytes() const { return row_ptr.nbytes() + col_idx.nbytes() + values.nbytes(); }
BsrMatrix BsrMatrix::to(Device device, const ExecContext& ctx) const {
  return {rows,
          cols,
          block_rows,
          block_cols,
          row_ptr.to(device, ctx),
          col_idx.to(device, ctx),
          values.to(device, ctx)};
}
int64_t BsrMatrix::nbytes() const { return row_ptr.nbytes() + col_idx.nbytes() + values.nbytes(); }
Sparse24Matrix Sparse24Matrix::to(Device device, const ExecContext& ctx) const {
  return {rows, cols, values.to(device, ctx), indices.to(device, ctx)};
}
int64_t Sparse24Matrix::nbytes() const { return values.nbytes() + indices.nbytes(); }

CsrMatrix to_csr(ConstTensorView dense, ConstTensorView mask, const ExecContext& ctx) {
  const char* op = "to_csr";
  check_dense(op, dense, mask);
  Tensor d = host_contiguous(dense);
  const std::vector<uint8_t> keep = keep_flags(d, mask);
  const int64_t M = d.dim(0), K = d.dim(1);
  FRUGAL_REQUIRE(K <= std::numeric_limits<int32_t>::max(), op, "too many columns for i32 indices");
  int64_t nnz = 0;
  for (uint8_t k : keep) nnz += k != 0;
  FRUGAL_REQUIRE(nnz <= std::numeric_limits<int32_t>::max(), op, "nnz ", nnz,
                 " exceeds the i32 index range");
  CsrMatrix a;
  a.rows = M;
  a.cols = K;
  a.row_ptr = Tensor::empty(Shape{M + 1}, DType::kI32);
  a.col_idx = Tensor::empty(Shape{nnz}, DType::kI32);
  a.values = Tensor::empty(Shape{nnz}, d.dtype());
  int32_t* rp = a.row_ptr.data<int32_t>();
  int32_t* ci = a.col_idx.data<int32_t>();
  auto fill = [&]<class T>(const T* src, T* dst) {
    int32_t p = 0;
    rp[0] = 0;
    for (int64_t i = 0; i < M; ++i) {
      for (int64_t j = 0; j < K; ++j) {
        if (keep[i * K + j]) {
          ci[p] = static_cast<int32_t>(j);
          dst[p] = src[i * K + j];
          ++p;
        }
      }
      rp[i + 1] = p;
    }
  };
  if (d.dtype() == DType::kF32) {
    fill(d.data<float>(), a.values.data<float>());
  } else {
    fill(d.data<double>(), a.values.data<double>());
  }
  return dense.device.kind == DeviceKind::kCpu ? a : a.to(dense.device, ctx);
}

Tensor csr_to_dense(const CsrMatrix& a, const ExecContext& ctx) {
  FRUGAL_REQUIRE(a.values.defined() && a.row_ptr.defined(), "csr_to_dense", "empty CSR matrix");
  CsrMatrix h = a.to(Device::cpu(), ctx);
  Tensor out = Tensor::zeros(Shape{a.rows, a.cols}, a.values.dtype());
  const int32_t* rp = h.row_ptr.data<int32_t>();
  const int32_t* ci = h.col_idx.data<int32_t>();
  auto fill = [&]<class T>(const T* v, T* o) {
    for (int64_t i = 0; i < a.rows; ++i) {
      for (int32_t p = rp[i]; p < rp[i + 1]; ++p) o[i * a.cols + ci[p]] = v[p];
    }
  };
  if (out.dtype() == DType::kF32) {
    fill(h.values.data<float>(), out.data<float>());
  } else {
    fill(h.values.data<double>(), out.data<double>());
  }
  return out.to(a.device(), ctx);
}

BsrMatrix to_bsr(ConstTensorView dense, int64_t br, int64_t bc, ConstTensorView mask) {
  const char* op = "to_bsr";
  check_dense(op, dense, mask);
  FRUGAL_REQUIRE(br >= 1 && bc >= 1, op, "block ", br, "x", bc, " must be positive");
  FRUGAL_REQUIRE(dense.dim(0) % br == 0 && dense.dim(1) % bc == 0, op, "block ", br, "x", bc,
                 " does not divide the matrix (", dense.dim(0), ", ", dense.dim(1), ")");
  Tensor d = host_contiguous(dense);
  const std::vector<uint8_t> keep = keep_flags(d, mask);
  const int64_t M = d.dim(0), K = d.dim(1), MB = M / br, KB = K / bc;
  std::vector<int32_t> rp(MB + 1, 0), ci;
  for (int64_t bi = 0; bi < MB; ++bi) {
    for (int64_t bj = 0; bj < KB; ++bj) {
      bool any = false;
      for (int64_t r = 0; r < br && !any; ++r) {
        for (int64_t c = 0; c < bc && !any; ++c) any = keep[(bi * br + r) * K + bj * bc + c] != 0;
      }
      if (any) ci.push_back(static_cast<int32_t>(bj));
    }
    rp[bi + 1] = static_cast<int32_t>(ci.size());
  }
  BsrMatrix a;
  a.rows = M;
  a.cols = K;
  a.block_rows = br;
  a.block_cols = bc;
  a.row_ptr = Tensor::from_vector<int32_t>(rp, Shape{MB + 1});
  a.col_idx = Tensor::from_vector<int32_t>(ci, Shape{static_cast<int64_t>(ci.size())});
  a.values = Tensor::zeros(Shape{static_cast<int64_t>(ci.size()), br, bc}, d.dtype());
  auto fill = [&]<class T>(const T* src, T* dst) {
    for (int64_t bi = 0; bi < MB; ++bi) {
      for (int32_t p = rp[bi]; p < rp[bi + 1]; ++p) {
        for (int64_t r = 0; r < br; ++r) {
          for (int64_t c = 0; c < bc; ++c) {
            const int64_t src_i = (bi * br + r) * K + int64_t{ci[p]} * bc + c;
            dst[(p * br + r) * bc + c] = keep[src_i] ? src[src_i] : T(0);
          }
        }
      }
    }
  };
  if (d.dtype() == DType::kF32) {
    fill(d.data<float>(), a.values.data<float>());
  } else {
    fill(d.data<double>(), a.values.data<double>());
  }
  return a;
}

Tensor bsr_to_dense(const BsrMatrix& a) {
  FRUGAL_REQUIRE(a.values.defined(), "bsr_to_dense", "empty BSR matrix");
  if (a.device().kind != DeviceKind::kCpu) return bsr_to_dense(a.to(Device::cpu()));
  Tensor out = Tensor::zeros(Shape{a.rows, a.cols}, a.values.dtype());
  const int32_t* rp = a.row_ptr.data<int32_t>();
  const int32_t* ci = a.col_idx.data<int32_t>();
  const int64_t br = a.block_rows, bc = a.block_cols;
  auto fill = [&]<class T>(const T* v, T* o) {
    for (int64_t bi = 0; bi < a.rows / br; ++bi) {
      for (int32_t p = rp[bi]; p < rp[bi + 1]; ++p) {
        for (int64_t r = 0; r < br; ++r) {
          for (int64_t c = 0; c < bc; ++c) {
            o[(bi * br + r) * a.cols + int64_t{ci[p]} * bc + c] = v[(p * br + r) * bc + c];
          }
        }
      }
    }
  };
  if (out.dtype() == DType::kF32) {
    fill(a.values.data<float>(), out.data<float>());
  } else {
    fill(a.values.data<double>(), out.data<double>());
  }
  return out;
}

Sparse24Matrix compress_24(ConstTensorView dense, ConstTensorView mask, const ExecContext& ctx) {
  const char* op = "compress_24";
  check_dense(op, dense, mask, true);
  FRUGAL_REQUIRE(dense.dim(1) % 8 == 0, op, "columns ", dense.dim(1), " not divisible by 8");
  Tensor d = host_contiguous(dense);
  const std::vector<uint8_t> keep = keep_flags(d, mask);
  const int64_t M = d.dim(0), K = d.dim(1);
  Sparse24Matrix a;
  a.rows = M;
  a.cols = K;
  a.values = Tensor::zeros(Shape{M, K / 2}, DType::kF32);
  a.indices = Tensor::zeros(Shape{M, K / 8}, DType::kU8);
  const float* src = d.data<float>();
  float* v = a.values.data<float>();
  uint8_t* ix = a.indices.data<uint8_t>();
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t g = 0; g < K / 4; ++g) {
      int sel[2];
      int cnt = 0;
      for (int c = 0; c < 4; ++c) {
        if (keep[i * K + 4 * g + c]) {
          FRUGAL_REQUIRE(cnt < 2, op, "row ", i, " group ", g, " keeps more than 2 of 4");
          sel[cnt++] = c;
        }
      }
      // A group with fewer than two kept entries is padded with its lowest unused positions
      // (stored as zeros); the pair is then put in increasing column order.
      for (int c = 0; cnt < 2 && c < 4; ++c) {
        if (cnt == 0 || sel[0] != c) sel[cnt++] = c;
      }
      if (sel[0] > sel[1]) std::swap(sel[0], sel[1]);
      for (int t = 0; t < 2; ++t) {
        const int64_t src_i = i * K + 4 * g + sel[t];
        v[i * (K / 2) + 2 * g + t] = keep[src_i] ? src[src_i] : 0.0f;
      }
      const unsigned nib = static_cast<unsigned>(sel[0]) | (static_cast<unsigned>(sel[1]) << 2);
      ix[i * (K / 8) + g / 2] |= static_cast<uint8_t>(nib << ((g & 1) * 4));
    }
  }
  return dense.device.kind == DeviceKind::kCpu ? a : a.to(dense.device, ctx);
}

Tensor decompress_24(const Sparse24Matrix& a, const ExecContext& ctx) {
  FRUGAL_REQUIRE(a.values.defined() && a.indices.defined(), "decompress_24", "empty matrix");
  Sparse24Matrix h = a.to(Device::cpu(), ctx);
  Tensor out = Tensor::zeros(Shape{a.rows, a.cols}, DType::kF32);
  const float* v = h.values.data<float>();
  const uint8_t* ix = h.indices.data<uint8_t>();
  float* o = out.data<float>();
  const int64_t K = a.cols;
  for (int64_t i = 0; i < a.rows; ++i) {
    for (int64_t g = 0; g < K / 4; ++g) {
      const unsigned nib = (ix[i * (K / 8) + g / 2] >> ((g & 1) * 4)) & 0xFu;
      o[i * K + 4 * g + (nib & 3u)] += v[i * (K / 2) + 2 * g];
      o[i * K + 4 * g + (nib >> 2)] += v[i * (K / 2) + 2 * g + 1];
    }
  }
  return out.to(a.device(), ctx);
}

Tensor spmm(const CsrMatrix& a, ConstTensorView x, const ExecContext& ctx) {
  const char* op = "spmm";
  FRUGAL_REQUIRE(a.values.defined() && a.row_ptr.defined() && a.col_idx.defined(), op,
                 "empty CSR matrix");
  check_x(op, a.cols, a.values.dtype(), a.device(), x);
  Tensor xc = contig(x, ctx);
  const int64_t N = xc.dim(1);
  Tensor y = Tensor::empty(Shape{a.rows, N}, a.values.dtype(), a.device(), ctx);
  if (N == 0 || a.rows == 0) return y;
  switch (a.device().kind) {
    case DeviceKind::kCpu:
      if (y.dtype() == DType::kF32) {
        cpu::prune_csr_spmm<float>(a.row_ptr.data<int32_t>(), a.col_idx.data<int32_t>(),
                                   a.values.data<float>(), a.rows, a.cols, xc.data<float>(), N,
                                   y.data<float>(), ctx);
      } else {
        cpu::prune_csr_spmm<double>(a.row_ptr.data<int32_t>(), a.col_idx.data<int32_t>(),
                                    a.values.data<double>(), a.rows, a.cols, xc.data<double>(), N,
                                    y.data<double>(), ctx);
      }
      return y;
    case DeviceKind::kCuda:
      cu::prune_csr_spmm(a.row_ptr, a.col_idx, a.values, a.rows, a.cols, xc, y, ctx);
      return y;
  }
  return y;
}

Tensor spmm(const BsrMatrix& a, ConstTensorView x, const ExecContext& ctx) {
  const char* op = "spmm";
  FRUGAL_REQUIRE(a.values.defined(), op, "empty BSR matrix");
  check_x(op, a.cols, a.values.dtype(), a.values.device(), x);
  Tensor xc = contig(x, ctx);
  const int64_t N = xc.dim(1);
  Tensor y = Tensor::empty(Shape{a.rows, N}, a.values.dtype(), a.device(), ctx);
  if (N == 0 || a.rows == 0) return y;
  if (a.device().kind == DeviceKind::kCuda) {
    FRUGAL_REQUIRE(N <= int64_t{65535} * 128 && a.rows <= std::numeric_limits<int32_t>::max(), op,
                   "CUDA BSR product limited to 8388480 columns and 2^31 - 1 rows");
    cu::prune_bsr_spmm(a.row_ptr, a.col_idx, a.values, a.block_rows, a.block_cols, xc, y, ctx);
    return y;
  }
  if (y.dtype() == DType::kF32) {
    cpu::prune_bsr_spmm<float>(a.row_ptr.data<int32_t>(), a.col_idx.data<int32_t>(),
                               a.values.data<float>(), a.rows, a.cols, a.block_rows, a.block_cols,
                               xc.data<float>(), N, y.data<float>(), ctx);
  } else {
    cpu::prune_bsr_spmm<double>(a.row_ptr.data<int32_t>(), a.col_idx.data<int32_t>(),
                                a.values.data<double>(), a.rows, a.cols, a.block_rows, a.block_cols,
                                xc.data<double>(), N, y.data<double>(), ctx);
  }
  return y;
}

Tensor spmm(const Sparse24Matrix& a, ConstTensorView x, const ExecContext& ctx) {
  const char* op = "spmm";
  FRUGAL_REQUIRE(a.values.defined() && a.indices.defined(), op, "empty 2:4 matrix");
  check_x(op, a.cols, DType::kF32, a.device(), x);
  Tensor xc = contig(x, ctx);
  const int64_t N = xc.dim(1);
  Tensor y = Tensor::empty(Shape{a.rows, N}, DType::kF32, a.device(), ctx);
  if (N == 0) return y;
  switch (a.device().kind) {
    case DeviceKind::kCpu:
      cpu::prune_spmm_24(a.values.data<float>(), a.indices.data<uint8_t>(), a.rows, a.cols,
                         xc.data<float>(), N, y.data<float>(), ctx);
      return y;
    case DeviceKind::kCuda:
      cu::prune_spmm_24(a.values, a.indices, xc, y, ctx);
      return y;
  }
  return y;
}

}  // namespace frugal::prune
