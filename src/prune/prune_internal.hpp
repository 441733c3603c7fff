#pragma once
// Internal helpers of the prune module shared by the dispatch files, the CPU backend and (through
// plain functions) the CUDA kernels.
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "frugal/core/config.hpp"
#include "frugal/core/tensor.hpp"

namespace frugal::prune::detail {

/// Order-preserving unsigned image of a float: a < b (non-NaN) iff key(a) < key(b); -0 < +0.
FRUGAL_INLINE uint32_t order_key(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
FRUGAL_INLINE uint64_t order_key(double v) {
  uint64_t u;
  std::memcpy(&u, &v, 8);
  return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}

/// A contiguous run of scores (one tensor of a global selection).
template <class T>
struct Segment {
  const T* data;
  uint8_t* mask;
  int64_t n;
};

}  // namespace frugal::prune::detail

namespace frugal::cpu {
/// Prunes the k smallest of the union of `segs` (|x| when use_abs) with the tie rule of
/// prune/mask.hpp, writing every mask; returns the smallest kept score (+inf if none).
double prune_select_mask_f32(std::span<const prune::detail::Segment<float>> segs, int64_t k,
                             bool use_abs, int num_threads);
double prune_select_mask_f64(std::span<const prune::detail::Segment<double>> segs, int64_t k,
                             bool use_abs, int num_threads);
/// N:M mask over contiguous scores of `groups` groups of m; |x| when use_abs.
void prune_nm_mask(ConstTensorView scores, int n, int m, bool use_abs, TensorView mask,
                   const ExecContext& ctx);
}  // namespace frugal::cpu

namespace frugal::cpu {
/// y (M, N) = CSR (M, K) * x (K, N); all contiguous host arrays; T = float or double.
template <class T>
void prune_csr_spmm(const int32_t* row_ptr, const int32_t* col_idx, const T* values, int64_t M,
                    int64_t K, const T* x, int64_t N, T* y, const ExecContext& ctx);
/// y (M, N) = BSR * x (K, N).
template <class T>
void prune_bsr_spmm(const int32_t* row_ptr, const int32_t* col_idx, const T* values, int64_t M,
                    int64_t K, int64_t br, int64_t bc, const T* x, int64_t N, T* y,
                    const ExecContext& ctx);
/// y (M, N) = 2:4 (M, K) * x (K, N), f32.
void prune_spmm_24(const float* values, const uint8_t* indices, int64_t M, int64_t K,
                   const float* x, int64_t N, float* y, const ExecContext& ctx);
}  // namespace frugal::cpu
