// Causal self-attention on CUDA (llm.c attention_forward / attention_backward, cuBLAS variant):
// q, k, v are permuted from the packed (B, T, 3C) layout to (B, H, T, hd), the per-head products
// are cuBLAS strided-batched GEMMs over the B*H pairs, and the causal softmax (forward) and its
// backward are fused kernels with one warp per row of the (T, T) score matrix. cuBLAS runs in its
// default math mode (full fp32, no TF32), deterministic for a given problem and device.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "common/check.cuh"
#include "common/cublas_handle.cuh"
#include "common/launch.cuh"
#include "cu_ops.hpp"
#include "frugal/core/float_types.hpp"

namespace frugal::cu {
namespace {

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 8;

/// The shared cuBLAS handle of the current device and `stream` (common/cublas_handle.cuh); the
/// lease holds its lock while this op enqueues.
CublasLease handle_for(cudaStream_t stream) {
  int device = 0;
  FRUGAL_CUDA_CHECK(cudaGetDevice(&device));
  return cublas_handle(device, stream);
}

/// Row-major batched C_i = alpha op(A_i) op(B_i) + beta C_i, (M x N) = (M x K)(K x N), as the
/// column-major product C^T = op(B)^T op(A)^T.
template <class T>
void gemm_rm(cublasHandle_t handle, bool trans_a, bool trans_b, int m, int n, int k, T alpha,
             const T* a, int lda, long long stride_a, const T* b, int ldb, long long stride_b,
             T beta, T* c, int ldc, long long stride_c, int batch) {
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  if constexpr (std::is_same_v<T, double>) {
    FRUGAL_CUBLAS_CHECK(cublasDgemmStridedBatched(handle, op_b, op_a, n, m, k, &alpha, b, ldb,
                                                  stride_b, a, lda, stride_a, &beta, c, ldc,
                                                  stride_c, batch));
  } else {
    FRUGAL_CUBLAS_CHECK(cublasSgemmStridedBatched(handle, op_b, op_a, n, m, k, &alpha, b, ldb,
                                                  stride_b, a, lda, stride_a, &beta, c, ldc,
                                                  stride_c, batch));
  }
}

// (B, T, 3C) -> q, k, v each (B, H, T, hd), stored one after the other in `dst`.
template <class T>
__global__ void split_heads_kernel(const T* __restrict__ qkv, T* __restrict__ dst, int64_t b,
                                   int64_t t, int64_t c, int64_t h) {
  const int64_t hd = c / h, per = b * t * c, total = 3 * per;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t part = e / per;
    int64_t r = e % per;  // index into (B, H, T, hd)
    const int64_t dd = r % hd;
    r /= hd;
    const int64_t tt = r % t;
    r /= t;
    const int64_t hh = r % h, bb = r / h;
    dst[e] = qkv[(bb * t + tt) * 3 * c + part * c + hh * hd + dd];
  }
}

// `parts` tensors (B, H, T, hd) one after the other -> (B, T, parts*C), part p at columns p*C.
template <class T>
__global__ void merge_heads_kernel(const T* __restrict__ src, T* __restrict__ dst, int parts,
                                   int64_t b, int64_t t, int64_t c, int64_t h) {
  const int64_t hd = c / h, per = b * t * c, total = parts * per;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t part = e / per;
    int64_t r = e % per;
    const int64_t dd = r % hd;
    r /= hd;
    const int64_t tt = r % t;
    r /= t;
    const int64_t hh = r % h, bb = r / h;
    dst[(bb * t + tt) * parts * c + part * c + hh * hd + dd] = src[e];
  }
}

// (B, T, C) -> (B, H, T, hd).
template <class T>
__global__ void split_one_kernel(const T* __restrict__ src, T* __restrict__ dst, int64_t b,
                                 int64_t t, int64_t c, int64_t h) {
  const int64_t hd = c / h, total = b * t * c;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    int64_t r = e;
    const int64_t dd = r % hd;
    r /= hd;
    const int64_t tt = r % t;
    r /= t;
    const int64_t hh = r % h, bb = r / h;
    dst[e] = src[(bb * t + tt) * c + hh * hd + dd];
  }
}

template <class A>
__device__ A warp_sum(A v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <class A>
__device__ A warp_max(A v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// In place over rows of (B*H*T, T) scaled scores: row with time i keeps softmax over columns
// 0..i and zero after.
template <class T>
__global__ void causal_softmax_kernel(T* __restrict__ p, int64_t rows, int64_t t) {
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= rows) return;
  const int64_t i = row % t;
  T* pr = p + row * t;
  T m = -INFINITY;
  for (int64_t j = lane; j <= i; j += kWarp) m = max(m, pr[j]);
  m = warp_max(m);
  T s = 0;
  for (int64_t j = lane; j <= i; j += kWarp) s += exp(pr[j] - m);
  s = warp_sum(s);
  const T inv = T(1) / s;
  for (int64_t j = lane; j < t; j += kWarp) pr[j] = j <= i ? exp(pr[j] - m) * inv : T(0);
}

// In place dP -> dS = P * (dP - sum_j P dP) * scale, zero after the diagonal.
template <class T>
__global__ void causal_softmax_backward_kernel(const T* __restrict__ p, T* __restrict__ dp,
                                               int64_t rows, int64_t t, T scale) {
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= rows) return;
  const int64_t i = row % t;
  const T* pr = p + row * t;
  T* dr = dp + row * t;
  T s = 0;
  for (int64_t j = lane; j <= i; j += kWarp) s += pr[j] * dr[j];
  s = warp_sum(s);
  for (int64_t j = lane; j < t; j += kWarp) dr[j] = j <= i ? pr[j] * (dr[j] - s) * scale : T(0);
}

// Autocast: f32 scores (already scaled) -> probabilities rounded to nearest even in L (bf16 /
// f16, frugal's conversions: the CPU's bits for equal fp32 values), one warp per row, softmax in
// fp32 (the host computes it in double: the two agree to ~1 ulp of fp32 before the rounding).
template <class L>
__global__ void causal_softmax_low_kernel(const float* __restrict__ sc, L* __restrict__ p,
                                          int64_t rows, int64_t t) {
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= rows) return;
  const int64_t i = row % t;
  const float* sr = sc + row * t;
  L* pr = p + row * t;
  float m = -INFINITY;
  for (int64_t j = lane; j <= i; j += kWarp) m = fmaxf(m, sr[j]);
  m = warp_max(m);
  float s = 0;
  for (int64_t j = lane; j <= i; j += kWarp) s += expf(sr[j] - m);
  s = warp_sum(s);
  const float inv = 1.f / s;
  for (int64_t j = lane; j < t; j += kWarp) pr[j] = L(j <= i ? expf(sr[j] - m) * inv : 0.f);
}

// Autocast: dS = P * (dP - sum_j P dP) * scale from low P and f32 dP, rounded into L.
template <class L>
__global__ void causal_softmax_backward_low_kernel(const L* __restrict__ p,
                                                   const float* __restrict__ dp, L* __restrict__ ds,
                                                   int64_t rows, int64_t t, float scale) {
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= rows) return;
  const int64_t i = row % t;
  const L* pr = p + row * t;
  const float* dr = dp + row * t;
  L* outr = ds + row * t;
  float s = 0;
  for (int64_t j = lane; j <= i; j += kWarp) s += static_cast<float>(pr[j]) * dr[j];
  s = warp_sum(s);
  for (int64_t j = lane; j < t; j += kWarp) {
    outr[j] = L(j <= i ? static_cast<float>(pr[j]) * (dr[j] - s) * scale : 0.f);
  }
}

// Autocast: (B, T, P*C) f32 -> (P, B*H, T, hd) in L (rounded to nearest even), one thread per
// output element.
template <class L>
__global__ void split_heads_low_kernel(const float* __restrict__ src, L* __restrict__ dst,
                                       int64_t parts, int64_t b, int64_t t, int64_t c, int64_t h) {
  const int64_t hd = c / h, per = b * t * c, total = parts * per;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t part = e / per;
    int64_t r = e % per;  // index into (B, H, T, hd)
    const int64_t dd = r % hd;
    r /= hd;
    const int64_t tt = r % t;
    r /= t;
    const int64_t hh = r % h, bb = r / h;
    dst[e] = L(src[(bb * t + tt) * parts * c + part * c + hh * hd + dd]);
  }
}

struct Sizes {
  int64_t b, t, c, h, hd;
};

Sizes sizes_of(ConstTensorView qkv, int64_t num_heads) {
  const int64_t c = qkv.shape[2] / 3;
  return {qkv.shape[0], qkv.shape[1], c, num_heads, c / num_heads};
}

void check_int_range(const Sizes& s) {
  // cuBLAS takes int dimensions and batch counts.
  const int64_t lim = int64_t{1} << 31;
  FRUGAL_REQUIRE(s.t < lim && s.b * s.h < lim && s.t * s.t < lim && s.t * s.hd < lim,
                 "causal_attention", "sizes beyond cuBLAS's int range (B*H = ", s.b * s.h,
                 ", T = ", s.t, ")");
}

template <class T>
void forward_t(ConstTensorView qkv, int64_t num_heads, TensorView out, TensorView probs,
               const ExecContext& ctx) {
  const Sizes s = sizes_of(qkv, num_heads);
  check_int_range(s);
  const cudaStream_t stream = stream_of(ctx);
  const int64_t per = s.b * s.t * s.c;
  Tensor buf = Tensor::empty({4, per}, qkv.dtype, qkv.device, ctx);  // q, k, v, y (B, H, T, hd)
  T* q = buf.data<T>();
  T* k = q + per;
  T* v = q + 2 * per;
  T* y = q + 3 * per;
  LaunchShape ls = grid_stride_launch(3 * per);
  split_heads_kernel<T>
      <<<ls.blocks, ls.threads, 0, stream>>>(qkv.data_as<T>(), q, s.b, s.t, s.c, s.h);
  FRUGAL_CUDA_CHECK_LAUNCH();
  const CublasLease lease = handle_for(stream);
  cublasHandle_t handle = lease.get();
  const int t = int(s.t), hd = int(s.hd), batch = int(s.b * s.h);
  const long long st_qkv = (long long)s.t * s.hd, st_p = (long long)s.t * s.t;
  T* p = probs.data_as<T>();
  // scores (T, T) = q k^T / sqrt(hd)
  gemm_rm<T>(handle, false, true, t, t, hd, T(1) / std::sqrt(T(s.hd)), q, hd, st_qkv, k, hd, st_qkv,
             T(0), p, t, st_p, batch);
  const int64_t rows = s.b * s.h * s.t;
  const unsigned blocks = unsigned((rows + kRowsPerBlock - 1) / kRowsPerBlock);
  causal_softmax_kernel<T><<<blocks, kRowsPerBlock * kWarp, 0, stream>>>(p, rows, s.t);
  FRUGAL_CUDA_CHECK_LAUNCH();
  // y (T, hd) = P v
  gemm_rm<T>(handle, false, false, t, hd, t, T(1), p, t, st_p, v, hd, st_qkv, T(0), y, hd, st_qkv,
             batch);
  ls = grid_stride_launch(per);
  merge_heads_kernel<T>
      <<<ls.blocks, ls.threads, 0, stream>>>(y, out.data_as<T>(), 1, s.b, s.t, s.c, s.h);
  FRUGAL_CUDA_CHECK_LAUNCH();
}

template <class T>
void backward_t(ConstTensorView g, ConstTensorView qkv, ConstTensorView probs, int64_t num_heads,
                TensorView grad_qkv, const ExecContext& ctx) {
  const Sizes s = sizes_of(qkv, num_heads);
  check_int_range(s);
  const cudaStream_t stream = stream_of(ctx);
  const int64_t per = s.b * s.t * s.c;
  // q, k, v, dq, dk, dv, dy (each (B, H, T, hd)), then dP (B, H, T, T).
  Tensor buf = Tensor::empty({7 * per + s.b * s.h * s.t * s.t}, qkv.dtype, qkv.device, ctx);
  T* q = buf.data<T>();
  T* k = q + per;
  T* v = q + 2 * per;
  T* dq = q + 3 * per;
  T* dk = q + 4 * per;
  T* dv = q + 5 * per;
  T* dy = q + 6 * per;
  T* dp = q + 7 * per;
  LaunchShape ls = grid_stride_launch(3 * per);
  split_heads_kernel<T>
      <<<ls.blocks, ls.threads, 0, stream>>>(qkv.data_as<T>(), q, s.b, s.t, s.c, s.h);
  FRUGAL_CUDA_CHECK_LAUNCH();
  ls = grid_stride_launch(per);
  split_one_kernel<T><<<ls.blocks, ls.threads, 0, stream>>>(g.data_as<T>(), dy, s.b, s.t, s.c, s.h);
  FRUGAL_CUDA_CHECK_LAUNCH();
  const CublasLease lease = handle_for(stream);
  cublasHandle_t handle = lease.get();
  const int t = int(s.t), hd = int(s.hd), batch = int(s.b * s.h);
  const long long st_qkv = (long long)s.t * s.hd, st_p = (long long)s.t * s.t;
  const T* p = probs.data_as<T>();
  // dP (T, T) = dy v^T;  dv (T, hd) = P^T dy
  gemm_rm<T>(handle, false, true, t, t, hd, T(1), dy, hd, st_qkv, v, hd, st_qkv, T(0), dp, t, st_p,
             batch);
  gemm_rm<T>(handle, true, false, t, hd, t, T(1), p, t, st_p, dy, hd, st_qkv, T(0), dv, hd, st_qkv,
             batch);
  const int64_t rows = s.b * s.h * s.t;
  const unsigned blocks = unsigned((rows + kRowsPerBlock - 1) / kRowsPerBlock);
  causal_softmax_backward_kernel<T>
      <<<blocks, kRowsPerBlock * kWarp, 0, stream>>>(p, dp, rows, s.t, T(1) / std::sqrt(T(s.hd)));
  FRUGAL_CUDA_CHECK_LAUNCH();
  // dq = dS k;  dk = dS^T q
  gemm_rm<T>(handle, false, false, t, hd, t, T(1), dp, t, st_p, k, hd, st_qkv, T(0), dq, hd, st_qkv,
             batch);
  gemm_rm<T>(handle, true, false, t, hd, t, T(1), dp, t, st_p, q, hd, st_qkv, T(0), dk, hd, st_qkv,
             batch);
  ls = grid_stride_launch(3 * per);
  merge_heads_kernel<T>
      <<<ls.blocks, ls.threads, 0, stream>>>(dq, grad_qkv.data_as<T>(), 3, s.b, s.t, s.c, s.h);
  FRUGAL_CUDA_CHECK_LAUNCH();
}

}  // namespace

void causal_attention_forward(ConstTensorView qkv, int64_t num_heads, TensorView out,
                              TensorView probs, const ExecContext& ctx) {
  if (qkv.dtype == DType::kF64) return forward_t<double>(qkv, num_heads, out, probs, ctx);
  forward_t<float>(qkv, num_heads, out, probs, ctx);
}

void causal_attention_backward(ConstTensorView grad_out, ConstTensorView qkv, ConstTensorView probs,
                               int64_t num_heads, TensorView grad_qkv, const ExecContext& ctx) {
  if (qkv.dtype == DType::kF64) {
    return backward_t<double>(grad_out, qkv, probs, num_heads, grad_qkv, ctx);
  }
  backward_t<float>(grad_out, qkv, probs, num_heads, grad_qkv, ctx);
}

void causal_softmax_low(ConstTensorView scores, TensorView probs, const ExecContext& ctx) {
  const int64_t t = scores.shape[1], rows = scores.shape[0] * t;
  if (rows == 0) return;
  FRUGAL_CUDA_CHECK(cudaSetDevice(scores.device.index));
  const unsigned blocks = unsigned((rows + kRowsPerBlock - 1) / kRowsPerBlock);
  const cudaStream_t stream = stream_of(ctx);
  if (probs.dtype == DType::kF16) {
    causal_softmax_low_kernel<Half><<<blocks, kRowsPerBlock * kWarp, 0, stream>>>(
        scores.data_as<float>(), probs.data_as<Half>(), rows, t);
  } else {
    causal_softmax_low_kernel<BFloat16><<<blocks, kRowsPerBlock * kWarp, 0, stream>>>(
        scores.data_as<float>(), probs.data_as<BFloat16>(), rows, t);
  }
  FRUGAL_CUDA_CHECK_LAUNCH();
}

void attention_split_heads_low(ConstTensorView src, int64_t parts, int64_t num_heads,
                               TensorView dst, const ExecContext& ctx) {
  const int64_t b = src.shape[0], t = src.shape[1], c = src.shape[2] / parts;
  const int64_t total = parts * b * t * c;
  if (total == 0) return;
  FRUGAL_CUDA_CHECK(cudaSetDevice(src.device.index));
  const LaunchShape ls = grid_stride_launch(total);
  const cudaStream_t stream = stream_of(ctx);
  if (dst.dtype == DType::kF16) {
    split_heads_low_kernel<Half><<<ls.blocks, ls.threads, 0, stream>>>(
        src.data_as<float>(), dst.data_as<Half>(), parts, b, t, c, num_heads);
  } else {
    split_heads_low_kernel<BFloat16><<<ls.blocks, ls.threads, 0, stream>>>(
        src.data_as<float>(), dst.data_as<BFloat16>(), parts, b, t, c, num_heads);
  }
  FRUGAL_CUDA_CHECK_LAUNCH();
}

void attention_merge_heads(ConstTensorView src, int64_t num_heads, TensorView dst,
                           const ExecContext& ctx) {
  const int parts = static_cast<int>(src.shape[0]);
  const int64_t b = dst.shape[0], t = dst.shape[1], c = dst.shape[2] / parts;
  if (b * t * c == 0) return;
  FRUGAL_CUDA_CHECK(cudaSetDevice(src.device.index));
  const LaunchShape ls = grid_stride_launch(parts * b * t * c);
  merge_heads_kernel<float><<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(
      src.data_as<float>(), dst.data_as<float>(), parts, b, t, c, num_heads);
  FRUGAL_CUDA_CHECK_LAUNCH();
}

void causal_softmax_backward_low(ConstTensorView probs, ConstTensorView dprobs, double scale,
                                 TensorView dscores, const ExecContext& ctx) {
  const int64_t t = probs.shape[1], rows = probs.shape[0] * t;
  if (rows == 0) return;
  FRUGAL_CUDA_CHECK(cudaSetDevice(probs.device.index));
  const unsigned blocks = unsigned((rows + kRowsPerBlock - 1) / kRowsPerBlock);
  const cudaStream_t stream = stream_of(ctx);
  const auto sc = static_cast<float>(scale);
  if (probs.dtype == DType::kF16) {
    causal_softmax_backward_low_kernel<Half><<<blocks, kRowsPerBlock * kWarp, 0, stream>>>(
        probs.data_as<Half>(), dprobs.data_as<float>(), dscores.data_as<Half>(), rows, t, sc);
  } else {
    causal_softmax_backward_low_kernel<BFloat16><<<blocks, kRowsPerBlock * kWarp, 0, stream>>>(
        probs.data_as<BFloat16>(), dprobs.data_as<float>(), dscores.data_as<BFloat16>(), rows, t,
        sc);
  }
  FRUGAL_CUDA_CHECK_LAUNCH();
}

}  // namespace frugal::cu
