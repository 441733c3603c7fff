// GEMM through cuBLAS. Row-major C = op(A) op(B) is computed as the column-major product
// C^T = op(B)^T op(A)^T: a row-major matrix with leading dimension ld is, read column-major, its
// transpose with the same ld, so B goes first and each flag maps to itself.
#include <climits>

#include "common/check.cuh"
#include "common/cublas_handle.cuh"
#include "common/cuda_dtype.cuh"
#include "common/launch.cuh"
#include "cu_ops.hpp"

namespace frugal::cu {
void gemm(ConstTensorView a, bool trans_a, ConstTensorView b, bool trans_b, double alpha,
          double beta, TensorView c, const ExecContext& ctx) {
  const int64_t m = c.shape[0];
  const int64_t n = c.shape[1];
  const int64_t k = trans_a ? a.shape[0] : a.shape[1];
  for (int64_t v : {m, n, k, a.strides[0], b.strides[0], c.strides[0]}) {
    if (v > INT_MAX) {
      ::frugal::detail::fail(ErrorCode::kUnsupported, "gemm", "extent or leading dimension ", v,
                             " exceeds cuBLAS's 32-bit limit");
    }
  }
  FRUGAL_CUDA_CHECK(cudaSetDevice(c.device.index));
  const CublasLease h = cublas_handle(c.device.index, stream_of(ctx));
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int im = static_cast<int>(m), in = static_cast<int>(n), ik = static_cast<int>(k);
  const int lda = static_cast<int>(a.strides[0]);
  const int ldb = static_cast<int>(b.strides[0]);
  const int ldc = static_cast<int>(c.strides[0]);
  switch (a.dtype) {
    case DType::kF32: {
      const float al = static_cast<float>(alpha), be = static_cast<float>(beta);
      FRUGAL_CUBLAS_CHECK(cublasSgemm(h.get(), op_b, op_a, in, im, ik, &al, b.data_as<float>(), ldb,
                                      a.data_as<float>(), lda, &be, c.data_as<float>(), ldc));
      return;
    }
    case DType::kF64: {
      FRUGAL_CUBLAS_CHECK(cublasDgemm(h.get(), op_b, op_a, in, im, ik, &alpha, b.data_as<double>(),
                                      ldb, a.data_as<double>(), lda, &beta, c.data_as<double>(),
                                      ldc));
      return;
    }
    default: {
      // f16 / bf16 inputs, f32 accumulation (tensor cores), output in c's dtype (f16/bf16/f32).
      const float al = static_cast<float>(alpha), be = static_cast<float>(beta);
      FRUGAL_CUBLAS_CHECK(
          cublasGemmEx(h.get(), op_b, op_a, in, im, ik, &al, b.data, cuda_data_type(b.dtype), ldb,
                       a.data, cuda_data_type(a.dtype), lda, &be, c.data, cuda_data_type(c.dtype),
                       ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      return;
    }
  }
}

}  // namespace frugal::cu
