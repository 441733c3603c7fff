#pragma once
// Helpers of the distillation tests: the shared checks of tests/support/check.hpp, plus labels.
#include <vector>

#include "frugal/core.hpp"
#include "frugal/distill.hpp"
#include "support/check.hpp"

namespace frugal::distill::testing {
using frugal::testing::expect_error;
using frugal::testing::random_f64;
using frugal::testing::threads;
/// Central finite differences of a scalar function (see frugal::testing::numeric_grad_scalar).
inline Tensor numeric_grad(Tensor& t, const std::function<double()>& f, double h = 1e-5) {
  return frugal::testing::numeric_grad_scalar(t, f, h);
}

inline Tensor labels_of(std::vector<int64_t> v) {
  const auto n = static_cast<int64_t>(v.size());
  return Tensor::from_vector(v, {n});
}

}  // namespace frugal::distill::testing
