#pragma once
/// Linear (uniform) quantization of float tensors to integer codes, and back.
///
///   t     = x / scale                       (float; double for f64 input)
///   code  = clamp(rint(t) + zero_point, qmin, qmax)   rint: round half to even
///           or clamp(floor(t + u) + zero_point, ...)  u ~ U[0, 1) from Philox (stochastic)
///   x'    = (code - zero_point) * scale     (float)
///
/// Non-finite input (the documented policy, identical on every backend):
///   NaN  -> code zero_point (dequantizes to exactly 0);
///   +Inf -> qmax, -Inf -> qmin (saturation, like any value outside the range).
/// The convenience functions quantize_per_tensor / _per_channel / _per_group derive the range from
/// the data, so NaN or Inf in the data there is an InvalidArgument error (no finite range exists).
///
/// Codes are stored as code_dtype(spec.bits, spec.is_signed) (see format.hpp): i8/u8 with x's
/// shape for 5..8 bits, i4/u4 with x's shape (two per byte) for 3..4 bits, and for 2 bits a u8
/// tensor of shape {ceil(numel / 4)} holding four codes per byte (element 4k+j in bits 2j..2j+1 of
/// byte k, two's complement when signed). Packing follows the row-major element order.
///
/// Stochastic rounding draws element i (row-major) of the Philox stream (ctx.seed, ctx.offset)
/// (frugal/core/philox.hpp), so CPU and CUDA give identical codes; a call consumes
/// philox_counters(numel) counters: advance ctx.offset by that much for fresh numbers.
///
/// Every function validates its arguments once and throws InvalidArgument "[op] ..." for: bits
/// outside 2..8, x not f32/f64/f16/bf16, an empty x, x and qparams on different devices, an axis
/// out of range, a group size that does not divide the axis, qparams of the wrong shape or dtype,
/// a scale that is not finite and > 0, a zero point outside [qmin, qmax]. Checking the qparams'
/// values reads them on the host (for CUDA qparams: a copy, which waits for the stream).
#include <cstdint>
#include <map>
#include <string>

#include "frugal/core/tensor.hpp"
#include "frugal/quant/format.hpp"
#include "frugal/quant/qparams.hpp"

namespace frugal::quant {

/// A quantized tensor: codes plus what is needed to dequantize them.
struct QTensor {
  Tensor codes;     ///< code_dtype(spec); x's shape, or {ceil(numel / 4)} u8 for 2 bits
  QuantSpec spec;   ///< the linear format (granularity, axis and group size included)
  QParams qparams;  ///< scale f32 / zero_point i32, shaped as the granularity requires
  Shape shape;      ///< shape of the original tensor

  int64_t numel() const { return shape.numel(); }
  Device device() const { return codes.device(); }
  /// Bytes of codes + scales + zero points (what a saved QTensor weighs, metadata aside).
  int64_t nbytes() const;
};

/// The expected QParams shape for data of `shape` under `spec`: {} per tensor, {shape[axis]} per
/// channel, `shape` with shape[axis] / group_size per group. Throws for a bad axis / group size.
Shape qparams_shape(const Shape& shape, const QuantSpec& spec);

/// The codes tensor shape for data of `shape`: `shape`, or {ceil(numel / 4)} for 2-bit specs.
Shape codes_shape(const Shape& shape, const QuantSpec& spec);

/// Quantizes x (f32, f64, f16, bf16; any strides) with the given parameters (on x's device).
QTensor quantize(ConstTensorView x, const QuantSpec& spec, const QParams& qparams,
                 const ExecContext& ctx = {});

/// Same, writing into `codes` (dtype code_dtype(spec), shape codes_shape(x.shape, spec),
/// contiguous, on x's device), e.g. to reuse an allocation.
void quantize_into(ConstTensorView x, const QuantSpec& spec, const QParams& qparams,
                   TensorView codes, const ExecContext& ctx = {});

/// (code - zero_point) * scale as a new f32 tensor of q.shape on q's device.
Tensor dequantize(const QTensor& q, const ExecContext& ctx = {});

/// Same, into `out` (f32, q.shape, contiguous, on q's device).
void dequantize_into(const QTensor& q, TensorView out, const ExecContext& ctx = {});

/// quantize followed by dequantize in one pass, without materialising codes: a new tensor of x's
/// dtype and shape (the forward of quantization-aware training). Same rounding and NaN policy.
Tensor fake_quantize(ConstTensorView x, const QuantSpec& spec, const QParams& qparams,
                     const ExecContext& ctx = {});

/// Same, into `out` (x's dtype and shape, contiguous, same device; may be x itself when x is
/// contiguous).
void fake_quantize_into(ConstTensorView x, const QuantSpec& spec, const QParams& qparams,
                        TensorView out, const ExecContext& ctx = {});

/// Min-max quantization of the whole tensor: range [min(x), max(x)] through compute_qparams.
/// spec.granularity is taken as kPerTensor. NaN / Inf in x: InvalidArgument.
QTensor quantize_per_tensor(ConstTensorView x, QuantSpec spec = {}, const ExecContext& ctx = {});

/// Min-max quantization with one (scale, zero_point) per index along `axis` (negative counts
/// from the end), e.g. axis 0 for the output channels of a weight.
QTensor quantize_per_channel(ConstTensorView x, int axis, QuantSpec spec = {},
                             const ExecContext& ctx = {});

/// Min-max quantization with one (scale, zero_point) per `group_size` consecutive elements along
/// `axis` (the reduction axis; GPTQ / AWQ / ggml Q8_0-style groups of 32, 64, 128).
QTensor quantize_per_group(ConstTensorView x, int axis, int64_t group_size, QuantSpec spec = {},
                           const ExecContext& ctx = {});

/// The min-max QParams of x at spec's granularity (per-tensor, per-channel or per-group min and
/// max, then compute_qparams). NaN / Inf in x: InvalidArgument "[op] ...".
QParams minmax_qparams(ConstTensorView x, const QuantSpec& spec, const ExecContext& ctx = {});

/// Error of an approximation `approx` of `x` (same shape, any float dtypes and devices),
/// accumulated in double on the host.
struct QuantError {
  double max_abs = 0;  ///< max |x - approx|
  double rms = 0;      ///< sqrt(mean((x - approx)^2))
  double rel_rms = 0;  ///< rms / sqrt(mean(x^2)) (0 when x is all zeros and the error is 0)
};

/// The error report of `approx` against `x` (e.g. dequantize(quantize(x)) against x).
QuantError quantization_error(ConstTensorView x, ConstTensorView approx,
                              const ExecContext& ctx = {});

// ---- save / load ----------------------------------------------------------------------------

/// Writes named QTensors to a safetensors file: tensors "<name>.codes", "<name>.scale",
/// "<name>.zero_point", and the spec and shape as JSON in the metadata key
/// "frugal.quant.<name>"; `metadata` is stored beside them (keys may not start with
/// "frugal."). Atomic like save_safetensors. Throws InvalidArgument for a bad name.
void save_qtensors(const std::string& path, const std::map<std::string, QTensor>& tensors,
                   const std::map<std::string, std::string>& metadata = {});

/// Reads what save_qtensors wrote (host tensors). Throws IoError "[load_qtensors] ..." for a file
/// that is not valid safetensors or whose quantization records are inconsistent.
std::map<std::string, QTensor> load_qtensors(
    const std::string& path, std::map<std::string, std::string>* metadata = nullptr);

/// One QTensor under the name "q".
void save_qtensor(const std::string& path, const QTensor& q);
/// The QTensor named "q" (IoError if missing).
QTensor load_qtensor(const std::string& path);

}  // namespace frugal::quant
