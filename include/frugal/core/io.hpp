#pragma once
/// Reading and writing tensors in the safetensors format
/// (https://github.com/huggingface/safetensors): an 8-byte little-endian header length N, N bytes
/// of JSON header, then the tensor bytes. See docs/io.md for the validation rules, the atomic write
/// and how packed i4/u4 tensors are stored.
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "frugal/core/tensor.hpp"

namespace frugal {

/// Largest JSON header accepted on read (the reference implementation's limit), in bytes.
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

/// Reserved prefix of the metadata keys that record packed i4/u4 tensors (see docs/io.md).
inline constexpr std::string_view kSafetensorsPackedPrefix = "frugal.packed.";

/// The content of a safetensors file: named tensors and the string-to-string `__metadata__`.
struct SafetensorsFile {
  /// Tensors by name. Loaded tensors are contiguous CPU tensors that own their memory.
  std::map<std::string, Tensor> tensors;
  /// The `__metadata__` map (empty when the file has none).
  std::map<std::string, std::string> metadata;
};

/// Writes `tensors` and `metadata` to `path` atomically: the bytes go to a temporary file in the
/// same directory, which is fsynced and renamed over `path`; on failure `path` is left as it was.
/// Tensors may live on any device and have any strides (they are copied to contiguous host
/// memory one at a time). The file lays tensors out as the reference writer does (by dtype, widest
/// first, then by name), so every offset is a multiple of the element size. Packed i4/u4 tensors
/// are stored as U8 bytes plus a "frugal.packed.<name>" metadata record (docs/io.md).
/// Throws InvalidArgument for a bad name or undefined tensor, IoError when the file system fails.
void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

/// Writes `file.tensors` and `file.metadata` to `path` (same as the overload above).
void save_safetensors(const std::string& path, const SafetensorsFile& file);

/// Replaces the file at `path` with `bytes` atomically: a temporary file beside it, fsync, rename,
/// fsync of the directory. A reader sees the old file or the whole new one; on failure the old file
/// is untouched, the temporary is removed and IoError "[op] ..." names the path.
void write_file_atomic(const std::string& path, std::string_view bytes,
                       const char* op = "write_file_atomic");

/// The complete file image that save_safetensors writes, in memory.
std::vector<uint8_t> serialize_safetensors(const std::map<std::string, Tensor>& tensors,
                                           const std::map<std::string, std::string>& metadata = {});

/// Reads and validates the safetensors file at `path`. Throws IoError ("[load_safetensors] ...")
/// when the file cannot be read or is not a valid safetensors file.
SafetensorsFile load_safetensors(const std::string& path);

/// Validates and decodes a safetensors image held in memory. Throws IoError
/// ("[parse_safetensors] ...") for anything that is not a valid safetensors file.
SafetensorsFile parse_safetensors(std::span<const uint8_t> bytes);

}  // namespace frugal
