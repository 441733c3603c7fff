#pragma once
// Tolerance and parity helpers: compare tensors element by element against a reference, reporting
// the first mismatches with their index. Every caller writes its tolerance with a one-line reason.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <sstream>
#include <vector>

#include "frugal/core/tensor.hpp"

namespace frugal::testing {

/// |a - b| <= atol + rtol * |b| for every element (NaN equals NaN); b is the reference.
inline ::testing::AssertionResult all_close(const std::vector<double>& a,
                                            const std::vector<double>& b, double rtol,
                                            double atol) {
  if (a.size() != b.size()) {
    return ::testing::AssertionFailure() << "sizes differ: " << a.size() << " vs " << b.size();
  }
  std::ostringstream os;
  int bad = 0;
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) && std::isnan(b[i])) continue;
    const double err = std::fabs(a[i] - b[i]);
    if (!(err <= atol + rtol * std::fabs(b[i]))) {
      if (bad < 5) os << "\n  [" << i << "] got " << a[i] << " want " << b[i] << " (err " << err << ")";
      ++bad;
      worst = std::max(worst, err);
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << a.size()
                                       << " elements out of tolerance (rtol " << rtol << ", atol "
                                       << atol << "), worst error " << worst << os.str();
}

/// Tensor overload: both are read back to the host as double.
inline ::testing::AssertionResult all_close(const Tensor& a, const Tensor& b, double rtol,
                                            double atol) {
  if (!(a.shape() == b.shape())) {
    std::ostringstream os;
    os << "shapes differ: " << a.shape() << " vs " << b.shape();
    return ::testing::AssertionFailure() << os.str();
  }
  return all_close(a.to_vector<double>(), b.to_vector<double>(), rtol, atol);
}

/// Exact equality, for integer outputs (codes, masks, indices).
inline ::testing::AssertionResult all_equal(const Tensor& a, const Tensor& b) {
  return all_close(a, b, 0.0, 0.0);
}

/// A deterministic tensor of uniform values in [lo, hi) (std::mt19937 with `seed`), host f32.
Tensor random_uniform(Shape shape, uint32_t seed, float lo = -1.f, float hi = 1.f);

}  // namespace frugal::testing
