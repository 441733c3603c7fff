// Response KD on CUDA (include/frugal/distill/response.hpp): one block per row, three passes over
// the row (maxima and a finiteness sum; the sums of exponentials; the gradient, recomputing the
// exponentials rather than storing them), then one block adds the row losses in double and finds
// the first bad row. Every reduction is a fixed tree: the loss is the same run to run.
#include <cuda_runtime.h>

#include <cmath>

#include "common/check.cuh"
#include "common/launch.cuh"
#include "cu_ops.hpp"
#include "distill/common.cuh"
#include "distill/distill_internal.hpp"

namespace frugal::cu {
namespace {

using namespace distill_detail;
namespace dd = ::frugal::distill::detail;

/// Row r: student s (c), teacher t (nt: c dense, k top-k with idx), optional label; lse_all (n)
/// for the uniform-tail top-k teacher (null: renormalised over the k stored classes).
template <class T>
__global__ void kd_rows(const T* __restrict__ s_all, const T* __restrict__ t_all,
                        const int64_t* __restrict__ idx_all, const T* __restrict__ lse_all,
                        const int64_t* __restrict__ labels, int64_t n, int64_t c, int64_t nt,
                        T inv_t, T kd_scale, T ce_scale, T* __restrict__ g_all,
                        double* __restrict__ row_kl, double* __restrict__ row_ce,
                        int* __restrict__ row_bad) {
  __shared__ T sh_t[kThreads];
  __shared__ double sh_d[kThreads];
  const bool dense = idx_all == nullptr;
  const bool ce = labels != nullptr;
  const bool uniform = lse_all != nullptr;
  for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    const T lse = uniform ? lse_all[r] : T(0);
    const T* s = s_all + r * c;
    const T* t = t_all + r * nt;
    const int64_t* idx = dense ? nullptr : idx_all + r * nt;
    T* g = g_all + r * c;
    const int64_t label = ce ? labels[r] : -1;
    // Index / label checks (block-uniform decisions).
    int bad = 0;
    if (ce && (label < 0 || label >= c)) bad = dd::kKdBadLabel;
    if (!dense) {
      int local = 0;
      for (int64_t i = threadIdx.x; i < nt; i += kThreads) {
        if (idx[i] < 0 || idx[i] >= c) local = 1;
      }
      if (block_sum<double>(static_cast<double>(local), sh_d) > 0.0 && bad == 0) {
        bad = dd::kKdBadIndex;
      }
    }
    // Pass 1: maxima and sum of (x - x), 0 unless a NaN or Inf is present.
    T ms = -INFINITY, mt = -INFINITY;
    double chk = 0.0;
    for (int64_t j = threadIdx.x; j < c; j += kThreads) {
      const T v = s[j];
      ms = v > ms ? v : ms;
      chk += static_cast<double>(v - v);
    }
    for (int64_t j = threadIdx.x; j < nt; j += kThreads) {
      const T v = t[j];
      mt = v > mt ? v : mt;
      chk += static_cast<double>(v - v);
    }
    if (uniform && threadIdx.x == 0) chk += static_cast<double>(lse - lse);
    ms = block_max<T>(ms, sh_t);
    mt = block_max<T>(mt, sh_t);
    chk = block_sum<double>(chk, sh_d);
    if (bad == 0 && !isfinite(chk)) bad = dd::kKdNonFinite;
    if (bad != 0) {
      if (threadIdx.x == 0) {
        row_bad[r] = bad;
        row_kl[r] = 0.0;
        row_ce[r] = 0.0;
      }
      continue;
    }
    const T os = ms * inv_t, ot = mt * inv_t;
    // Pass 2: Z_p, Z_q, W = sum e_q (b - a), Z of the temperature-1 softmax. Uniform tail
    // (see src/distill/cpu/response.cpp): W = sum_i q_i (log q_i - a_i), the sum of q_i, and the
    // sums of a over all classes and over the stored ones.
    double zs = 0.0, zt = 0.0, w = 0.0, zc = 0.0, sum_a = 0.0, sum_a_stored = 0.0;
    for (int64_t j = threadIdx.x; j < c; j += kThreads) {
      const T a = s[j] * inv_t - os;
      zs += static_cast<double>(exp(a));
      if (uniform) sum_a += static_cast<double>(a);
      if (ce) zc += static_cast<double>(exp(s[j] - ms));
      if (dense) {
        const T b = t[j] * inv_t - ot;
        const T eb = exp(b);
        zt += static_cast<double>(eb);
        w += static_cast<double>(eb * (b - a));
      }
    }
    if (!dense && !uniform) {
      for (int64_t i = threadIdx.x; i < nt; i += kThreads) {
        const T a = s[idx[i]] * inv_t - os;
        const T b = t[i] * inv_t - ot;
        const T eb = exp(b);
        zt += static_cast<double>(eb);
        w += static_cast<double>(eb * (b - a));
      }
    } else if (uniform) {
      for (int64_t i = threadIdx.x; i < nt; i += kThreads) {
        const T a = s[idx[i]] * inv_t - os;
        const T lq = t[i] * inv_t - lse;
        const T q = exp(lq < T(0) ? lq : T(0));
        zt += static_cast<double>(q);  // the stored mass
        sum_a_stored += static_cast<double>(a);
        w += static_cast<double>(q) * (static_cast<double>(lq) - static_cast<double>(a));
      }
    }
    zs = block_sum<double>(zs, sh_d);
    zt = block_sum<double>(zt, sh_d);
    w = block_sum<double>(w, sh_d);
    if (ce) zc = block_sum<double>(zc, sh_d);
    double tail_q = 0.0, kl = 0.0;
    if (uniform) {
      sum_a = block_sum<double>(sum_a, sh_d);
      sum_a_stored = block_sum<double>(sum_a_stored, sh_d);
      const bool has_tail = nt < c;
      const double m = zt < 1.0 ? 1.0 - zt : 0.0;
      tail_q = has_tail ? m / static_cast<double>(c - nt) : 0.0;
      kl = w + (m > 0.0 && has_tail ? m * log(tail_q) : 0.0) - tail_q * (sum_a - sum_a_stored) +
           (zt + (has_tail ? m : 0.0)) * log(zs);
    } else {
      kl = w / zt - log(zt) + log(zs);
    }
    // Pass 3: the gradient.
    const T as = static_cast<T>(static_cast<double>(kd_scale) / zs);
    const T at = uniform ? kd_scale : static_cast<T>(static_cast<double>(kd_scale) / zt);
    const T tq = static_cast<T>(tail_q) * kd_scale;
    const T ac = ce ? static_cast<T>(static_cast<double>(ce_scale) / zc) : T(0);
    for (int64_t j = threadIdx.x; j < c; j += kThreads) {
      T v = exp(s[j] * inv_t - os) * as - tq;
      if (dense) v -= exp(t[j] * inv_t - ot) * at;
      if (ce) v += exp(s[j] - ms) * ac - (j == label ? ce_scale : T(0));
      g[j] = v;
    }
    if (!dense) {
      __syncthreads();  // the dense writes above come first
      for (int64_t i = threadIdx.x; i < nt; i += kThreads) {
        // Distinct indices: one thread per element.
        if (uniform) {
          const T lq = t[i] * inv_t - lse;
          g[idx[i]] -= (exp(lq < T(0) ? lq : T(0)) - static_cast<T>(tail_q)) * at;
        } else {
          g[idx[i]] -= exp(t[i] * inv_t - ot) * at;
        }
      }
    }
    if (threadIdx.x == 0) {
      row_kl[r] = kl;
      row_ce[r] = ce ? (static_cast<double>(ms) - static_cast<double>(s[label])) + log(zc) : 0.0;
      row_bad[r] = 0;
    }
  }
}

/// Sums the row terms and finds the first bad row: out[kKdOutSize] as in distill_internal.hpp.
__global__ void kd_finish(const double* __restrict__ row_kl, const double* __restrict__ row_ce,
                          const int* __restrict__ row_bad, int64_t n, double* __restrict__ out) {
  __shared__ double sh[kThreads];
  double kl = 0.0, ce = 0.0, first = static_cast<double>(n);
  for (int64_t r = threadIdx.x; r < n; r += kThreads) {
    kl += row_kl[r];
    ce += row_ce[r];
    if (row_bad[r] != 0 && static_cast<double>(r) < first) first = static_cast<double>(r);
  }
  kl = block_sum<double>(kl, sh);
  ce = block_sum<double>(ce, sh);
  first = -block_max<double>(-first, sh);
  if (threadIdx.x == 0) {
    out[dd::kKdSum] = kl;
    out[dd::kCeSum] = ce;
    const bool any = first < static_cast<double>(n);
    out[dd::kBadRow] = any ? first : -1.0;
    out[dd::kBadKind] = any ? static_cast<double>(row_bad[static_cast<int64_t>(first)]) : 0.0;
  }
}

}  // namespace

void distill_kd_loss(ConstTensorView student, ConstTensorView teacher, ConstTensorView indices,
                     ConstTensorView lse, ConstTensorView labels, double temperature,
                     double kd_scale, double ce_scale, TensorView grad, double* out,
                     const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(student.device.index));
  const int64_t n = student.shape[0], c = student.shape[1], nt = teacher.shape[1];
  const cudaStream_t stream = stream_of(ctx);
  // Scratch: row KL, row CE, the 4 outputs (doubles), then the row flags (ints).
  Tensor scratch =
      Tensor::empty({2 * n + dd::kKdOutSize + (n + 1) / 2}, DType::kF64, student.device, ctx);
  double* sp = scratch.data<double>();
  int* bad = reinterpret_cast<int*>(sp + 2 * n + dd::kKdOutSize);
  const int64_t* ip = indices.data != nullptr ? indices.data_as<int64_t>() : nullptr;
  const int64_t* lp = labels.data != nullptr ? labels.data_as<int64_t>() : nullptr;
  dd::visit_real(student.dtype, "distill_kd_loss", [&]<class T>() {
    kd_rows<T><<<row_blocks(n), kThreads, 0, stream>>>(
        student.data_as<T>(), teacher.data_as<T>(), ip,
        lse.data != nullptr ? lse.data_as<T>() : nullptr, lp, n, c, nt,
        static_cast<T>(1.0 / temperature), static_cast<T>(kd_scale), static_cast<T>(ce_scale),
        grad.data_as<T>(), sp, sp + n, bad);
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
  kd_finish<<<1, kThreads, 0, stream>>>(sp, sp + n, bad, n, sp + 2 * n);
  FRUGAL_CUDA_CHECK_LAUNCH();
  FRUGAL_CUDA_CHECK(cudaMemcpyAsync(out, sp + 2 * n, dd::kKdOutSize * sizeof(double),
                                    cudaMemcpyDeviceToHost, stream));
  FRUGAL_CUDA_CHECK(cudaStreamSynchronize(stream));
}

namespace {

/// lse[r] = log sum_c exp(x_rc / T) in double: one block per row (max, then the sum).
template <class T>
__global__ void row_lse(const T* __restrict__ x_all, int64_t n, int64_t c, double inv_t,
                        double* __restrict__ lse) {
  __shared__ double sh[kThreads];
  for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    const T* x = x_all + r * c;
    double m = -INFINITY, chk = 0.0;
    for (int64_t j = threadIdx.x; j < c; j += kThreads) {
      const double v = static_cast<double>(x[j]) * inv_t;
      m = v > m ? v : m;
      chk += v - v;
    }
    m = block_max<double>(m, sh);
    chk = block_sum<double>(chk, sh);
    double z = 0.0;
    for (int64_t j = threadIdx.x; j < c; j += kThreads) {
      z += exp(static_cast<double>(x[j]) * inv_t - m);
    }
    z = block_sum<double>(z, sh);
    if (threadIdx.x == 0) lse[r] = isfinite(chk) ? m + log(z) : chk;
  }
}

}  // namespace

void distill_row_lse(ConstTensorView x, double temperature, TensorView lse,
                     const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(x.device.index));
  const int64_t n = x.shape[0], c = x.shape[1];
  const cudaStream_t stream = stream_of(ctx);
  dd::visit_real(x.dtype, "distill_row_lse", [&]<class T>() {
    row_lse<T><<<row_blocks(n), kThreads, 0, stream>>>(x.data_as<T>(), n, c, 1.0 / temperature,
                                                       lse.data_as<double>());
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace frugal::cu
