#pragma once
/// Logarithmic (power-of-two) quantization: every nonzero level is +-base^e for an integer
/// exponent e in [e_min, e_max], base 2 or sqrt(2) (Miyashita, Lee and Murmann 2016,
/// "Convolutional Neural Networks using Logarithmic Data Representation"), plus an exact zero.
///
/// Code layout (u8, one code per byte, x's shape): bit bits-1 is the sign, the low bits-1 bits
/// are the level index m: m = 0 is zero, m = k >= 1 is base^(e_min + k - 1). Hence
/// e_max - e_min + 1 <= 2^(bits-1) - 1 levels per sign. Levels are floats: 2^e exactly
/// (ldexp), and for base sqrt(2) and odd e, float(sqrt 2) * 2^((e-1)/2).
///
/// Rounding is to the nearest level by value (not in the log domain), ties to the larger
/// magnitude: |x| below half the smallest level gives zero, |x| at or above the largest level
/// gives the largest level. Comparisons run in double against the float levels, so CPU and CUDA
/// codes are identical. NaN -> zero code; +-Inf -> +-largest level.
#include <cstdint>

#include "frugal/core/tensor.hpp"
#include "frugal/quant/quantize.hpp"

namespace frugal::quant {

/// The base of the levels.
enum class LogBase : uint8_t {
  kTwo,    ///< levels 2^e
  kSqrt2,  ///< levels 2^(e/2): twice as dense, still a shift plus one multiply
};

/// A logarithmic quantization format.
struct LogQuantSpec {
  int bits = 4;                  ///< 2..8: sign bit + (bits - 1) level-index bits
  int e_min = -7;                ///< smallest exponent (level base^e_min)
  int e_max = 0;                 ///< largest exponent (level base^e_max)
  LogBase base = LogBase::kTwo;  ///< 2 or sqrt(2)

  /// Number of nonzero magnitudes, e_max - e_min + 1.
  int levels() const { return e_max - e_min + 1; }
};

/// Smallest / largest exponent a spec may use, so every level is a normal float:
/// base 2: [-126, 127]; base sqrt(2): [-252, 255].
int log_exponent_min(LogBase base);
int log_exponent_max(LogBase base);

/// A spec whose largest level is the nearest level at or above abs_max (so nothing large is
/// clipped) and that uses all 2^(bits-1) - 1 levels below it, clamped to the valid exponents.
/// abs_max must be finite and > 0.
LogQuantSpec log_spec_for_range(double abs_max, int bits, LogBase base = LogBase::kTwo);

/// A log-quantized tensor.
struct LogQTensor {
  Tensor codes;  ///< u8, x's shape
  LogQuantSpec spec;
  Shape shape;
};

/// The value of level index m (1 ..= spec.levels()) as a float: base^(e_min + m - 1).
float log_level(const LogQuantSpec& spec, int m);

/// Quantizes x (f32, f64, f16, bf16; any strides; CPU or CUDA). Throws InvalidArgument
/// "[log_quantize] ..." for bits outside 2..8, an exponent range that is empty, outside the
/// valid exponents or with more levels than the bits hold, an empty x or another dtype.
LogQTensor log_quantize(ConstTensorView x, const LogQuantSpec& spec, const ExecContext& ctx = {});

/// The f32 values of the codes, q.shape, on q's device.
Tensor log_dequantize(const LogQTensor& q, const ExecContext& ctx = {});

/// Error of log_dequantize(q) against x (see quantization_error).
QuantError log_quant_error(ConstTensorView x, const LogQTensor& q, const ExecContext& ctx = {});

}  // namespace frugal::quant
