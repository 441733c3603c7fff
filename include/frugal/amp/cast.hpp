#pragma once
/// Fused fp32 -> low-precision casts for mixed precision: x * scale, then round to f16, bf16,
/// fp8 E4M3 or fp8 E5M2, with the amax of the input computed in the same pass.
///
/// Rounding (see docs/amp.md):
///   kNearestEven  IEEE 754 round to nearest, ties to even; bit-identical to Tensor::to and to
///                 float_types.hpp.
///   kStochastic   let `shift` be the number of input mantissa bits the target drops (larger for
///                 target subnormals) and rem their value. With r the element's R random bits
///                 (R = 16 for f16 / bf16, 8 for fp8) and thr = ceil(2^R rem / 2^shift), the
///                 result rounds up iff r + thr >= 2^R, else toward zero: one of the two
///                 neighbours of x, the upper with probability rem / 2^shift exactly when at most
///                 R bits are dropped (bf16, f16 normals), else that probability rounded up to a
///                 multiple of 2^-R. The bits come from Philox4x32 with 7 rounds (key
///                 ctx.seed, counters from ctx.offset), E = 128 / R elements per block, in the
///                 layout docs/amp.md "Rounding" defines; a call consumes ceil(numel / E)
///                 counters, at most philox_counters(numel).
/// Overflow: kSaturate clamps finite overflow and ±Inf to ±max finite; kNonSaturate gives ±Inf
/// (f16, bf16, E5M2) or NaN (E4M3). NaN stays NaN in every mode.
#include "frugal/core/dtype.hpp"
#include "frugal/core/exec_context.hpp"
#include "frugal/core/float_types.hpp"
#include "frugal/core/tensor.hpp"

namespace frugal::amp {

/// How a cast rounds the dropped mantissa bits.
enum class Rounding : uint8_t {
  kNearestEven,  ///< round to nearest, ties to even
  kStochastic,   ///< round up with probability equal to the dropped fraction (Philox)
};

/// Options of amp::cast.
struct CastOptions {
  Rounding rounding = Rounding::kNearestEven;  ///< rounding of the dropped bits
  Overflow overflow = Overflow::kSaturate;     ///< what values beyond max finite become
  float scale = 1.f;          ///< the cast rounds x * scale (one fp32 multiply); > 0, finite
  bool compute_amax = false;  ///< also return max |x| of the input (before scaling)
};

/// Result of amp::cast.
struct CastResult {
  Tensor out;        ///< same shape as x, dtype `to`, same device
  float amax = 0.f;  ///< max |x| before scaling (NaN if x holds a NaN); 0 unless compute_amax
};

/// Casts contiguous f32 `x` to `to` (kF16, kBF16, kF8E4M3, kF8E5M2) after multiplying by
/// opt.scale, in one pass over x. On CUDA the op is enqueued on ctx.stream; with compute_amax it
/// synchronizes that stream to return amax. Stochastic rounding consumes at most
/// philox_counters(numel) counters from ctx.offset (advance the offset by that between calls).
/// Errors: "[amp::cast] ..." (InvalidArgument) for a non-f32 or non-contiguous input, an
/// unsupported target dtype, or a scale that is <= 0, Inf or NaN.
CastResult cast(ConstTensorView x, DType to, const CastOptions& opt = {},
                const ExecContext& ctx = {});

/// amp::cast into a preallocated `out` (contiguous, same shape and device as x, dtype one of the
/// targets): no allocation, for hot loops. Returns the amax (0 unless opt.compute_amax). Errors
/// as amp::cast, plus "[amp::cast] ..." for an `out` of the wrong shape, device or layout.
float cast_into(ConstTensorView x, TensorView out, const CastOptions& opt = {},
                const ExecContext& ctx = {});

}  // namespace frugal::amp
