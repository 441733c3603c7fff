// Relation losses on CUDA (include/frugal/distill/relation.hpp). Batches are small (B up to a few
// hundred): pairwise quantities live in B x B (angle: B x B x B) double buffers, one thread per
// entry, and every sum goes through a fixed tree or a fixed loop, so results are the same run to
// run. Similarity-preserving KD only needs the row step here (its products are core gemm).
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

/// dist[i, j] = |e_i - e_j| (0 on the diagonal); one thread per pair.
template <class T>
__global__ void pair_dist(const T* __restrict__ e, int64_t b, int64_t d,
                          double* __restrict__ dist) {
  for (int64_t p = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; p < b * b;
       p += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = p / b, j = p % b;
    double acc = 0.0;
    if (i != j) {
      for (int64_t q = 0; q < d; ++q) {
        const double diff = static_cast<double>(e[i * d + q]) - static_cast<double>(e[j * d + q]);
        acc += diff * diff;
      }
    }
    dist[p] = sqrt(acc);
  }
}

/// One block: mu_s, mu_t (off-diagonal means), the loss and c = (1/P) sum g psi_s. stats:
/// [loss, mu_s, mu_t, c].
__global__ void rkd_stats(const double* __restrict__ ds, const double* __restrict__ dt, int64_t b,
                          double* __restrict__ stats) {
  __shared__ double sh[kThreads];
  const double pairs = static_cast<double>(b * (b - 1));
  double ss = 0.0, tt = 0.0;
  for (int64_t p = threadIdx.x; p < b * b; p += kThreads) {
    ss += ds[p];
    tt += dt[p];
  }
  const double mu_s = block_sum<double>(ss, sh) / pairs;
  const double mu_t = block_sum<double>(tt, sh) / pairs;
  double loss = 0.0, c = 0.0;
  const double inv_b2 = 1.0 / static_cast<double>(b * b);
  if (mu_s > 0.0 && mu_t > 0.0) {
    for (int64_t p = threadIdx.x; p < b * b; p += kThreads) {
      if (p / b == p % b) continue;
      const double ps = ds[p] / mu_s;
      const double x = ps - dt[p] / mu_t;
      loss += dd::huber(x);
      c += dd::huber_grad(x) * inv_b2 * ps;
    }
  }
  loss = block_sum<double>(loss, sh);
  c = block_sum<double>(c, sh);
  if (threadIdx.x == 0) {
    stats[0] = loss * inv_b2;
    stats[1] = mu_s;
    stats[2] = mu_t;
    stats[3] = c / pairs;
  }
}

/// grad[k, q] = sum_l 2 (g_kl - c) / (mu_s d_kl) (e_k - e_l)[q]; one thread per (k, q).
template <class T>
__global__ void rkd_dist_grad(const T* __restrict__ e, const double* __restrict__ ds,
                              const double* __restrict__ dt, const double* __restrict__ stats,
                              int64_t b, int64_t d, T* __restrict__ g) {
  const double mu_s = stats[1], mu_t = stats[2], c = stats[3];
  const double inv_b2 = 1.0 / static_cast<double>(b * b);
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < b * d;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t k = i / d, q = i % d;
    double acc = 0.0;
    if (mu_s > 0.0 && mu_t > 0.0) {
      for (int64_t l = 0; l < b; ++l) {
        const double dist = ds[k * b + l];
        if (l == k || dist == 0.0) continue;
        const double gkl = dd::huber_grad(dist / mu_s - dt[k * b + l] / mu_t) * inv_b2;
        acc += 2.0 * (gkl - c) / (mu_s * dist) *
               (static_cast<double>(e[k * d + q]) - static_cast<double>(e[l * d + q]));
      }
    }
    g[i] = static_cast<T>(acc);
  }
}

/// norms[a, x] = |e_x - e_a|; one thread per (a, x).
template <class T>
__global__ void anchor_norms(const T* __restrict__ e, int64_t b, int64_t d,
                             double* __restrict__ norms) {
  for (int64_t p = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; p < b * b;
       p += int64_t{gridDim.x} * blockDim.x) {
    const int64_t a = p / b, x = p % b;
    double acc = 0.0;
    for (int64_t q = 0; q < d; ++q) {
      const double v = static_cast<double>(e[x * d + q]) - static_cast<double>(e[a * d + q]);
      acc += v * v;
    }
    norms[p] = sqrt(acc);
  }
}

/// cos at anchor a between x and y from the embeddings and the anchor norms (0 when either
/// difference is 0).
template <class T>
__device__ double anchor_cos(const T* __restrict__ e, const double* __restrict__ norms, int64_t b,
                             int64_t d, int64_t a, int64_t x, int64_t y) {
  const double nx = norms[a * b + x], ny = norms[a * b + y];
  if (nx == 0.0 || ny == 0.0) return 0.0;
  double dot = 0.0;
  for (int64_t q = 0; q < d; ++q) {
    const double ea = static_cast<double>(e[a * d + q]);
    dot += (static_cast<double>(e[x * d + q]) - ea) * (static_cast<double>(e[y * d + q]) - ea);
  }
  return dot / (nx * ny);
}

/// One thread per (a, x): cos_s, G = h'(cos_s - cos_t) / B^3 for every y, the row loss.
template <class T>
__global__ void angle_terms(const T* __restrict__ es, const T* __restrict__ et,
                            const double* __restrict__ ns, const double* __restrict__ nt, int64_t b,
                            int64_t ds, int64_t dt, double* __restrict__ cs,
                            double* __restrict__ gm, double* __restrict__ row_loss) {
  const double inv_b3 = 1.0 / static_cast<double>(b * b * b);
  for (int64_t p = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; p < b * b;
       p += int64_t{gridDim.x} * blockDim.x) {
    const int64_t a = p / b, x = p % b;
    double l = 0.0;
    for (int64_t y = 0; y < b; ++y) {
      const double c_s = anchor_cos(es, ns, b, ds, a, x, y);
      const double c_t = anchor_cos(et, nt, b, dt, a, x, y);
      cs[p * b + y] = c_s;
      gm[p * b + y] = dd::huber_grad(c_s - c_t) * inv_b3;
      l += dd::huber(c_s - c_t);
    }
    row_loss[p] = l;
  }
}

/// gv[a, x, q] = (sum_y w_y u_y[q] - rho u_x[q]) / |v_x| with w_y = G_axy + G_ayx,
/// rho = sum_y w_y cos_axy, u = n(e - e_a); one thread per (a, x, q).
template <class T>
__global__ void angle_gv(const T* __restrict__ e, const double* __restrict__ ns,
                         const double* __restrict__ cs, const double* __restrict__ gm, int64_t b,
                         int64_t d, double* __restrict__ gv) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < b * b * d;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t a = i / (b * d), x = (i / d) % b, q = i % d;
    const double nx = ns[a * b + x];
    double out = 0.0;
    if (nx > 0.0) {
      const double ea = static_cast<double>(e[a * d + q]);
      double acc = 0.0, rho = 0.0;
      for (int64_t y = 0; y < b; ++y) {
        const double w = gm[(a * b + x) * b + y] + gm[(a * b + y) * b + x];
        const double ny = ns[a * b + y];
        rho += w * cs[(a * b + x) * b + y];
        if (ny > 0.0) acc += w * (static_cast<double>(e[y * d + q]) - ea) / ny;
      }
      out = (acc - rho * (static_cast<double>(e[x * d + q]) - ea) / nx) / nx;
    }
    gv[i] = out;
  }
}

/// grad[k, q] = sum_a gv[a, k, q] - sum_x gv[k, x, q]; one thread per (k, q).
template <class T>
__global__ void angle_grad(const double* __restrict__ gv, int64_t b, int64_t d, T* __restrict__ g) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < b * d;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t k = i / d, q = i % d;
    double acc = 0.0;
    for (int64_t a = 0; a < b; ++a) acc += gv[(a * b + k) * d + q];
    for (int64_t x = 0; x < b; ++x) acc -= gv[(k * b + x) * d + q];
    g[i] = static_cast<T>(acc);
  }
}

/// One block per row of the Gram matrices: the row loss and dL/dG for that row.
template <class T>
__global__ void sp_rows(const T* __restrict__ gs, const T* __restrict__ gt, T* __restrict__ dg,
                        double* __restrict__ row_loss, int64_t b) {
  __shared__ double sh[kThreads];
  const double inv_b2 = 1.0 / static_cast<double>(b * b);
  for (int64_t i = blockIdx.x; i < b; i += gridDim.x) {
    const T* s = gs + i * b;
    const T* t = gt + i * b;
    double ss = 0.0, tt = 0.0;
    for (int64_t j = threadIdx.x; j < b; j += kThreads) {
      ss += static_cast<double>(s[j]) * static_cast<double>(s[j]);
      tt += static_cast<double>(t[j]) * static_cast<double>(t[j]);
    }
    ss = block_sum<double>(ss, sh);
    tt = block_sum<double>(tt, sh);
    const double is = ss > 0.0 ? 1.0 / sqrt(ss) : 0.0;
    const double it = tt > 0.0 ? 1.0 / sqrt(tt) : 0.0;
    double l = 0.0, proj = 0.0;
    for (int64_t j = threadIdx.x; j < b; j += kThreads) {
      const double d = static_cast<double>(s[j]) * is - static_cast<double>(t[j]) * it;
      l += d * d;
      proj += static_cast<double>(s[j]) * is * d;
    }
    l = block_sum<double>(l, sh);
    proj = block_sum<double>(proj, sh);
    for (int64_t j = threadIdx.x; j < b; j += kThreads) {
      const double d = static_cast<double>(s[j]) * is - static_cast<double>(t[j]) * it;
      dg[i * b + j] =
          static_cast<T>(2.0 * inv_b2 * (d - static_cast<double>(s[j]) * is * proj) * is);
    }
    if (threadIdx.x == 0) row_loss[i] = l;
  }
}

}  // namespace

void distill_rkd_distance(ConstTensorView student, ConstTensorView teacher, TensorView grad,
                          double* out, const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(student.device.index));
  const int64_t b = student.shape[0], ds = student.shape[1], dt = teacher.shape[1];
  const cudaStream_t stream = stream_of(ctx);
  Tensor scratch = Tensor::empty({2 * b * b + 4}, DType::kF64, student.device, ctx);
  double* dist_s = scratch.data<double>();
  double* dist_t = dist_s + b * b;
  double* stats = dist_t + b * b;
  const LaunchShape lp = grid_stride_launch(b * b);
  const LaunchShape lg = grid_stride_launch(b * ds);
  dd::visit_real(student.dtype, "distill_rkd_distance", [&]<class T>() {
    pair_dist<T><<<lp.blocks, lp.threads, 0, stream>>>(student.data_as<T>(), b, ds, dist_s);
    FRUGAL_CUDA_CHECK_LAUNCH();
    pair_dist<T><<<lp.blocks, lp.threads, 0, stream>>>(teacher.data_as<T>(), b, dt, dist_t);
    FRUGAL_CUDA_CHECK_LAUNCH();
    rkd_stats<<<1, kThreads, 0, stream>>>(dist_s, dist_t, b, stats);
    FRUGAL_CUDA_CHECK_LAUNCH();
    rkd_dist_grad<T><<<lg.blocks, lg.threads, 0, stream>>>(student.data_as<T>(), dist_s, dist_t,
                                                           stats, b, ds, grad.data_as<T>());
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
  double host[4];
  FRUGAL_CUDA_CHECK(cudaMemcpyAsync(host, stats, sizeof(host), cudaMemcpyDeviceToHost, stream));
  FRUGAL_CUDA_CHECK(cudaStreamSynchronize(stream));
  out[dd::kRkdLoss] = host[0];
  out[dd::kRkdMuStudent] = host[1];
  out[dd::kRkdMuTeacher] = host[2];
}

double distill_rkd_angle(ConstTensorView student, ConstTensorView teacher, TensorView grad,
                         const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(student.device.index));
  const int64_t b = student.shape[0], ds = student.shape[1], dt = teacher.shape[1];
  const cudaStream_t stream = stream_of(ctx);
  // Scratch (doubles): anchor norms s / t (B^2 each), cos_s and G (B^3 each), row losses (B^2),
  // gv (B^2 Ds), the total.
  const int64_t b2 = b * b, b3 = b2 * b;
  Tensor scratch =
      Tensor::empty({2 * b2 + 2 * b3 + b2 + b2 * ds + 1}, DType::kF64, student.device, ctx);
  double* ns = scratch.data<double>();
  double* nt = ns + b2;
  double* cs = nt + b2;
  double* gm = cs + b3;
  double* row_loss = gm + b3;
  double* gv = row_loss + b2;
  double* total = gv + b2 * ds;
  const LaunchShape l2 = grid_stride_launch(b2);
  const LaunchShape lv = grid_stride_launch(b2 * ds);
  const LaunchShape lg = grid_stride_launch(b * ds);
  dd::visit_real(student.dtype, "distill_rkd_angle", [&]<class T>() {
    anchor_norms<T><<<l2.blocks, l2.threads, 0, stream>>>(student.data_as<T>(), b, ds, ns);
    FRUGAL_CUDA_CHECK_LAUNCH();
    anchor_norms<T><<<l2.blocks, l2.threads, 0, stream>>>(teacher.data_as<T>(), b, dt, nt);
    FRUGAL_CUDA_CHECK_LAUNCH();
    angle_terms<T><<<l2.blocks, l2.threads, 0, stream>>>(student.data_as<T>(), teacher.data_as<T>(),
                                                         ns, nt, b, ds, dt, cs, gm, row_loss);
    FRUGAL_CUDA_CHECK_LAUNCH();
    angle_gv<T><<<lv.blocks, lv.threads, 0, stream>>>(student.data_as<T>(), ns, cs, gm, b, ds, gv);
    FRUGAL_CUDA_CHECK_LAUNCH();
    angle_grad<T><<<lg.blocks, lg.threads, 0, stream>>>(gv, b, ds, grad.data_as<T>());
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
  sum_doubles<<<1, kThreads, 0, stream>>>(row_loss, b2, 1.0 / static_cast<double>(b3), total);
  FRUGAL_CUDA_CHECK_LAUNCH();
  double loss = 0.0;
  FRUGAL_CUDA_CHECK(cudaMemcpyAsync(&loss, total, sizeof(double), cudaMemcpyDeviceToHost, stream));
  FRUGAL_CUDA_CHECK(cudaStreamSynchronize(stream));
  return loss;
}

double distill_sp_rows(ConstTensorView gram_student, ConstTensorView gram_teacher,
                       TensorView grad_gram, const ExecContext& ctx) {
  FRUGAL_CUDA_CHECK(cudaSetDevice(gram_student.device.index));
  const int64_t b = gram_student.shape[0];
  const cudaStream_t stream = stream_of(ctx);
  Tensor scratch = Tensor::empty({b + 1}, DType::kF64, gram_student.device, ctx);
  double* sp = scratch.data<double>();
  dd::visit_real(gram_student.dtype, "distill_sp_rows", [&]<class T>() {
    sp_rows<T><<<row_blocks(b), kThreads, 0, stream>>>(
        gram_student.data_as<T>(), gram_teacher.data_as<T>(), grad_gram.data_as<T>(), sp, b);
    FRUGAL_CUDA_CHECK_LAUNCH();
  });
  sum_doubles<<<1, kThreads, 0, stream>>>(sp, b, 1.0 / static_cast<double>(b * b), sp + b);
  FRUGAL_CUDA_CHECK_LAUNCH();
  double loss = 0.0;
  FRUGAL_CUDA_CHECK(cudaMemcpyAsync(&loss, sp + b, sizeof(double), cudaMemcpyDeviceToHost, stream));
  FRUGAL_CUDA_CHECK(cudaStreamSynchronize(stream));
  return loss;
}

}  // namespace frugal::cu
