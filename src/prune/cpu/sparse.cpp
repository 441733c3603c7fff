// CPU sparse-dense products: oneTBB over row blocks, a register tile of kTile output columns
// per row so the inner loop is a vectorised axpy (x row tile times one weight), and the
// X tile (K x kTile) stays in L2 across the rows of a block.
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "prune/prune_internal.hpp"

namespace frugal::cpu {
namespace {

constexpr int64_t kRowGrain = 16;

// Output columns per register tile, from FRUGAL_PRUNE_TILE (experiment) or the default.
int64_t tile_width() {
  static const int64_t w = [] {
    const char* e = std::getenv("FRUGAL_PRUNE_TILE");
    return e ? std::atoll(e) : int64_t{0};
  }();
  return w;
}

// Two independent accumulator sets (even and odd terms) halve the FMA dependency chain; they are
// added at the end, so the summation order is fixed (independent of the thread count). GCC
// vector extensions (64-byte vectors: one zmm with AVX-512, two ymm otherwise) keep the
// accumulators in registers, which plain arrays are not guaranteed to be.
typedef float VecF32 __attribute__((vector_size(64)));
typedef double VecF64 __attribute__((vector_size(64)));
template <class T>
struct VecOf;
template <>
struct VecOf<float> {
  using type = VecF32;
};
template <>
struct VecOf<double> {
  using type = VecF64;
};

template <class T, int64_t W>
struct Acc2 {
  using V = typename VecOf<T>::type;
  static constexpr int64_t kLanes = 64 / sizeof(T);
  static constexpr int64_t kVecs = W / kLanes;
  static_assert(W % kLanes == 0, "tile width must be a multiple of a 64-byte vector");
  V a[kVecs], b[kVecs];
  Acc2() {
    for (int64_t q = 0; q < kVecs; ++q) a[q] = b[q] = V{};
  }
  static inline V load(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
  }
  __attribute__((always_inline)) inline void add0(T s, const T* xr) {
#pragma GCC unroll 8
    for (int64_t q = 0; q < kVecs; ++q) a[q] += s * load(xr + q * kLanes);
  }
  __attribute__((always_inline)) inline void add1(T s, const T* xr) {
#pragma GCC unroll 8
    for (int64_t q = 0; q < kVecs; ++q) b[q] += s * load(xr + q * kLanes);
  }
  inline void store(T* out) const {
#pragma GCC unroll 8
    for (int64_t q = 0; q < kVecs; ++q) {
      const V r = a[q] + b[q];
      std::memcpy(out + q * kLanes, &r, sizeof(V));
    }
  }
};

// For every tile of W output columns: packs X[:, n0 : n0 + W) into a contiguous (K, W) panel
// (zero-padded at the tail; contiguous so the power-of-two row stride of X does not alias into
// a few cache sets). Rows are processed in blocks of kRowBlock and K in blocks of kKBlock, so
// the panel slice in use (kKBlock x W) and the block's accumulators stay in L1 while every row
// of the block consumes it: row_fn(i, slot, k0, k1, panel, acc) adds the terms of row i with
// columns in [k0, k1) to acc (slot = i - first row of the block, for per-row cursors).
// The terms of a row are added in column order, so results do not depend on the thread count.
constexpr int64_t kRowBlock = 32;
constexpr int64_t kKBlock = 128;

template <class T, int64_t W, class RowFn>
void panel_rows_kblocked(int64_t M, int64_t K, int64_t N, const T* x, T* y, const ExecContext& ctx,
                         RowFn&& row_fn) {
  std::vector<T> panel(static_cast<std::size_t>(K * W));
  ctx.run([&] {
    for (int64_t n0 = 0; n0 < N; n0 += W) {
      const int64_t w = std::min(W, N - n0);
      tbb::parallel_for(tbb::blocked_range<int64_t>(0, K, 256), [&](auto r) {
        for (int64_t k = r.begin(); k < r.end(); ++k) {
          T* dst = panel.data() + k * W;
          std::memcpy(dst, x + k * N + n0, sizeof(T) * w);
          std::fill(dst + w, dst + W, T(0));
        }
      });
      const int64_t blocks = (M + kRowBlock - 1) / kRowBlock;
      tbb::parallel_for(tbb::blocked_range<int64_t>(0, blocks, 1), [&](auto r) {
        for (int64_t blk = r.begin(); blk < r.end(); ++blk) {
          const int64_t i0 = blk * kRowBlock, i1 = std::min(M, i0 + kRowBlock);
          Acc2<T, W> acc[kRowBlock];
          for (int64_t k0 = 0; k0 < K; k0 += kKBlock) {
            const int64_t k1 = std::min(K, k0 + kKBlock);
            for (int64_t i = i0; i < i1; ++i) {
              Acc2<T, W> a = acc[i - i0];
              row_fn(i, i - i0, k0, k1, static_cast<const T*>(panel.data()), a);
              acc[i - i0] = a;
            }
          }
          for (int64_t i = i0; i < i1; ++i) {
            alignas(64) T out[W];
            acc[i - i0].store(out);
            std::memcpy(y + i * N + n0, out, sizeof(T) * w);
          }
        }
      });
    }
  });
}

// The same without K blocking: row_fn(i, panel, acc) adds all terms of row i. Better when rows
// have few terms per K block (unstructured CSR / BSR at high sparsity), where the per-block
// cursor search would dominate.
template <class T, int64_t W, class RowFn>
void panel_rows(int64_t M, int64_t K, int64_t N, const T* x, T* y, const ExecContext& ctx,
                RowFn&& row_fn) {
  std::vector<T> panel(static_cast<std::size_t>(K * W));
  ctx.run([&] {
    for (int64_t n0 = 0; n0 < N; n0 += W) {
      const int64_t w = std::min(W, N - n0);
      tbb::parallel_for(tbb::blocked_range<int64_t>(0, K, 256), [&](auto r) {
        for (int64_t k = r.begin(); k < r.end(); ++k) {
          T* dst = panel.data() + k * W;
          std::memcpy(dst, x + k * N + n0, sizeof(T) * w);
          std::fill(dst + w, dst + W, T(0));
        }
      });
      tbb::parallel_for(tbb::blocked_range<int64_t>(0, M, kRowGrain), [&](auto r) {
        for (int64_t i = r.begin(); i < r.end(); ++i) {
          Acc2<T, W> acc;
          row_fn(i, static_cast<const T*>(panel.data()), acc);
          alignas(64) T out[W];
          acc.store(out);
          std::memcpy(y + i * N + n0, out, sizeof(T) * w);
        }
      });
    }
  });
}

template <class T, int64_t W>
void csr_w(const int32_t* row_ptr, const int32_t* col_idx, const T* values, int64_t M, int64_t K,
           const T* x, int64_t N, T* y, const ExecContext& ctx) {
  panel_rows<T, W>(
      M, K, N, x, y,
      ctx, [&](int64_t i, const T* panel, Acc2<T, W>& acc) __attribute__((always_inline)) {
        int32_t p = row_ptr[i];
        const int32_t e = row_ptr[i + 1];
        for (; p + 1 < e; p += 2) {
          acc.add0(values[p], panel + int64_t{col_idx[p]} * W);
          acc.add1(values[p + 1], panel + int64_t{col_idx[p + 1]} * W);
        }
        if (p < e) acc.add0(values[p], panel + int64_t{col_idx[p]} * W);
      });
}

template <class T, int64_t W>
void bsr_w(const int32_t* row_ptr, const int32_t* col_idx, const T* values, int64_t M, int64_t K,
           int64_t br, int64_t bc, const T* x, int64_t N, T* y, const ExecContext& ctx) {
  panel_rows<T, W>(
      M, K, N, x, y,
      ctx, [&](int64_t i, const T* panel, Acc2<T, W>& acc) __attribute__((always_inline)) {
        const int64_t bi = i / br, rr = i % br;
        for (int32_t p = row_ptr[bi]; p < row_ptr[bi + 1]; ++p) {
          const T* blk = values + (int64_t{p} * br + rr) * bc;
          const T* xp = panel + int64_t{col_idx[p]} * bc * W;
          int64_t c = 0;
          for (; c + 1 < bc; c += 2) {
            acc.add0(blk[c], xp + c * W);
            acc.add1(blk[c + 1], xp + (c + 1) * W);
          }
          if (c < bc) acc.add0(blk[c], xp + c * W);
        }
      });
}

template <int64_t W>
void s24_w(const float* values, const uint8_t* indices, int64_t M, int64_t K, const float* x,
           int64_t N, float* y, const ExecContext& ctx) {
  panel_rows_kblocked<float, W>(
      M, K, N, x, y, ctx,
      [&](int64_t i, int64_t, int64_t k0, int64_t k1, const float* panel, Acc2<float, W>& acc)
          __attribute__((always_inline)) {
            const float* v = values + i * (K / 2);
            const uint8_t* idx = indices + i * (K / 8);
            for (int64_t g = k0 / 4; g < k1 / 4; ++g) {
              const unsigned nib = (idx[g >> 1] >> ((g & 1) * 4)) & 0xFu;
              acc.add0(v[2 * g], panel + (4 * g + (nib & 3u)) * W);
              acc.add1(v[2 * g + 1], panel + (4 * g + (nib >> 2)) * W);
            }
          });
}

}  // namespace

// Panel widths (measured on the development machine, docs/prune.md): CSR / BSR 128 bytes of
// output per row (32 f32 / 16 f64: a (K, W) panel of 512 KiB for K = 4096 stays in a 1 MiB L2);
// 2:4 64 f32 with K blocks of kKBlock (the panel slice stays in L1; 2:4 rows have K / 2 terms,
// so the per-block overhead is small). FRUGAL_PRUNE_TILE overrides the width (experiments).
template <class T>
void prune_csr_spmm(const int32_t* row_ptr, const int32_t* col_idx, const T* values, int64_t M,
                    int64_t K, const T* x, int64_t N, T* y, const ExecContext& ctx) {
  const int64_t w = tile_width() * 4 / static_cast<int64_t>(sizeof(T));
  if (w == 64) return csr_w<T, 64>(row_ptr, col_idx, values, M, K, x, N, y, ctx);
  if (sizeof(T) == 8) return csr_w<T, 16>(row_ptr, col_idx, values, M, K, x, N, y, ctx);
  return csr_w<T, 32>(row_ptr, col_idx, values, M, K, x, N, y, ctx);
}

template <class T>
void prune_bsr_spmm(const int32_t* row_ptr, const int32_t* col_idx, const T* values, int64_t M,
                    int64_t K, int64_t br, int64_t bc, const T* x, int64_t N, T* y,
                    const ExecContext& ctx) {
  if (sizeof(T) == 8) return bsr_w<T, 16>(row_ptr, col_idx, values, M, K, br, bc, x, N, y, ctx);
  return bsr_w<T, 32>(row_ptr, col_idx, values, M, K, br, bc, x, N, y, ctx);
}

void prune_spmm_24(const float* values, const uint8_t* indices, int64_t M, int64_t K,
                   const float* x, int64_t N, float* y, const ExecContext& ctx) {
  switch (tile_width()) {
    case 32:
      return s24_w<32>(values, indices, M, K, x, N, y, ctx);
    default:
      return s24_w<64>(values, indices, M, K, x, N, y, ctx);
  }
}

template void prune_csr_spmm<float>(const int32_t*, const int32_t*, const float*, int64_t, int64_t,
                                    const float*, int64_t, float*, const ExecContext&);
template void prune_csr_spmm<double>(const int32_t*, const int32_t*, const double*, int64_t,
                                     int64_t, const double*, int64_t, double*, const ExecContext&);
template void prune_bsr_spmm<float>(const int32_t*, const int32_t*, const float*, int64_t, int64_t,
                                    int64_t, int64_t, const float*, int64_t, float*,
                                    const ExecContext&);
template void prune_bsr_spmm<double>(const int32_t*, const int32_t*, const double*, int64_t,
                                     int64_t, int64_t, int64_t, const double*, int64_t, double*,
                                     const ExecContext&);

}  // namespace frugal::cpu
