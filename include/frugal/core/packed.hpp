#pragma once
/// 4-bit integers packed two per byte: element 2k in the low nibble of byte k, element 2k+1 in the
/// high nibble (the layout of DType::kI4 / kU4, as in ggml's Q4 blocks and GPTQ/AWQ int4 buffers).
/// i4 is a two's complement nibble in [-8, 7]; u4 is [0, 15].
#include <cstdint>

#include "frugal/core/config.hpp"

namespace frugal {

/// Packs two i4 values into one byte (`lo` in bits 0-3, `hi` in bits 4-7). Values are expected in
/// [-8, 7]; anything else is reduced modulo 16 (its low four bits are kept), callers clamp first.
FRUGAL_INLINE constexpr uint8_t pack_i4(int8_t lo, int8_t hi) {
  return static_cast<uint8_t>((static_cast<uint8_t>(lo) & 0x0Fu) |
                              ((static_cast<uint8_t>(hi) & 0x0Fu) << 4));
}

/// The i4 value in the low nibble of `b`, sign-extended to [-8, 7].
FRUGAL_INLINE constexpr int8_t unpack_i4_lo(uint8_t b) {
  // (n ^ 8) - 8 sign-extends a 4-bit two's complement value without shifting negative numbers.
  return static_cast<int8_t>(static_cast<int>((b & 0x0Fu) ^ 0x08u) - 8);
}

/// The i4 value in the high nibble of `b`, sign-extended to [-8, 7].
FRUGAL_INLINE constexpr int8_t unpack_i4_hi(uint8_t b) {
  return static_cast<int8_t>(static_cast<int>((b >> 4) ^ 0x08u) - 8);
}

/// Packs two u4 values into one byte (`lo` in bits 0-3, `hi` in bits 4-7). Values are expected in
/// [0, 15]; anything else keeps only its low four bits.
FRUGAL_INLINE constexpr uint8_t pack_u4(uint8_t lo, uint8_t hi) {
  return static_cast<uint8_t>((lo & 0x0Fu) | ((hi & 0x0Fu) << 4));
}

/// The u4 value in the low nibble of `b`, in [0, 15].
FRUGAL_INLINE constexpr uint8_t unpack_u4_lo(uint8_t b) { return static_cast<uint8_t>(b & 0x0Fu); }

/// The u4 value in the high nibble of `b`, in [0, 15].
FRUGAL_INLINE constexpr uint8_t unpack_u4_hi(uint8_t b) { return static_cast<uint8_t>(b >> 4); }

/// Packs `n` i4 values from `src` (n int8 in [-8, 7]) into `dst` ((n + 1) / 2 bytes). For odd `n`
/// the high nibble of the last byte is 0.
inline void pack_i4(const int8_t* src, uint8_t* dst, int64_t n) {
  const int64_t pairs = n / 2;
  for (int64_t k = 0; k < pairs; ++k) dst[k] = pack_i4(src[2 * k], src[2 * k + 1]);
  if (n % 2 != 0) dst[pairs] = pack_i4(src[n - 1], 0);
}

/// Unpacks `n` i4 values from `src` ((n + 1) / 2 bytes) into `dst` (n int8). For odd `n` the high
/// nibble of the last byte is ignored.
inline void unpack_i4(const uint8_t* src, int8_t* dst, int64_t n) {
  const int64_t pairs = n / 2;
  for (int64_t k = 0; k < pairs; ++k) {
    dst[2 * k] = unpack_i4_lo(src[k]);
    dst[2 * k + 1] = unpack_i4_hi(src[k]);
  }
  if (n % 2 != 0) dst[n - 1] = unpack_i4_lo(src[pairs]);
}

/// Packs `n` u4 values from `src` (n uint8 in [0, 15]) into `dst` ((n + 1) / 2 bytes). For odd `n`
/// the high nibble of the last byte is 0.
inline void pack_u4(const uint8_t* src, uint8_t* dst, int64_t n) {
  const int64_t pairs = n / 2;
  for (int64_t k = 0; k < pairs; ++k) dst[k] = pack_u4(src[2 * k], src[2 * k + 1]);
  if (n % 2 != 0) dst[pairs] = pack_u4(src[n - 1], 0);
}

/// Unpacks `n` u4 values from `src` ((n + 1) / 2 bytes) into `dst` (n uint8). For odd `n` the high
/// nibble of the last byte is ignored.
inline void unpack_u4(const uint8_t* src, uint8_t* dst, int64_t n) {
  const int64_t pairs = n / 2;
  for (int64_t k = 0; k < pairs; ++k) {
    dst[2 * k] = unpack_u4_lo(src[k]);
    dst[2 * k + 1] = unpack_u4_hi(src[k]);
  }
  if (n % 2 != 0) dst[n - 1] = unpack_u4_lo(src[pairs]);
}

}  // namespace frugal
