#include "frugal/core/device.hpp"

#include "cu_ops.hpp"

namespace frugal {

int cuda_device_count() {
  // Any failure (no driver, insufficient driver, not compiled) means no usable device.
  try {
    return cu::device_count();
  } catch (const Error&) {
    return 0;
  }
}

bool cuda_available() { return cuda_device_count() > 0; }

}  // namespace frugal
