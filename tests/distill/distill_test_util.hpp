#pragma once
// Helpers of the distillation tests: error checks, random inputs and central finite differences
// in double.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "frugal/core.hpp"
#include "frugal/distill.hpp"
#include "support/tolerance.hpp"

namespace frugal::distill::testing {

/// Runs fn and expects an Error of `code` whose message starts with "[op]".
template <class Fn>
void expect_error(Fn&& fn, ErrorCode code, const std::string& op) {
  try {
    fn();
    ADD_FAILURE() << "no exception, expected " << error_code_name(code) << " from [" << op << "]";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_EQ(std::string(e.what()).rfind("[" + op + "]", 0), 0u) << e.what();
  }
}

/// A host f64 tensor of uniform values in [lo, hi).
inline Tensor random_f64(Shape shape, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  return frugal::testing::random_uniform(shape, seed, lo, hi).to(DType::kF64);
}

/// Central finite differences of the scalar f() with respect to every element of the host f64
/// tensor t (perturbed in place and restored). For smooth f the error is O(h^2 f''') +
/// O(eps_f64 / h): about 1e-10 at h = 1e-5.
inline Tensor numeric_grad(Tensor& t, const std::function<double()>& f, double h = 1e-5) {
  double* p = t.data<double>();
  std::vector<double> g(static_cast<std::size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double keep = p[i];
    p[i] = keep + h;
    const double lp = f();
    p[i] = keep - h;
    const double lm = f();
    p[i] = keep;
    g[i] = (lp - lm) / (2.0 * h);
  }
  return Tensor::from_vector(g, t.shape());
}

/// ExecContext with `n` CPU threads.
inline ExecContext threads(int n) {
  ExecContext c;
  c.num_threads = n;
  return c;
}

inline Tensor labels_of(std::vector<int64_t> v) {
  const auto n = static_cast<int64_t>(v.size());
  return Tensor::from_vector(v, {n});
}

}  // namespace frugal::distill::testing
