#pragma once
#include <array>
#include <cstdint>
#include <string_view>

#include "frugal/core/config.hpp"
#include "frugal/core/float_types.hpp"

namespace frugal {

/// Element types. i4/u4 are packed two per byte (element 2k in the low nibble of byte k).
enum class DType : uint8_t {
  kF32,
  kF64,
  kF16,
  kBF16,
  kF8E4M3,
  kF8E5M2,
  kI8,
  kU8,
  kI4,
  kU4,
  kI32,
  kI64,
  kBool,
};

inline constexpr int kNumDTypes = 13;

/// Static facts about one dtype (in the spirit of ggml's type_traits).
struct DTypeTraits {
  DType dtype;
  std::string_view name;         ///< short name, as in "f32", "bf16", "f8_e4m3", "i4"
  std::string_view safetensors;  ///< safetensors dtype string ("F32", "BF16", "F8_E4M3", ...), "" if none
  int bits;                      ///< bits per element
  bool is_float;
  bool is_signed;
  int per_byte;  ///< elements per byte for packed sub-byte types (2 for i4/u4), 0 otherwise
};

inline constexpr std::array<DTypeTraits, kNumDTypes> kDTypeTraits = {{
    {DType::kF32, "f32", "F32", 32, true, true, 0},
    {DType::kF64, "f64", "F64", 64, true, true, 0},
    {DType::kF16, "f16", "F16", 16, true, true, 0},
    {DType::kBF16, "bf16", "BF16", 16, true, true, 0},
    {DType::kF8E4M3, "f8_e4m3", "F8_E4M3", 8, true, true, 0},
    {DType::kF8E5M2, "f8_e5m2", "F8_E5M2", 8, true, true, 0},
    {DType::kI8, "i8", "I8", 8, false, true, 0},
    {DType::kU8, "u8", "U8", 8, false, false, 0},
    {DType::kI4, "i4", "", 4, false, true, 2},
    {DType::kU4, "u4", "", 4, false, false, 2},
    {DType::kI32, "i32", "I32", 32, false, true, 0},
    {DType::kI64, "i64", "I64", 64, false, true, 0},
    {DType::kBool, "bool", "BOOL", 8, false, false, 0},
}};

/// Traits of `t`.
constexpr const DTypeTraits& traits(DType t) { return kDTypeTraits[static_cast<int>(t)]; }
constexpr std::string_view dtype_name(DType t) { return traits(t).name; }
constexpr int dtype_bits(DType t) { return traits(t).bits; }
constexpr bool is_float(DType t) { return traits(t).is_float; }
constexpr bool is_packed(DType t) { return traits(t).per_byte > 1; }
/// Bytes needed to store `n` elements of `t` (packed types round up to a whole byte).
constexpr int64_t dtype_nbytes(DType t, int64_t n) { return (n * traits(t).bits + 7) / 8; }

/// The C++ element type of a (non-packed) dtype, and back.
template <class T>
struct dtype_of;
template <>
struct dtype_of<float> {
  static constexpr DType value = DType::kF32;
};
template <>
struct dtype_of<double> {
  static constexpr DType value = DType::kF64;
};
template <>
struct dtype_of<Half> {
  static constexpr DType value = DType::kF16;
};
template <>
struct dtype_of<BFloat16> {
  static constexpr DType value = DType::kBF16;
};
template <>
struct dtype_of<Float8E4M3> {
  static constexpr DType value = DType::kF8E4M3;
};
template <>
struct dtype_of<Float8E5M2> {
  static constexpr DType value = DType::kF8E5M2;
};
template <>
struct dtype_of<int8_t> {
  static constexpr DType value = DType::kI8;
};
template <>
struct dtype_of<uint8_t> {
  static constexpr DType value = DType::kU8;
};
template <>
struct dtype_of<int32_t> {
  static constexpr DType value = DType::kI32;
};
template <>
struct dtype_of<int64_t> {
  static constexpr DType value = DType::kI64;
};
template <>
struct dtype_of<bool> {
  static constexpr DType value = DType::kBool;
};
template <class T>
inline constexpr DType dtype_of_v = dtype_of<T>::value;

}  // namespace frugal
