#pragma once
/// Vector (codebook) quantization: k-means codebooks, a scalar codebook per tensor, the fixed NF4
/// codebook of QLoRA, and product quantization.
///
/// k-means (Lloyd 1982) with k-means++ seeding (Arthur and Vassilvitskii 2007), deterministic by
/// seed on every backend and thread count:
///   - seeding draws its uniforms from the Philox stream (seed, offset 0) of philox.hpp (element c
///     for the c-th centre) and runs on the host; D^2 weights are summed in double in index order;
///   - squared distances are float sums over the d coordinates in index order, every product and
///     sum rounded separately (no fma), so CPU and CUDA compute identical distances; ties go to
///     the lower centroid index;
///   - centroid sums are exact: each coordinate is rounded to a fixed-point int64 with 40 bits
///     below max|x| (coordinates smaller than 2^-40 max|x| lose their low bits), so the sums do not
///     depend on the order of addition (CPU threads, GPU atomics); a centroid is sum / count in
///     double, rounded to float. An empty cluster keeps its previous centroid.
///   - Lloyd iterations stop when no assignment changes (converged) or after max_iters.
/// Points: (n, d) f32 on the CPU or a CUDA device, n <= 2^23 (the fixed-point sums' range).
#include <array>
#include <cstdint>
#include <vector>

#include "frugal/core/tensor.hpp"

namespace frugal::quant {

/// Options of kmeans.
struct KMeansOptions {
  int64_t k = 16;       ///< clusters, 1 <= k <= n
  int max_iters = 100;  ///< Lloyd iterations at most (>= 1)
  uint64_t seed = 0;    ///< Philox key of the k-means++ draws
};

/// What kmeans found. Tensors are on the points' device.
struct KMeansResult {
  Tensor centroids;               ///< (k, d) f32
  Tensor assignments;             ///< (n) i32, the nearest centroid of each point
  std::vector<double> objective;  ///< sum of squared distances after each assignment step
  int iterations = 0;             ///< assignment steps run
  bool converged = false;         ///< the last step changed no assignment
};

/// Clusters the rows of `points` (n, d) f32 into opt.k clusters.
KMeansResult kmeans(ConstTensorView points, const KMeansOptions& opt = {},
                    const ExecContext& ctx = {});

/// The nearest row of `centroids` (k, d) for each row of `points` (n, d): (n) i32 (first on ties).
Tensor kmeans_assign(ConstTensorView points, ConstTensorView centroids,
                     const ExecContext& ctx = {});

/// A tensor coded against a scalar codebook: x ~ codebook[codes].
struct CodebookTensor {
  Tensor codes;     ///< x's shape; u4 (packed) for bits <= 4, else u8
  Tensor codebook;  ///< (2^bits) f32, ascending
};

/// Fits a 2^bits-entry scalar codebook (bits 1..8) to the elements of x (f32, any shape) by 1-D
/// k-means (opt.k is ignored) and codes x against it. 4 bits gives a non-uniform 4-bit format.
CodebookTensor codebook_quantize(ConstTensorView x, int bits, const KMeansOptions& opt = {},
                                 const ExecContext& ctx = {});
/// codebook[codes] as f32 of the codes' shape.
Tensor codebook_dequantize(const CodebookTensor& q, const ExecContext& ctx = {});

/// The 16 NF4 values of QLoRA (Dettmers, Pagnoni, Holtzman, Zettlemoyer 2023, "QLoRA: Efficient
/// Finetuning of Quantized LLMs", Appendix E; bitsandbytes `functional.py` get_4bit_type("nf4")):
/// quantiles of N(0, 1) normalised to [-1, 1], with an exact 0.
inline constexpr std::array<float, 16> kNF4 = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

/// NF4 blockwise quantization (bitsandbytes): each block of `block` consecutive elements (row-major
/// order) is divided by its absmax and mapped to the nearest NF4 value (ties to the lower code).
struct Nf4Tensor {
  Tensor codes;  ///< u4 packed, x's shape
  Tensor
      absmax;  ///< (ceil(numel / block)) f32; an all-zero block has absmax 0 (codes: the 0 entry)
  int64_t block = 64;
};

/// NF4-quantizes x (f32, any shape, finite); the work runs on the host (a CUDA x is copied) and the
/// results are on x's device.
Nf4Tensor nf4_quantize(ConstTensorView x, int64_t block = 64, const ExecContext& ctx = {});
/// kNF4[code] * absmax of the block, f32 of the codes' shape.
Tensor nf4_dequantize(const Nf4Tensor& q, const ExecContext& ctx = {});

/// Product quantization (Jégou, Douze, Schmid 2011): vectors of dimension d split into m
/// sub-vectors of d / m coordinates, each coded by the nearest of k centroids of its own codebook.
struct ProductQuantizer {
  Tensor codebooks;  ///< (m, k, d / m) f32
  int64_t m = 0;
  int64_t k = 0;
  int64_t dim = 0;  ///< d
};

/// Trains one k-means codebook per sub-space on x (n, d) f32 (m divides d, 1 <= k <= 256, k <= n);
/// opt.k is ignored, opt.seed + j seeds sub-space j.
ProductQuantizer pq_train(ConstTensorView x, int64_t m, int64_t k, const KMeansOptions& opt = {},
                          const ExecContext& ctx = {});
/// Codes (n, m) u8 of the rows of x (n, d).
Tensor pq_encode(const ProductQuantizer& pq, ConstTensorView x, const ExecContext& ctx = {});
/// Reconstruction (n, d) f32 of codes (n, m) u8.
Tensor pq_decode(const ProductQuantizer& pq, ConstTensorView codes, const ExecContext& ctx = {});

}  // namespace frugal::quant
