#pragma once
// Element conversions between every element type, host and device. Internal header.
// Floats go through float (or double when either side is 64-bit or a wide integer).
// Float -> integer rounds half to even and saturates to the integer range; NaN becomes 0.
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "frugal/core/config.hpp"
#include "frugal/core/float_types.hpp"

namespace frugal::detail {

template <class T>
inline constexpr bool is_low_float_v =
    std::is_same_v<T, Half> || std::is_same_v<T, BFloat16> || std::is_same_v<T, Float8E4M3> ||
    std::is_same_v<T, Float8E5M2>;

/// Any element as double.
template <class T>
FRUGAL_INLINE double to_double(T v) {
  if constexpr (is_low_float_v<T>) {
    return static_cast<double>(static_cast<float>(v));
  } else {
    return static_cast<double>(v);
  }
}

/// Integer from a floating value: round half to even, saturate, NaN -> 0.
template <class I>
FRUGAL_INLINE I saturate_int(double x) {
  if (x != x) return I(0);
  constexpr double lo = static_cast<double>(std::numeric_limits<I>::lowest());
  constexpr double hi = static_cast<double>(std::numeric_limits<I>::max());
  const double r = std::nearbyint(x);  // default rounding mode: half to even
  if (r <= lo) return std::numeric_limits<I>::lowest();
  if (r >= hi) return std::numeric_limits<I>::max();
  return static_cast<I>(r);
}

/// Any element from double.
template <class T>
FRUGAL_INLINE T from_double(double x) {
  if constexpr (is_low_float_v<T>) {
    return T(static_cast<float>(x));
  } else if constexpr (std::is_same_v<T, bool>) {
    return x != 0.0;
  } else if constexpr (std::is_floating_point_v<T>) {
    return static_cast<T>(x);
  } else {
    return saturate_int<T>(x);
  }
}

/// Converts one element of type S to type D.
template <class D, class S>
FRUGAL_INLINE D convert(S v) {
  if constexpr (std::is_same_v<D, S>) {
    return v;
  } else if constexpr (std::is_same_v<S, float> && is_low_float_v<D>) {
    return D(v);
  } else if constexpr (is_low_float_v<S> && std::is_same_v<D, float>) {
    return static_cast<float>(v);
  } else {
    return from_double<D>(to_double(v));
  }
}

}  // namespace frugal::detail
