#pragma once
// GPU test helpers: every CUDA test starts with FRUGAL_REQUIRE_GPU(), which skips the test when no
// CUDA device is usable (not compiled, no driver, any error from cudaGetDeviceCount).
#include <gtest/gtest.h>

#include "frugal/core/device.hpp"

#define FRUGAL_REQUIRE_GPU()                                               \
  do {                                                                     \
    if (!::frugal::cuda_available()) GTEST_SKIP() << "no usable CUDA device"; \
  } while (0)
