#pragma once
/// Random tensors from the counter-based Philox4x32-10 generator (frugal/core/philox.hpp).
///
/// Every op here draws element i (row-major linear index) from lane i % 4 of the Philox block with
/// counter i / 4 + ctx.offset and key ctx.seed (the stream definition in philox.hpp), so:
///   - the result depends only on (seed, offset, shape, dtype, parameters), never on the number of
///     CPU threads or on the device: uniforms are bit-identical on CPU and CUDA; normals agree
///     within a few float ulps (log, cos, sin of the host libm vs CUDA's, see philox.hpp);
///   - a draw of n values consumes philox_counters(n) = ceil(n / 4) counters: advance ctx.offset
///     by that much to draw fresh numbers with the same seed.
///
/// Supported dtypes: f32, f64, f16, bf16. f32, f16 and bf16 values are computed in float (24
/// random bits per uniform) and f16/bf16 round to nearest even from it; f64 values are computed
/// in double (32 random bits per uniform).
#include "frugal/core/philox.hpp"
#include "frugal/core/tensor.hpp"

namespace frugal {

/// A new tensor of `shape` on `device` with values uniform in [lo, hi): lo + (hi - lo) * u with
/// one rounding, u = uniform01 of philox.hpp. After rounding to the dtype a value may equal hi
/// (always possible for f16/bf16; for f32 only when hi - lo is not a power of two).
/// Throws InvalidArgument unless lo < hi, both finite and hi - lo finite in float; Unsupported
/// for dtypes other than f32, f64, f16, bf16.
Tensor rand_uniform(Shape shape, DType dtype, Device device, const ExecContext& ctx, float lo = 0.f,
                    float hi = 1.f);

/// A new tensor of `shape` on `device` with normal values mean + std * z, z standard normal by
/// Box-Muller (pairs of lanes (x, y) and (z, w) of each Philox block, see philox.hpp).
/// Throws InvalidArgument unless mean is finite and std is finite and >= 0 (std == 0 gives mean);
/// Unsupported for dtypes other than f32, f64, f16, bf16.
Tensor rand_normal(Shape shape, DType dtype, Device device, const ExecContext& ctx,
                   float mean = 0.f, float std = 1.f);

/// Fills `dst` (any strides, on its own device) with uniform values in [lo, hi), the same numbers
/// rand_uniform gives for dst's shape: element i of the row-major order takes stream element i.
void fill_uniform(TensorView dst, float lo, float hi, const ExecContext& ctx = {});

/// Fills `dst` (any strides, on its own device) with normal values mean + std * z, the same
/// numbers rand_normal gives for dst's shape.
void fill_normal(TensorView dst, float mean, float std, const ExecContext& ctx = {});

}  // namespace frugal
