#pragma once
// Checks shared by the tests of every module: error expectations, random f64 inputs, central finite
// differences in double, thread-count contexts, host copies and bit-exact comparison.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "frugal/core/error.hpp"
#include "frugal/core/tensor.hpp"
#include "support/tolerance.hpp"

namespace frugal::testing {

/// Runs fn and expects an Error of `code` whose message starts with "[op]" and, when `contains`
/// is not empty, also contains `contains` (a path, a parameter name, a reason).
template <class Fn>
void expect_error(Fn&& fn, ErrorCode code, const std::string& op,
                  const std::string& contains = {}) {
  try {
    fn();
    ADD_FAILURE() << "no exception, expected " << error_code_name(code) << " from [" << op << "]";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_EQ(std::string(e.what()).rfind("[" + op + "]", 0), 0u) << e.what();
    if (!contains.empty()) {
      EXPECT_NE(std::string(e.what()).find(contains), std::string::npos)
          << "message: " << e.what() << "\nexpected to contain: " << contains;
    }
  }
}

/// A host f64 tensor of uniform values in [lo, hi) (std::mt19937 with `seed`).
inline Tensor random_f64(Shape shape, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  return frugal::testing::random_uniform(shape, seed, lo, hi).to(DType::kF64);
}

/// sum(a * b) of two host tensors, in double.
inline double dot(const Tensor& a, const Tensor& b) {
  const auto av = a.to_vector<double>();
  const auto bv = b.to_vector<double>();
  double s = 0.0;
  for (std::size_t i = 0; i < av.size(); ++i) s += av[i] * bv[i];
  return s;
}

/// Central finite differences of L = sum(f() * w) with respect to every element of `t` (a host
/// f64 tensor that f reads; it is perturbed in place and restored). Step h: for smooth f the
/// error is O(h^2 f''') + O(eps_f64 / h), about 1e-10 at h = 1e-5.
inline Tensor numeric_grad(Tensor& t, const std::function<Tensor()>& f, const Tensor& w,
                           double h = 1e-5) {
  double* p = t.data<double>();
  std::vector<double> g(static_cast<std::size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double keep = p[i];
    p[i] = keep + h;
    const double lp = dot(f(), w);
    p[i] = keep - h;
    const double lm = dot(f(), w);
    p[i] = keep;
    g[i] = (lp - lm) / (2.0 * h);
  }
  return Tensor::from_vector(g, t.shape());
}

/// Same for a scalar function L = f().
inline Tensor numeric_grad_scalar(Tensor& t, const std::function<double()>& f, double h = 1e-5) {
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

/// ExecContext with `threads` CPU threads.
inline ExecContext threads(int n) {
  ExecContext c;
  c.num_threads = n;
  return c;
}

/// The values of t (any device, dtype or layout) on the host as double, in row-major order.
inline std::vector<double> host_f64(const Tensor& t) {
  return t.to(Device::cpu()).to(DType::kF64).contiguous().to_vector<double>();
}

/// "<prefix><i>", e.g. "g7" (built by insert: GCC 12 warns -Wrestrict, falsely, on
/// "g" + std::to_string(i), bug 105329).
inline std::string numbered(char prefix, int i) {
  std::string name = std::to_string(i);
  name.insert(name.begin(), prefix);
  return name;
}

/// Bit-exact equality of two host tensors of one dtype.
inline bool same_bits(const Tensor& a, const Tensor& b) {
  if (!(a.shape() == b.shape()) || a.dtype() != b.dtype()) return false;
  const Tensor ac = a.contiguous(), bc = b.contiguous();
  return std::memcmp(ac.data_ptr(), bc.data_ptr(), static_cast<std::size_t>(ac.nbytes())) == 0;
}

}  // namespace frugal::testing
