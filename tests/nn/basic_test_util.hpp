#pragma once
// Helpers of the basic nn layer tests: the shared checks of tests/support/check.hpp.
#include "frugal/core.hpp"
#include "frugal/nn.hpp"
#include "support/check.hpp"

namespace frugal::nn::testing {
using frugal::testing::dot;
using frugal::testing::expect_error;
using frugal::testing::numeric_grad;
using frugal::testing::numeric_grad_scalar;
using frugal::testing::random_f64;
using frugal::testing::same_bits;
using frugal::testing::threads;
}  // namespace frugal::nn::testing
