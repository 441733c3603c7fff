// Quantized GEMMs on a CUDA device.
//
// int8 x int8 -> int32 through cuBLASLt (CUBLAS_COMPUTE_32I, A/B CUDA_R_8I, C CUDA_R_32I).
// Row-major C (M, N) = A (M, K) B^T with B (N, K) row-major is, read column-major, C^T (N x M) =
// B_cm^T . A_cm, where B_cm (K x N, ld K) and A_cm (K x M, ld K) are the same buffers: the "TN"
// form (first operand transposed, second not) that cuBLASLt's int8 tensor-core kernels require,
// with the leading dimensions (K, K, N) multiples of 4 and 16-byte aligned pointers. Other shapes
// take a shared-memory tiled kernel (exact int32 as well). u8 activations become i8 (a - 128, the
// zero point moves by -128); the zero point is then one correction per column:
//   sum_k (a - z) b = sum_k a b - z colsum(b).
// The epilogue (f32 or requantized i8/u8) and the weight-only product (one warp per output row,
// dequantization fused) are own kernels. All integer results are exact; float epilogue values
// use the no-fma helpers of quant/qgemm_internal.hpp, so they equal the host's bit for bit.
#include <cublasLt.h>

#include <climits>

#include "common/check.cuh"
#include "common/cublaslt.cuh"
#include "common/launch.cuh"
#include "cu_ops.hpp"
#include "frugal/core/packed.hpp"
#include "quant/qgemm_internal.hpp"

namespace frugal::cu {
namespace {

__global__ void u8_to_i8(const uint8_t* a, int8_t* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = static_cast<int8_t>(static_cast<int>(a[i]) - 128);
  }
}

// c[i, j] -= z * sum_k b[j, k]: one block per column j (the sum), then the column update.
__global__ void zero_point_correction(const int8_t* b, int64_t k, int64_t m, int64_t n, int32_t z,
                                      int32_t* c) {
  __shared__ long long part[256];
  const int64_t j = blockIdx.x;
  long long s = 0;
  for (int64_t t = threadIdx.x; t < k; t += blockDim.x) s += b[j * k + t];
  part[threadIdx.x] = s;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  const long long corr = static_cast<long long>(z) * part[0];
  for (int64_t i = threadIdx.x; i < m; i += blockDim.x) {
    c[i * n + j] = static_cast<int32_t>(static_cast<long long>(c[i * n + j]) - corr);
  }
}

// Tiled int8 GEMM for shapes cuBLASLt's int8 path does not take: 16 x 16 outputs per block.
constexpr int kTile = 16;
__global__ void gemm_s8_tiled(const int8_t* a, const int8_t* b, int64_t m, int64_t n, int64_t k,
                              int32_t* c) {
  __shared__ int sa[kTile][kTile + 1];
  __shared__ int sb[kTile][kTile + 1];
  const int64_t row = blockIdx.y * int64_t{kTile} + threadIdx.y;
  const int64_t col = blockIdx.x * int64_t{kTile} + threadIdx.x;
  int32_t acc = 0;
  for (int64_t k0 = 0; k0 < k; k0 += kTile) {
    const int64_t ka = k0 + threadIdx.x, kb = k0 + threadIdx.y;
    sa[threadIdx.y][threadIdx.x] = (row < m && ka < k) ? a[row * k + ka] : 0;
    const int64_t bcol = blockIdx.x * int64_t{kTile} + threadIdx.x;
    sb[threadIdx.y][threadIdx.x] = (bcol < n && kb < k) ? b[bcol * k + kb] : 0;
    __syncthreads();
    for (int t = 0; t < kTile; ++t) acc += sa[threadIdx.y][t] * sb[t][threadIdx.x];
    __syncthreads();
  }
  if (row < m && col < n) c[row * n + col] = acc;
}

void lt_gemm_s8(const int8_t* a, const int8_t* b, int32_t* c, int64_t m, int64_t n, int64_t k,
                int device, cudaStream_t stream) {
  cublasLtHandle_t h = cublaslt_handle(device);
  const LtMatmulDesc op(CUBLAS_COMPUTE_32I, CUDA_R_32I, CUBLAS_OP_T, CUBLAS_OP_N);
  // Column-major: first operand = b buffer (K x N, ld K, transposed), second = a buffer (K x M,
  // ld K), result C^T (N x M, ld N) = row-major C (M, N).
  const LtLayout la(CUDA_R_8I, k, n, k), lb(CUDA_R_8I, k, m, k), lc(CUDA_R_32I, n, m, n);
  const int32_t alpha = 1, beta = 0;
  FRUGAL_CUBLAS_CHECK(cublasLtMatmul(h, op.get(), &alpha, b, la.get(), a, lb.get(), &beta, c,
                                     lc.get(), c, lc.get(), nullptr, nullptr, 0, stream));
}

__global__ void epilogue_kernel(const int32_t* acc, int64_t m, int64_t n, float a_scale,
                                const float* b_scale, bool per_channel, const float* bias,
                                float out_scale, int32_t zp, int out_kind, void* out) {
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < m * n;
       t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t j = t % n;
    const float y = ::frugal::detail::qgemm_dequant(
        acc[t], a_scale, per_channel ? b_scale[j] : b_scale[0], bias != nullptr ? bias[j] : 0.f);
    if (out_kind == 0) {
      static_cast<float*>(out)[t] = y;
    } else if (out_kind == 1) {
      static_cast<int8_t*>(out)[t] =
          static_cast<int8_t>(::frugal::detail::qgemm_requant(y, out_scale, zp, -128, 127));
    } else {
      static_cast<uint8_t*>(out)[t] =
          static_cast<uint8_t>(::frugal::detail::qgemm_requant(y, out_scale, zp, 0, 255));
    }
  }
}

// One warp per output row n: lanes stride over K, per-group scales applied per element, a fixed
// shuffle tree sums the lanes (deterministic). Rows of x are looped inside (batch M is small in
// the decoding case this serves).
__global__ void woq_kernel(const float* x, const uint8_t* w, const float* scale, int64_t m,
                           int64_t n, int64_t k, int64_t g, bool i4, float* y) {
  const int64_t row = blockIdx.x * int64_t{blockDim.y} + threadIdx.y;
  if (row >= n) return;
  const int lane = threadIdx.x;
  const int64_t groups = k / g;
  for (int64_t i = 0; i < m; ++i) {
    float acc = 0.f;
    for (int64_t t = lane; t < k; t += 32) {
      int v;
      if (i4) {
        const uint8_t byte = w[(row * k + t) / 2];
        v = (t % 2 == 0) ? unpack_i4_lo(byte) : unpack_i4_hi(byte);
      } else {
        v = static_cast<int8_t>(w[row * k + t]);
      }
      acc = fmaf(static_cast<float>(v) * scale[row * groups + t / g], x[i * k + t], acc);
    }
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (lane == 0) y[i * n + row] = acc;
  }
}

}  // namespace

void qgemm_s32(ConstTensorView a, int32_t a_zero_point, ConstTensorView b, TensorView c,
               const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(a.device.index));
  const cudaStream_t s = stream_of(ctx);
  const int64_t m = a.shape[0], k = a.shape[1], n = b.shape[0];
  const int8_t* ap = a.data_as<int8_t>();
  Tensor a8;
  int32_t z = a_zero_point;
  if (a.dtype == DType::kU8) {
    a8 = Tensor::empty(a.shape, DType::kI8, a.device, ctx);
    const LaunchShape g = grid_stride_launch(m * k);
    u8_to_i8<<<g.blocks, g.threads, 0, s>>>(a.data_as<uint8_t>(), a8.data<int8_t>(), m * k);
    FRUGAL_CUDA_CHECK_LAUNCH();
    ap = a8.data<int8_t>();
    z -= 128;
  }
  int32_t* cp = c.data_as<int32_t>();
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const bool lt_ok = k > 0 && k % 4 == 0 && n % 4 == 0 && m <= INT_MAX && n <= INT_MAX &&
                     k <= INT_MAX && aligned(ap) && aligned(b.data) && aligned(cp);
  if (lt_ok) {
    lt_gemm_s8(ap, b.data_as<int8_t>(), cp, m, n, k, a.device.index, s);
  } else {
    const dim3 block(kTile, kTile);
    const dim3 grid(static_cast<unsigned>((n + kTile - 1) / kTile),
                    static_cast<unsigned>((m + kTile - 1) / kTile));
    gemm_s8_tiled<<<grid, block, 0, s>>>(ap, b.data_as<int8_t>(), m, n, k, cp);
    FRUGAL_CUDA_CHECK_LAUNCH();
  }
  if (z != 0 && k > 0) {
    zero_point_correction<<<static_cast<unsigned>(n), 256, 0, s>>>(b.data_as<int8_t>(), k, m, n, z,
                                                                   cp);
    FRUGAL_CUDA_CHECK_LAUNCH();
  }
}

void qgemm_epilogue(ConstTensorView acc, double a_scale, ConstTensorView b_scale,
                    ConstTensorView bias, double out_scale, int32_t out_zero_point, TensorView out,
                    const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(acc.device.index));
  const int64_t m = acc.shape[0], n = acc.shape[1];
  const int kind = out.dtype == DType::kF32 ? 0 : (out.dtype == DType::kI8 ? 1 : 2);
  const LaunchShape g = grid_stride_launch(m * n);
  epilogue_kernel<<<g.blocks, g.threads, 0, stream_of(ctx)>>>(
      acc.data_as<int32_t>(), m, n, static_cast<float>(a_scale), b_scale.data_as<float>(),
      b_scale.rank() == 1, bias.data != nullptr ? bias.data_as<float>() : nullptr,
      static_cast<float>(out_scale), out_zero_point, kind, out.data);
  FRUGAL_CUDA_CHECK_LAUNCH();
}

void woq_matmul(ConstTensorView x, ConstTensorView w, ConstTensorView scale, int64_t group_size,
                TensorView y, const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(x.device.index));
  const int64_t m = x.shape[0], n = w.shape[0], k = w.shape[1];
  const dim3 block(32, 8);
  const unsigned blocks = static_cast<unsigned>((n + 7) / 8);
  woq_kernel<<<blocks, block, 0, stream_of(ctx)>>>(x.data_as<float>(), w.data_as<uint8_t>(),
                                                   scale.data_as<float>(), m, n, k, group_size,
                                                   w.dtype == DType::kI4, y.data_as<float>());
  FRUGAL_CUDA_CHECK_LAUNCH();
}

}  // namespace frugal::cu
