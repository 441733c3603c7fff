// Fused optimizer updates and the gradient-norm reduction on one CUDA device: one grid-stride
// launch per parameter on ctx's stream, no host synchronisation. The per-element arithmetic is the
// CPU's (src/nn/cpu/optim.cpp) in the same order and type; nvcc may contract a * b + c into an
// fma where the host does not, so results agree with the CPU within a few ulps, not bit for bit
// (for bf16 moments: a moment may land one bf16 ulp apart where the fp32 values straddle a
// rounding boundary).
#include <cmath>

#include "common/check.cuh"
#include "common/launch.cuh"
#include "cu_ops.hpp"
#include "nn/optim_bf16.hpp"

namespace frugal::cu {
namespace {

/// Only f32 and f64 reach the optimizer kernels (validated in src/nn/optim.cpp).
template <class F>
void visit_f32_f64(DType t, const char* op, F&& f) {
  if (t == DType::kF64) return f.template operator()<double>();
  if (t == DType::kF32) return f.template operator()<float>();
  ::frugal::detail::fail(ErrorCode::kUnsupported, op, "dtype ", dtype_name(t),
                         " (expected f32 or f64)");
}

template <class T>
__global__ void sgd_kernel(T* p, const T* g, T* buf, int64_t n, T neg_lr, T mom, T damp1, T wd,
                           bool decay, bool momentum, bool nesterov, bool first) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    T d = g[i];
    if (decay) d = d + wd * p[i];
    if (momentum) {
      const T b = first ? d : buf[i] * mom + damp1 * d;
      buf[i] = b;
      d = nesterov ? d + mom * b : b;
    }
    p[i] = p[i] + neg_lr * d;
  }
}

template <class T>
__global__ void adamw_kernel(T* p, const T* g, T* m, T* v, int64_t n, T dec, bool low, T wt,
                             T one_minus_w, T b2, T one_minus_b2, T neg_step, T bc2, T eps) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const T gi = g[i];
    const T diff = gi - m[i];
    const T mi = low ? m[i] + wt * diff : gi - diff * one_minus_w;
    const T vi = v[i] * b2 + one_minus_b2 * (gi * gi);
    m[i] = mi;
    v[i] = vi;
    const T denom = sqrt(vi) / bc2 + eps;
    p[i] = p[i] * dec + neg_step * (mi / denom);
  }
}

/// AdamW with bf16 moments: the shared per-element update (nn/optim_bf16.hpp), one thread per
/// element; each thread draws its own 16 random bits (Philox is cheap next to the memory traffic).
__global__ void adamw_bf16_kernel(float* p, const float* g, uint16_t* m, uint16_t* v, int64_t n,
                                  ::frugal::detail::AdamWBf16Step s, bool stochastic, uint64_t seed,
                                  uint64_t m_offset, uint64_t v_offset) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    uint32_t rm = 0, rv = 0;
    if (stochastic) {
      rm = ::frugal::detail::adamw_bf16_random(seed, m_offset, static_cast<uint64_t>(i));
      rv = ::frugal::detail::adamw_bf16_random(seed, v_offset, static_cast<uint64_t>(i));
    }
    uint16_t mi = m[i], vi = v[i];
    p[i] = ::frugal::detail::adamw_bf16_element(s, p[i], g[i], mi, vi, stochastic, rm, rv);
    m[i] = mi;
    v[i] = vi;
  }
}

constexpr int kReduceThreads = 256;
constexpr int kReduceBlocks = 256;  // fixed, so the summation order depends only on n

/// Fixed-shape tree reduction of one double per thread within a block.
__device__ double block_sum(double s) {
  __shared__ double buf[kReduceThreads];
  buf[threadIdx.x] = s;
  __syncthreads();
  for (int w = kReduceThreads / 2; w > 0; w /= 2) {
    if (threadIdx.x < w) buf[threadIdx.x] += buf[threadIdx.x + w];
    __syncthreads();
  }
  return buf[0];
}

template <class T>
__global__ void sum_squares_partial(const T* x, int64_t n, double* partial) {
  double s = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const double v = static_cast<double>(x[i]);
    s += v * v;
  }
  const double b = block_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = b;
}

__global__ void sum_partials(const double* partial, int count, double* out) {
  double s = 0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
  const double b = block_sum(s);
  if (threadIdx.x == 0) *out = b;
}

template <class T>
__global__ void scale_kernel(T* x, int64_t n, T a) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    x[i] = x[i] * a;
  }
}

}  // namespace

void optim_sgd_update(TensorView p, ConstTensorView g, TensorView buf, double lr, double momentum,
                      double dampening, double weight_decay, bool nesterov, bool first,
                      const ExecContext& ctx) {
  const int64_t n = p.numel();
  if (n == 0) return;
  FRUGAL_CUDA_CHECK(cudaSetDevice(p.device.index));
  visit_f32_f64(p.dtype, "cu::optim_sgd_update", [&]<class T>() {
    const LaunchShape ls = grid_stride_launch(n);
    sgd_kernel<T><<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(
        p.data_as<T>(), g.data_as<T>(), momentum != 0 ? buf.data_as<T>() : nullptr, n,
        static_cast<T>(-lr), static_cast<T>(momentum), static_cast<T>(1.0 - dampening),
        static_cast<T>(weight_decay), weight_decay != 0, momentum != 0, nesterov, first);
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
}

void optim_adamw_update(TensorView p, ConstTensorView g, TensorView m, TensorView v, double decay,
                        double beta1, double beta2, double step_size, double bc2_sqrt, double eps,
                        const ExecContext& ctx) {
  const int64_t n = p.numel();
  if (n == 0) return;
  FRUGAL_CUDA_CHECK(cudaSetDevice(p.device.index));
  visit_f32_f64(p.dtype, "cu::optim_adamw_update", [&]<class T>() {
    const double w = 1.0 - beta1;
    const LaunchShape ls = grid_stride_launch(n);
    adamw_kernel<T><<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(
        p.data_as<T>(), g.data_as<T>(), m.data_as<T>(), v.data_as<T>(), n, static_cast<T>(decay),
        std::fabs(w) < 0.5, static_cast<T>(w), static_cast<T>(1.0 - w), static_cast<T>(beta2),
        static_cast<T>(1.0 - beta2), static_cast<T>(-step_size), static_cast<T>(bc2_sqrt),
        static_cast<T>(eps));
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
}

void optim_adamw_update_bf16(TensorView p, ConstTensorView g, TensorView m, TensorView v,
                             double decay, double beta1, double beta2, double step_size,
                             double bc2_sqrt, double eps, bool stochastic, uint64_t seed,
                             uint64_t offset, const ExecContext& ctx) {
  const int64_t n = p.numel();
  if (n == 0) return;
  FRUGAL_CUDA_CHECK(cudaSetDevice(p.device.index));
  const double w = 1.0 - beta1;
  const ::frugal::detail::AdamWBf16Step s{
      static_cast<float>(decay),    static_cast<float>(w),           static_cast<float>(1.0 - w),
      static_cast<float>(beta2),    static_cast<float>(1.0 - beta2), static_cast<float>(-step_size),
      static_cast<float>(bc2_sqrt), static_cast<float>(eps),         std::fabs(w) < 0.5};
  const uint64_t v_offset =
      offset + ::frugal::detail::adamw_bf16_counters(static_cast<uint64_t>(n)) / 2;
  const LaunchShape ls = grid_stride_launch(n);
  adamw_bf16_kernel<<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(
      p.data_as<float>(), g.data_as<float>(), static_cast<uint16_t*>(m.data),
      static_cast<uint16_t*>(v.data), n, s, stochastic, seed, offset, v_offset);
  FRUGAL_CUDA_CHECK_LAUNCH();
}

void optim_sum_squares(ConstTensorView x, TensorView out, const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(x.device.index));
  Tensor partial = Tensor::empty(Shape{kReduceBlocks}, DType::kF64, x.device, ctx);
  visit_f32_f64(x.dtype, "cu::optim_sum_squares", [&]<class T>() {
    sum_squares_partial<T><<<kReduceBlocks, kReduceThreads, 0, stream_of(ctx)>>>(
        x.data_as<T>(), x.numel(), partial.data<double>());
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
  sum_partials<<<1, kReduceThreads, 0, stream_of(ctx)>>>(partial.data<double>(), kReduceBlocks,
                                                         out.data_as<double>());
  FRUGAL_CUDA_CHECK_LAUNCH();
}

void optim_scale_inplace(TensorView x, double alpha, const ExecContext& ctx) {
  const int64_t n = x.numel();
  if (n == 0) return;
  FRUGAL_CUDA_CHECK(cudaSetDevice(x.device.index));
  visit_f32_f64(x.dtype, "cu::optim_scale_inplace", [&]<class T>() {
    const LaunchShape ls = grid_stride_launch(n);
    scale_kernel<T>
        <<<ls.blocks, ls.threads, 0, stream_of(ctx)>>>(x.data_as<T>(), n, static_cast<T>(alpha));
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace frugal::cu
