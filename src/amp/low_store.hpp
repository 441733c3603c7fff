#pragma once
// Branchless float -> bf16 / f16 stores for the autocast host kernels (internal header). The
// generic conversion of float_types.hpp handles every format through one routine and keeps the
// surrounding loops from vectorizing; these give the same bits (tests compare them).
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "frugal/core/float_types.hpp"

namespace frugal::amp::detail {

/// float -> bf16, round to nearest even, overflow to Inf, NaN to the quiet NaN 0x7FC0 (sign
/// kept): bit-identical to BFloat16(float).
inline BFloat16 to_bf16_rne(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  if ((u & 0x7FFFFFFFu) > 0x7F800000u)
    return BFloat16::from_bits(static_cast<uint16_t>((u >> 16) | 0x7FC0u));
  u += 0x7FFFu + ((u >> 16) & 1u);
  return BFloat16::from_bits(static_cast<uint16_t>(u >> 16));
}

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
