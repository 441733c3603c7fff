// libFuzzer target for the safetensors parser. Any input must either parse or be rejected with
// frugal::Error; any other exception, a crash or a sanitizer report is a bug. What parses must also
// serialize and parse back to the same tensors and metadata.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <vector>

#include "frugal/core/error.hpp"
#include "frugal/core/io.hpp"

namespace {

bool same(const frugal::Tensor& a, const frugal::Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && a.nbytes() == b.nbytes() &&
         (a.nbytes() == 0 ||
          std::memcmp(a.data_ptr(), b.data_ptr(), static_cast<std::size_t>(a.nbytes())) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::optional<frugal::SafetensorsFile> f;
  try {
    f = frugal::parse_safetensors(std::span<const uint8_t>(data, size));
  } catch (const frugal::Error&) {
    return 0;  // rejected: the expected outcome for almost everything the fuzzer makes
  }
  // Accepted input: the round trip must not throw (an escaping exception aborts) and must agree.
  const std::vector<uint8_t> again = frugal::serialize_safetensors(f->tensors, f->metadata);
  const frugal::SafetensorsFile g = frugal::parse_safetensors(again);
  if (g.metadata != f->metadata || g.tensors.size() != f->tensors.size()) __builtin_trap();
  for (const auto& [name, t] : f->tensors) {
    const auto it = g.tensors.find(name);
    if (it == g.tensors.end() || !same(t, it->second)) __builtin_trap();
  }
  return 0;
}
