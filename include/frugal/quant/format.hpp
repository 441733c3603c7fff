#pragma once
/// The quantized storage formats as one constexpr traits table (in the spirit of ggml's
/// type_traits): how many bits a code has, how codes and scales are laid out in bytes, and the
/// linear QuantSpec each format stands for.
///
/// Element formats (int8 ... uint2) keep their scales and zero points beside the codes (a QTensor's
/// QParams), so a block is the smallest whole number of bytes: 1 element for 8 bits, 2 for 4 bits
/// (the i4/u4 nibble layout of frugal/core/packed.hpp), 4 for 2 bits (element 4k+j in bits 2j, 2j+1
/// of byte k). Group formats (q8_0, q4_0, ...) are self-contained blocks of `block_size` codes plus
/// one scale, symmetric and signed, as ggml's Q8_0 / Q4_0: x = d * q.
#include <array>
#include <cstdint>
#include <string_view>

#include "frugal/core/dtype.hpp"
#include "frugal/quant/qparams.hpp"

namespace frugal::quant {

/// Quantized formats.
enum class QFormat : uint8_t {
  kInt8,     ///< signed 8-bit codes [-128, 127]
  kUInt8,    ///< unsigned 8-bit codes [0, 255]
  kInt4,     ///< signed 4-bit codes [-8, 7], two per byte (DType::kI4)
  kUInt4,    ///< unsigned 4-bit codes [0, 15], two per byte (DType::kU4)
  kInt2,     ///< signed 2-bit codes [-2, 1], four per byte
  kUInt2,    ///< unsigned 2-bit codes [0, 3], four per byte
  kQ8_0,     ///< blocks of 32 int8 codes + one f16 scale (ggml Q8_0: 34 bytes)
  kQ4_0,     ///< blocks of 32 int4 codes + one f16 scale (ggml Q4_0: 18 bytes)
  kQ8_0F32,  ///< blocks of 32 int8 codes + one f32 scale (36 bytes)
  kQ4_0F32,  ///< blocks of 32 int4 codes + one f32 scale (20 bytes)
};

inline constexpr int kNumQFormats = 10;

/// Static facts about one quantized format.
struct QFormatTraits {
  QFormat format;
  std::string_view name;    ///< "int8", "q4_0", ...
  int bits;                 ///< bits per code
  bool is_signed;           ///< two's complement codes (else unsigned)
  int64_t block_size;       ///< elements per block
  int64_t bytes_per_block;  ///< bytes of one block, scale included for group formats
  int scale_bytes;          ///< bytes of the in-block scale (2: f16, 4: f32), 0 for element formats
  DType code_dtype;         ///< dtype of a QTensor's codes: i8, u8, i4, u4 (2-bit: u8, 4 per byte)

  /// Bytes per element, in bits, scale included (e.g. 4.5 for q4_0).
  constexpr double bits_per_element() const {
    return 8.0 * static_cast<double>(bytes_per_block) / static_cast<double>(block_size);
  }
  /// True for the self-contained group formats (one scale inside every block).
  constexpr bool is_group() const { return scale_bytes > 0; }
};

inline constexpr std::array<QFormatTraits, kNumQFormats> kQFormatTraits = {{
    {QFormat::kInt8, "int8", 8, true, 1, 1, 0, DType::kI8},
    {QFormat::kUInt8, "uint8", 8, false, 1, 1, 0, DType::kU8},
    {QFormat::kInt4, "int4", 4, true, 2, 1, 0, DType::kI4},
    {QFormat::kUInt4, "uint4", 4, false, 2, 1, 0, DType::kU4},
    {QFormat::kInt2, "int2", 2, true, 4, 1, 0, DType::kU8},
    {QFormat::kUInt2, "uint2", 2, false, 4, 1, 0, DType::kU8},
    {QFormat::kQ8_0, "q8_0", 8, true, 32, 32 + 2, 2, DType::kI8},
    {QFormat::kQ4_0, "q4_0", 4, true, 32, 16 + 2, 2, DType::kI4},
    {QFormat::kQ8_0F32, "q8_0_f32", 8, true, 32, 32 + 4, 4, DType::kI8},
    {QFormat::kQ4_0F32, "q4_0_f32", 4, true, 32, 16 + 4, 4, DType::kI4},
}};

/// Traits of `f`.
constexpr const QFormatTraits& format_traits(QFormat f) {
  return kQFormatTraits[static_cast<int>(f)];
}
constexpr std::string_view format_name(QFormat f) { return format_traits(f).name; }

/// Bytes that `n` elements take in format `f` (whole blocks; in-block scales included, the
/// separate QParams of element formats not).
constexpr int64_t format_nbytes(QFormat f, int64_t n) {
  const QFormatTraits& t = format_traits(f);
  return (n + t.block_size - 1) / t.block_size * t.bytes_per_block;
}

/// The linear QuantSpec that `f` stands for. Element formats: per tensor, symmetric, their
/// signedness. Group formats: symmetric signed, per group of block_size along `axis` (the
/// reduction axis, default the last).
constexpr QuantSpec format_spec(QFormat f, int axis = -1) {
  const QFormatTraits& t = format_traits(f);
  QuantSpec s;
  s.bits = t.bits;
  s.is_signed = t.is_signed;
  s.symmetric = true;
  if (t.is_group()) {
    s.granularity = Granularity::kPerGroup;
    s.axis = axis;
    s.group_size = t.block_size;
  }
  return s;
}

/// dtype of the codes of a linear spec with `bits`: i8/u8 for 5..8 bits, i4/u4 (two per byte) for
/// 3..4 bits, u8 holding four 2-bit codes per byte for 2 bits.
constexpr DType code_dtype(int bits, bool is_signed) {
  if (bits <= 2) return DType::kU8;
  if (bits <= 4) return is_signed ? DType::kI4 : DType::kU4;
  return is_signed ? DType::kI8 : DType::kU8;
}

/// Codes per storage byte of a linear spec with `bits`: 4, 2 or 1.
constexpr int codes_per_byte(int bits) { return bits <= 2 ? 4 : (bits <= 4 ? 2 : 1); }

}  // namespace frugal::quant
