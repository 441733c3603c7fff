#pragma once
// Helpers of the autocast convolution tests (autocast_conv_test.cpp, autocast_conv_cuda.cpp):
// the fp32 summation bound. Products of bf16 / f16 values are exact in fp32, so a convolution of
// rounded operands with fp32 accumulation differs from the exact (double) value only by the
// summation of K terms, in any order: |sum_fp32 - sum| <= K u sum |terms| (Higham's gamma_K,
// u = 2^-24), where sum |terms| is the reference convolution of the absolute values.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "frugal/core.hpp"

namespace frugal::amp {

constexpr double kU = 1.0 / (1 << 24);  // fp32 unit roundoff

/// x rounded to `low` (nearest even) and widened to f64: the operand the convolution sees.
inline Tensor rounded(const Tensor& x, DType low) { return x.to(low).to(DType::kF64); }

inline Tensor abs_of(const Tensor& x) {
  std::vector<double> v = x.to_vector<double>();
  for (double& e : v) e = std::fabs(e);
  return Tensor::from_vector(v, x.shape());
}

inline Tensor plus(const Tensor& x, double c) {
  std::vector<double> v = x.to_vector<double>();
  for (double& e : v) e += c;
  return Tensor::from_vector(v, x.shape());
}

/// Every |got - want| <= k u |terms| + extra (the fp32 summation bound above).
inline ::testing::AssertionResult within_sum_bound(const Tensor& got, const Tensor& want,
                                                   const Tensor& abs_terms, double k,
                                                   double extra = 0.0) {
  if (got.shape() != want.shape()) {
    return ::testing::AssertionFailure() << "shape " << got.shape() << " vs " << want.shape();
  }
  const auto g = got.to_vector<double>(), w = want.to_vector<double>();
  const auto a = abs_terms.to_vector<double>();
  for (std::size_t i = 0; i < g.size(); ++i) {
    const double bound = k * kU * a[i] + extra;
    if (!(std::fabs(g[i] - w[i]) <= bound)) {
      return ::testing::AssertionFailure()
             << "element " << i << ": got " << g[i] << ", want " << w[i] << ", |diff| "
             << std::fabs(g[i] - w[i]) << " > bound " << bound;
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace frugal::amp
