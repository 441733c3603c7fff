#pragma once
#include <cstdint>
#include <string>

namespace frugal {

enum class DeviceKind : uint8_t { kCpu, kCuda };

/// Where a tensor's memory lives.
struct Device {
  DeviceKind kind = DeviceKind::kCpu;
  int index = 0;

  static constexpr Device cpu() { return {DeviceKind::kCpu, 0}; }
  static constexpr Device cuda(int i = 0) { return {DeviceKind::kCuda, i}; }
  constexpr bool is_cpu() const { return kind == DeviceKind::kCpu; }
  constexpr bool is_cuda() const { return kind == DeviceKind::kCuda; }
  friend constexpr bool operator==(Device a, Device b) = default;
  /// "cpu" or "cuda:0".
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
};

/// True when frugal was built with CUDA and a CUDA device is usable now (never throws).
bool cuda_available();
/// Number of usable CUDA devices; 0 without CUDA, without a driver or on any CUDA error.
int cuda_device_count();

}  // namespace frugal
