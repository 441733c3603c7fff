#pragma once
/// Decompositions of 4-way convolution kernels W (C_out, C_in, kh, kw) for low-rank convolutions
/// (tensor level: the nn rewrite that turns them into layer sequences is in
/// frugal/nn/lowrank_layers.hpp).
///
/// Tucker-2 (Kim et al., ICLR 2016): HOSVD on the two channel modes only,
///   W[o, i, h, w] ~ sum_{a, b} U_out[o, a] U_in[i, b] core[a, b, h, w],
/// i.e. a 1x1 conv C_in -> r_in (U_in^T), a kh x kw conv r_in -> r_out (core), and a 1x1 conv
/// r_out -> C_out (U_out). U_out / U_in are the leading left singular vectors of the mode-0 and
/// mode-1 unfoldings (truncated HOSVD, De Lathauwer et al. 2000); exact when W has multilinear
/// rank (r_out, r_in) in the channel modes. Device-generic (frugal::gemm and svd): CPU or CUDA.
///
/// CP (Lebedev et al., ICLR 2015): rank-R canonical polyadic decomposition by alternating least
/// squares (Kolda and Bader 2009, Fig. 3.3),
///   W[o, i, h, w] ~ sum_r A_out[o, r] A_in[i, r] A_h[h, r] A_w[w, r],
/// i.e. a 1x1 conv C_in -> R, a depthwise kh x 1 conv, a depthwise 1 x kw conv and a 1x1 conv
/// R -> C_out. CP-ALS runs on the host in double with Eigen: kernels are small (<= a few million
/// elements) and ALS is a sequence of tiny dependent solves, latency-bound on a GPU. A CUDA
/// tensor is copied to the host and the factors copied back (documented in docs/lowrank.md).
#include <cstdint>

#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"

namespace frugal::lowrank {

/// Tucker-2 factors of W (C_out, C_in, kh, kw); the input's dtype and device.
struct Tucker2Result {
  Tensor core;                  ///< (r_out, r_in, kh, kw)
  Tensor u_out;                 ///< (C_out, r_out), orthonormal columns
  Tensor u_in;                  ///< (C_in, r_in), orthonormal columns
  double relative_error = 0.0;  ///< ||W - reconstruction||_F / ||W||_F, from the residual
  bool converged = true;        ///< both unfolding SVDs converged
};

/// Truncated HOSVD of W on its two channel modes. Needs a finite, non-empty rank-4 f32 / f64
/// tensor, 1 <= rank_out <= min(C_out, C_in kh kw) and 1 <= rank_in <= min(C_in, C_out kh kw).
Tucker2Result tucker2(ConstTensorView w, int64_t rank_out, int64_t rank_in,
                      const ExecContext& ctx = {});

/// Singular values of W's mode-0 (C_out) and mode-1 (C_in) unfoldings, for rank selection.
struct Tucker2Spectra {
  Tensor s_out;  ///< (min(C_out, C_in kh kw))
  Tensor s_in;   ///< (min(C_in, C_out kh kw))
};
Tucker2Spectra tucker2_spectra(ConstTensorView w, const ExecContext& ctx = {});

/// Energies of the full HOSVD core, for the "core energy" definition of a Tucker-2 rank: with
/// complete channel bases (ranks R_out = min(C_out, C_in kh kw), R_in = min(C_in, C_out kh kw))
/// the core keeps all of ||W||^2, and e[a, b] = sum_{h, w} core[a, b, h, w]^2. Truncating to
/// (r_out, r_in) keeps exactly sum_{a < r_out, b < r_in} e[a, b] (the bases are orthonormal), so
/// unlike the per-mode spectra this is the energy the truncated kernel really keeps. Returns an
/// (R_out, R_in) f64 tensor on the host. Same input requirements as tucker2.
Tensor tucker2_core_energy(ConstTensorView w, const ExecContext& ctx = {});

/// Two-convolution factorizations of a kernel from one matrix SVD.
///   channel (Zhang et al. 2015; "scheme" of the channel decomposition): the mode-0 unfolding
///     (C_out, C_in kh kw) = U S V^T -> a kh x kw conv C_in -> r with weight S^1/2 V^T (the
///     original stride / padding / dilation) then a 1x1 conv r -> C_out with weight U S^1/2;
///     r (C_in kh kw + C_out) parameters.
///   spatial (Jaderberg et al. 2014, scheme 2): the (C_in kh, C_out kw) reshaping
///     M[(c, h), (o, x)] = W[o, c, h, x] = U S V^T -> a kh x 1 conv C_in -> r (weight U S^1/2,
///     vertical stride / padding / dilation) then a 1 x kw conv r -> C_out (weight S^1/2 V^T,
///     horizontal ones); r (C_in kh + C_out kw) parameters.
struct ConvSvdResult {
  Tensor first;                 ///< channel: (r, C_in, kh, kw); spatial: (r, C_in, kh, 1)
  Tensor second;                ///< channel: (C_out, r, 1, 1); spatial: (C_out, r, 1, kw)
  Tensor s;                     ///< all singular values of the matrix (descending)
  double relative_error = 0.0;  ///< ||W - reconstruction||_F / ||W||_F (Eckart-Young tail)
  bool converged = true;        ///< the SVD converged
};

/// The mode-0 unfolding (C_out, C_in kh kw) of W as a new contiguous tensor.
Tensor channel_unfold(ConstTensorView w, const ExecContext& ctx = {});
/// The (C_in kh, C_out kw) spatial reshaping M[(c, h), (o, x)] = W[o, c, h, x], new tensor.
Tensor spatial_unfold(ConstTensorView w, const ExecContext& ctx = {});

/// Rank-`rank` channel factorization; 1 <= rank <= min(C_out, C_in kh kw). Same input
/// requirements as tucker2.
ConvSvdResult channel_svd(ConstTensorView w, int64_t rank, const ExecContext& ctx = {});
/// Rank-`rank` spatial factorization; 1 <= rank <= min(C_in kh, C_out kw).
ConvSvdResult spatial_svd(ConstTensorView w, int64_t rank, const ExecContext& ctx = {});

/// W ~ core x_0 U_out x_1 U_in as a new (C_out, C_in, kh, kw) tensor.
Tensor tucker2_reconstruct(const Tucker2Result& t, const ExecContext& ctx = {});

/// Options of cp_als.
struct CpOptions {
  int64_t max_iters = 1000;  ///< ALS sweeps (one sweep updates all four factors)
  /// Stop when the relative error changes by less than tol between sweeps (or drops below it).
  double tol = 1e-12;
  uint64_t seed = 0;  ///< initial columns beyond a mode's dimension are Gaussian from this seed
};

/// CP factors of W (C_out, C_in, kh, kw); the input's dtype and device. The column norms
/// (the lambda of the literature) are folded into `out`.
struct CpResult {
  Tensor out;                   ///< (C_out, R)
  Tensor in;                    ///< (C_in, R)
  Tensor h;                     ///< (kh, R)
  Tensor w;                     ///< (kw, R)
  double relative_error = 0.0;  ///< ||W - reconstruction||_F / ||W||_F
  int64_t iterations = 0;       ///< ALS sweeps run
  bool converged = false;       ///< stopped by `tol` before max_iters
};

/// Rank-`rank` CP decomposition of W by ALS, initialised from the leading left singular vectors
/// of each unfolding (HOSVD init; Gaussian columns where a mode has fewer than `rank`). Needs a
/// finite, non-empty rank-4 f32 / f64 tensor, rank >= 1, max_iters >= 1, tol >= 0.
CpResult cp_als(ConstTensorView w, int64_t rank, const CpOptions& opt = {},
                const ExecContext& ctx = {});

/// sum_r out[:, r] x in[:, r] x h[:, r] x w[:, r] as a new (C_out, C_in, kh, kw) tensor.
Tensor cp_reconstruct(const CpResult& cp, const ExecContext& ctx = {});

}  // namespace frugal::lowrank
