// amp::gemm on a CUDA device.
//
// Row-major C (M, N) = op(A) op(B) is computed as the column-major C^T (N x M) = op(B)^T op(A)^T:
// a row-major matrix read column-major is its transpose with the same leading dimension, so B is
// the first operand and each transpose flag maps to itself (as kernels/core/gemm.cu).
//   - bf16 x bf16, f16 x f16: cublasGemmStridedBatchedEx, CUBLAS_COMPUTE_32F (tensor cores, fp32
//     accumulation); C in f32 or the input dtype (other outputs go through an f32 temporary).
//   - fp8 (e4m3 x e4m3, e4m3 x e5m2, e5m2 x e4m3): cublasLtMatmul. Hopper's fp8 kernels need the
//     "TN" form: first operand transposed, second not, i.e. row-major B stored (N, K) (trans_b)
//     and A stored (M, K) (not trans_a); other layouts are transposed into a temporary first.
//     M, N, K are multiples of 16 (checked by amp::gemm_into), so leading dimensions and batch
//     strides are multiples of 16 bytes. cuBLASLt has no e5m2 x e5m2 kernel: both operands are
//     then decoded exactly to bf16 (every e5m2 value is a bf16) and take the bf16 path.
// The per-tensor scales are folded into alpha (alpha * a_scale * b_scale rounded once to fp32, as
// on the CPU) rather than passed as CUBLASLT_MATMUL_DESC_A/B_SCALE_POINTER: the scales are host
// values here, so this saves a host-to-device copy per call and gives the CPU's exact multiplier.
#include <cublasLt.h>
#include <cuda_bf16.h>

#include <climits>
#include <cstdint>

#include "common/check.cuh"
#include "common/cublas_handle.cuh"
#include "common/cublaslt.cuh"
#include "common/cuda_dtype.cuh"
#include "common/launch.cuh"
#include "cu_ops.hpp"
#include "frugal/core/float_types.hpp"

namespace frugal::cu {
namespace {

constexpr const char* kOp = "amp::gemm";
constexpr int64_t kWorkspaceBytes = int64_t{32} << 20;  // cuBLASLt workspace (Hopper: 32 MiB)

bool is_fp8(DType t) { return t == DType::kF8E4M3 || t == DType::kF8E5M2; }

// out[p][j][i] = in[p][i][j] for (batch, rows, cols) bytes, 32 x 32 tiles through shared memory.
constexpr int kTile = 32;
__global__ void transpose_u8(const uint8_t* in, uint8_t* out, int64_t rows, int64_t cols) {
  __shared__ uint8_t tile[kTile][kTile + 1];
  const int64_t base = blockIdx.z * rows * cols;
  const int64_t r0 = blockIdx.y * int64_t{kTile}, c0 = blockIdx.x * int64_t{kTile};
  for (int dy = threadIdx.y; dy < kTile; dy += blockDim.y) {
    const int64_t r = r0 + dy, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[dy][threadIdx.x] = in[base + r * cols + c];
  }
  __syncthreads();
  for (int dy = threadIdx.y; dy < kTile; dy += blockDim.y) {
    const int64_t c = c0 + dy, r = r0 + threadIdx.x;
    if (r < rows && c < cols) out[base + c * rows + r] = tile[threadIdx.x][dy];
  }
}

// fp8 code -> bf16 bits, exact (the float_types.hpp decoders; bf16 holds every fp8 value).
__global__ void fp8_to_bf16(const uint8_t* in, uint16_t* out, int64_t n, bool e4m3) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float v = e4m3 ? e4m3_bits_to_float(in[i]) : e5m2_bits_to_float(in[i]);
    out[i] = static_cast<uint16_t>(__float_as_uint(v) >> 16);  // exact: low 16 bits are zero
  }
}

/// A contiguous (B, cols, rows) copy of the fp8 matrix batch v (B, rows, cols).
Tensor transposed_fp8(ConstTensorView v, const ExecContext& ctx) {
  const int64_t nb = v.shape[0], rows = v.shape[1], cols = v.shape[2];
  Tensor t = Tensor::empty({nb, cols, rows}, v.dtype, v.device, ctx);
  const dim3 grid(static_cast<unsigned>((cols + kTile - 1) / kTile),
                  static_cast<unsigned>((rows + kTile - 1) / kTile), static_cast<unsigned>(nb));
  transpose_u8<<<grid, dim3(kTile, 8), 0, stream_of(ctx)>>>(
      static_cast<const uint8_t*>(v.data), static_cast<uint8_t*>(t.view().data), rows, cols);
  FRUGAL_CUDA_CHECK_LAUNCH();
  return t;
}

Tensor decoded_bf16(ConstTensorView v, const ExecContext& ctx) {
  Tensor t = Tensor::empty(v.shape, DType::kBF16, v.device, ctx);
  const int64_t n = v.numel();
  const LaunchShape ls = grid_stride_launch(n);
  fp8_to_bf16<<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(static_cast<const uint8_t*>(v.data),
                                                            static_cast<uint16_t*>(t.view().data),
                                                            n, v.dtype == DType::kF8E4M3);
  FRUGAL_CUDA_CHECK_LAUNCH();
  return t;
}

void check_int(int64_t v) {
  if (v > INT_MAX) {
    ::frugal::detail::fail(ErrorCode::kUnsupported, kOp, "extent ", v,
                           " exceeds cuBLAS's 32-bit limit");
  }
}

// bf16 / f16 inputs; c in f32 or the input dtype.
void gemm_half(ConstTensorView a, ConstTensorView b, TensorView c, bool ta, bool tb, float alpha,
               float beta, const ExecContext& ctx) {
  const int64_t nb = c.shape[0], m = c.shape[1], n = c.shape[2];
  const int64_t k = ta ? a.shape[1] : a.shape[2];
  for (int64_t v : {nb, m, n, k}) check_int(v);
  const CublasLease h = cublas_handle(c.device.index, stream_of(ctx));
  const int lda = static_cast<int>(ta ? m : k), ldb = static_cast<int>(tb ? k : n);
  FRUGAL_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      h.get(), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, static_cast<int>(n),
      static_cast<int>(m), static_cast<int>(k), &alpha, b.data, cuda_data_type(b.dtype), ldb, k * n,
      a.data, cuda_data_type(a.dtype), lda, m * k, &beta, c.data, cuda_data_type(c.dtype),
      static_cast<int>(n), m * n, static_cast<int>(nb), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// fp8 inputs in the TN form: a (B, M, K), b (B, N, K), c (B, M, N) f32 / bf16 / f16.
void gemm_fp8_tn(ConstTensorView a, ConstTensorView b, TensorView c, float alpha, float beta,
                 const ExecContext& ctx) {
  const int64_t nb = c.shape[0], m = c.shape[1], n = c.shape[2], k = a.shape[2];
  for (int64_t v : {nb, m, n, k}) check_int(v);
  cublasLtHandle_t h = cublaslt_handle(c.device.index);
  const LtMatmulDesc op(CUBLAS_COMPUTE_32F, CUDA_R_32F, CUBLAS_OP_T, CUBLAS_OP_N);
  // Column-major: first operand = b buffer (K x N, ld K, transposed), second = a buffer (K x M,
  // ld K), result C^T (N x M, ld N) = row-major C (M, N).
  LtLayout la(cuda_data_type(b.dtype), k, n, k);
  LtLayout lb(cuda_data_type(a.dtype), k, m, k);
  LtLayout lc(cuda_data_type(c.dtype), n, m, n);
  if (nb > 1) {
    const int32_t count = static_cast<int32_t>(nb);
    la.set_batch(count, n * k);
    lb.set_batch(count, m * k);
    lc.set_batch(count, m * n);
  }
  Tensor workspace = Tensor::empty({kWorkspaceBytes}, DType::kU8, c.device, ctx);
  FRUGAL_CUBLAS_CHECK(cublasLtMatmul(h, op.get(), &alpha, b.data, la.get(), a.data, lb.get(), &beta,
                                     c.data, lc.get(), c.data, lc.get(), nullptr,
                                     workspace.view().data, static_cast<size_t>(kWorkspaceBytes),
                                     stream_of(ctx)));
}

}  // namespace

void amp_gemm(ConstTensorView a, ConstTensorView b, TensorView c, bool trans_a, bool trans_b,
              float alpha, float beta, float a_scale, float b_scale, const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(c.device.index));
  const float s = static_cast<float>(static_cast<double>(alpha) * a_scale * b_scale);
  const bool direct_out =
      c.dtype == DType::kF32 || (c.dtype == a.dtype && !is_fp8(a.dtype)) || is_fp8(a.dtype);
  if (!direct_out) {
    // bf16 inputs -> f16 C or f16 inputs -> bf16 C: no cuBLAS kernel; through an f32 C.
    Tensor c32 = Tensor::empty(c.shape, DType::kF32, c.device, ctx);
    if (beta != 0.f) copy(c, c32.view(), ctx);
    amp_gemm(a, b, c32.view(), trans_a, trans_b, alpha, beta, a_scale, b_scale, ctx);
    copy(c32.cview(), c, ctx);
    return;
  }
  if (!is_fp8(a.dtype)) {
    gemm_half(a, b, c, trans_a, trans_b, s, beta, ctx);
    return;
  }
  if (a.dtype == DType::kF8E5M2 && b.dtype == DType::kF8E5M2) {
    const Tensor a16 = decoded_bf16(a, ctx), b16 = decoded_bf16(b, ctx);
    if (c.dtype == DType::kF16) {
      amp_gemm(a16.cview(), b16.cview(), c, trans_a, trans_b, alpha, beta, a_scale, b_scale, ctx);
    } else {
      gemm_half(a16.cview(), b16.cview(), c, trans_a, trans_b, s, beta, ctx);
    }
    return;
  }
  Tensor at, bt;
  ConstTensorView an = a, bn = b;
  if (trans_a) {  // stored (B, K, M): make it (B, M, K)
    at = transposed_fp8(a, ctx);
    an = at.cview();
  }
  if (!trans_b) {  // stored (B, K, N): make it (B, N, K)
    bt = transposed_fp8(b, ctx);
    bn = bt.cview();
  }
  for (const void* p : {an.data, bn.data, static_cast<const void*>(c.data)}) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) {
      ::frugal::detail::fail(ErrorCode::kUnsupported, kOp,
                             "fp8 on CUDA needs 16-byte aligned operands (cuBLASLt); pass tensors "
                             "that start at an aligned offset");
    }
  }
  gemm_fp8_tn(an, bn, c, s, beta, ctx);
}

}  // namespace frugal::cu
