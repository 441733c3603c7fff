// CUDA sparse-dense products (src/prune/sparse.cpp): CSR through cuSPARSE's generic SpMM API,
// BSR and the 2:4 compressed format through own kernels (cuSPARSELt is not used). BSR: cuSPARSE's
// cusparse<t>bsrmm is deprecated since CUDA 12.8 and takes square blocks only, and the generic
// API's BSR SpMM (CUSPARSE_SPMM_BSR_ALG1) is not documented for every block shape we allow, so an
// own kernel covers any br x bc block with f32 and f64.
#include <cuda_runtime.h>
#include <cusparse.h>

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>

#include "common/check.cuh"
#include "common/launch.cuh"
#include "cu_ops.hpp"

namespace frugal::cu {
namespace {

/// Owns one cusparseHandle_t; the destructor never throws.
class CusparseHandle {
 public:
  CusparseHandle() { FRUGAL_CUSPARSE_CHECK(cusparseCreate(&h_)); }
  CusparseHandle(const CusparseHandle&) = delete;
  CusparseHandle& operator=(const CusparseHandle&) = delete;
  ~CusparseHandle() {
    if (h_ != nullptr) cusparseDestroy(h_);
  }
  cusparseHandle_t get() const { return h_; }

 private:
  cusparseHandle_t h_ = nullptr;
};

// One handle per device, created lazily; calls are serialized by the lock (the handle's stream
// is set per call).
struct HandleCache {
  std::mutex mu;
  std::map<int, std::unique_ptr<CusparseHandle>> handles;
};
HandleCache& cache() {
  static HandleCache* c = new HandleCache();  // leaked on purpose: no teardown-order issues
  return *c;
}

struct SpMatGuard {
  cusparseSpMatDescr_t d = nullptr;
  ~SpMatGuard() {
    if (d) cusparseDestroySpMat(d);
  }
};
struct DnMatGuard {
  cusparseDnMatDescr_t d = nullptr;
  ~DnMatGuard() {
    if (d) cusparseDestroyDnMat(d);
  }
};

// y[i, j] = sum over groups of v0 x[4g + i0, j] + v1 x[4g + i1, j]; threads along j (coalesced
// loads of x and stores of y), each block handles kRows rows so the index bytes are reused.
constexpr int kRows = 4;
__global__ void spmm24_kernel(const float* __restrict__ values, const uint8_t* __restrict__ idx,
                              const float* __restrict__ x, float* __restrict__ y, int64_t M,
                              int64_t K, int64_t N) {
  const int64_t j = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  const int64_t r0 = int64_t{blockIdx.y} * kRows;
  if (j >= N) return;
  float acc[kRows] = {0.f, 0.f, 0.f, 0.f};
  const int64_t groups = K / 4;
  for (int64_t g = 0; g < groups; ++g) {
    float xv[4];
#pragma unroll
    for (int c = 0; c < 4; ++c) xv[c] = x[(4 * g + c) * N + j];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int64_t i = r0 + r;
      if (i < M) {
        const unsigned nib = (idx[i * (K / 8) + g / 2] >> ((g & 1) * 4)) & 0xFu;
        acc[r] = fmaf(values[i * (K / 2) + 2 * g], xv[nib & 3u], acc[r]);
        acc[r] = fmaf(values[i * (K / 2) + 2 * g + 1], xv[nib >> 2], acc[r]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    if (r0 + r < M) y[(r0 + r) * N + j] = acc[r];
  }
}

// y[i, j] = sum over the blocks p of block row i / br, c < bc: v[p][i % br][c] x[col_p bc + c, j].
// Threads along j (coalesced loads of x and stores of y; the block values are the same for every
// thread of a warp, a broadcast); blockIdx.x is the row, blockIdx.y the tile of columns. The
// terms are added in block order then column order (fma), one accumulator.
template <class T>
__global__ void spmm_bsr_kernel(const int32_t* __restrict__ row_ptr,
                                const int32_t* __restrict__ col_idx, const T* __restrict__ values,
                                int64_t br, int64_t bc, const T* __restrict__ x, T* __restrict__ y,
                                int64_t N) {
  const int64_t i = blockIdx.x;
  const int64_t j = blockIdx.y * int64_t{blockDim.x} + threadIdx.x;
  if (j >= N) return;
  const int64_t bi = i / br, rr = i % br;
  T acc = T(0);
  for (int32_t p = row_ptr[bi]; p < row_ptr[bi + 1]; ++p) {
    const T* blk = values + (int64_t{p} * br + rr) * bc;
    const T* xp = x + int64_t{col_idx[p]} * bc * N + j;
    for (int64_t c = 0; c < bc; ++c) acc = fma(blk[c], xp[c * N], acc);
  }
  y[i * N + j] = acc;
}

}  // namespace

void prune_bsr_spmm(ConstTensorView row_ptr, ConstTensorView col_idx, ConstTensorView values,
                    int64_t block_rows, int64_t block_cols, ConstTensorView x, TensorView y,
                    const ExecContext& ctx) {
  const int64_t M = y.dim(0), N = y.dim(1);
  const unsigned threads = 128;
  // Rows on grid.x (up to 2^31 - 1), column tiles on grid.y (up to 65535 * 128 columns).
  dim3 grid(static_cast<unsigned>(M), static_cast<unsigned>((N + threads - 1) / threads));
  if (values.dtype == DType::kF32) {
    spmm_bsr_kernel<float><<<grid, threads, 0, stream_of(ctx)>>>(
        row_ptr.data_as<int32_t>(), col_idx.data_as<int32_t>(), values.data_as<float>(), block_rows,
        block_cols, x.data_as<float>(), y.data_as<float>(), N);
  } else {
    spmm_bsr_kernel<double><<<grid, threads, 0, stream_of(ctx)>>>(
        row_ptr.data_as<int32_t>(), col_idx.data_as<int32_t>(), values.data_as<double>(),
        block_rows, block_cols, x.data_as<double>(), y.data_as<double>(), N);
  }
  FRUGAL_CUDA_CHECK_LAUNCH();
}

void prune_csr_spmm(ConstTensorView row_ptr, ConstTensorView col_idx, ConstTensorView values,
                    int64_t rows, int64_t cols, ConstTensorView x, TensorView y,
                    const ExecContext& ctx) {
  const cudaDataType dt = values.dtype == DType::kF32 ? CUDA_R_32F : CUDA_R_64F;
  const int64_t N = x.dim(1);
  std::unique_lock<std::mutex> lock(cache().mu);
  auto& slot = cache().handles[values.device.index];
  if (!slot) slot = std::make_unique<CusparseHandle>();
  cusparseHandle_t h = slot->get();
  FRUGAL_CUSPARSE_CHECK(cusparseSetStream(h, stream_of(ctx)));
  SpMatGuard a;
  DnMatGuard b, c;
  FRUGAL_CUSPARSE_CHECK(
      cusparseCreateCsr(&a.d, rows, cols, values.numel(), const_cast<void*>(row_ptr.data),
                        const_cast<void*>(col_idx.data), const_cast<void*>(values.data),
                        CUSPARSE_INDEX_32I, CUSPARSE_INDEX_32I, CUSPARSE_INDEX_BASE_ZERO, dt));
  FRUGAL_CUSPARSE_CHECK(
      cusparseCreateDnMat(&b.d, cols, N, N, const_cast<void*>(x.data), dt, CUSPARSE_ORDER_ROW));
  FRUGAL_CUSPARSE_CHECK(cusparseCreateDnMat(&c.d, rows, N, N, y.data, dt, CUSPARSE_ORDER_ROW));
  const float alpha_f = 1.f, beta_f = 0.f;
  const double alpha_d = 1.0, beta_d = 0.0;
  const void* alpha = dt == CUDA_R_32F ? static_cast<const void*>(&alpha_f) : &alpha_d;
  const void* beta = dt == CUDA_R_32F ? static_cast<const void*>(&beta_f) : &beta_d;
  size_t bytes = 0;
  FRUGAL_CUSPARSE_CHECK(cusparseSpMM_bufferSize(h, CUSPARSE_OPERATION_NON_TRANSPOSE,
                                                CUSPARSE_OPERATION_NON_TRANSPOSE, alpha, a.d, b.d,
                                                beta, c.d, dt, CUSPARSE_SPMM_ALG_DEFAULT, &bytes));
  Tensor buffer = Tensor::empty(Shape{static_cast<int64_t>(std::max<size_t>(bytes, 1))}, DType::kU8,
                                values.device, ctx);
  FRUGAL_CUSPARSE_CHECK(cusparseSpMM(h, CUSPARSE_OPERATION_NON_TRANSPOSE,
                                     CUSPARSE_OPERATION_NON_TRANSPOSE, alpha, a.d, b.d, beta, c.d,
                                     dt, CUSPARSE_SPMM_ALG_DEFAULT, buffer.data_ptr()));
  // buffer is freed stream-ordered (cudaFreeAsync on ctx's stream) after the SpMM is enqueued.
}

void prune_spmm_24(ConstTensorView values, ConstTensorView indices, ConstTensorView x, TensorView y,
                   const ExecContext& ctx) {
  const int64_t M = y.dim(0), N = y.dim(1), K = x.dim(0);
  const unsigned threads = 128;
  dim3 grid(static_cast<unsigned>((N + threads - 1) / threads),
            static_cast<unsigned>((M + kRows - 1) / kRows));
  spmm24_kernel<<<grid, threads, 0, stream_of(ctx)>>>(
      values.data_as<float>(), indices.data_as<uint8_t>(), x.data_as<float>(), y.data_as<float>(),
      M, K, N);
  FRUGAL_CUDA_CHECK_LAUNCH();
}

}  // namespace frugal::cu
