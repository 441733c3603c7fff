#pragma once
// Float -> bf16 / f16 stores for the autocast host kernels (internal header). bf16 goes through
// float_to_bf16_bits, which is branchless and lets the surrounding loops vectorise; f16 through
// the generic Half(float).
#include <cstdint>
#include <type_traits>

#include "frugal/core/float_types.hpp"

namespace frugal::amp::detail {

/// float -> bf16, round to nearest even, overflow to Inf, NaN to the quiet NaN 0x7FC0 (sign
/// kept): BFloat16(float), whose conversion is branchless.
inline BFloat16 to_bf16_rne(float f) { return BFloat16::from_bits(float_to_bf16_bits(f)); }

/// A low-precision element from float: bf16 through to_bf16_rne, f16 through Half(float).
template <class L>
inline L to_low(float f) {
  if constexpr (std::is_same_v<L, BFloat16>) {
    return to_bf16_rne(f);
  } else {
    return L(f);
  }
}

}  // namespace frugal::amp::detail
