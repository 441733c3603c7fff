#pragma once
// Double-precision scalar reference of amp::gemm on the exactly decoded inputs, with a per-element
// error bound, shared by tests/amp/gemm_test.cpp and tests/amp/gemm_cuda.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>
#include <vector>

#include "frugal/amp/gemm.hpp"
#include "frugal/core/tensor.hpp"

namespace frugal::amp::testing {

struct Ref {
  std::vector<double> value;  // alpha * a_scale * b_scale * sum + beta * c0
  std::vector<double> bound;  // allowed |error| per element
};

// Unit roundoff of C's dtype (f32: 2^-24, bf16: 2^-9, f16: 2^-11).
inline double unit_roundoff(DType t) {
  return t == DType::kBF16  ? std::ldexp(1.0, -9)
         : t == DType::kF16 ? std::ldexp(1.0, -11)
                            : std::ldexp(1.0, -24);
}

// The scalar reference in double on the exactly decoded inputs (to(kF64) is exact for every input
// dtype). a: (B, M, K) or stored (B, K, M) when trans_a; b likewise; c0 (B, M, N) or empty.
// Bound: fp32 accumulation of K exact products errs by at most K * 2^-24 * sum |a b| (Higham's
// gamma_K, first order), times the folded scale; the scale multiply, the beta add and C's own
// rounding each add one unit roundoff of the result (doubled for slack).
// u_acc: unit roundoff of the accumulation (2^-24 for fp32 with round to nearest).
inline Ref reference(const Tensor& a, const Tensor& b, const std::vector<double>& c0, DType c_dtype,
                     const GemmOptions& o, double u_acc = 0x1p-24) {
  const bool batched = a.rank() == 3;
  const Tensor a3 = batched ? a : a.reshape({1, a.dim(0), a.dim(1)});
  const Tensor b3 = batched ? b : b.reshape({1, b.dim(0), b.dim(1)});
  const std::vector<double> av = a3.to_vector<double>(), bv = b3.to_vector<double>();
  const int64_t nb = a3.dim(0);
  const int64_t m = o.trans_a ? a3.dim(2) : a3.dim(1), k = o.trans_a ? a3.dim(1) : a3.dim(2);
  const int64_t n = o.trans_b ? b3.dim(1) : b3.dim(2);
  const double s = static_cast<double>(o.alpha) * o.a_scale * o.b_scale;
  const double u = u_acc, uc = unit_roundoff(c_dtype);
  Ref r;
  for (int64_t p = 0; p < nb; ++p) {
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double sum = 0, mag = 0;
        for (int64_t q = 0; q < k; ++q) {
          const double x = o.trans_a ? av[(p * k + q) * m + i] : av[(p * m + i) * k + q];
          const double y = o.trans_b ? bv[(p * n + j) * k + q] : bv[(p * k + q) * n + j];
          sum += x * y;
          mag += std::fabs(x * y);
        }
        const size_t idx = static_cast<size_t>((p * m + i) * n + j);
        const double bc = c0.empty() ? 0.0 : static_cast<double>(o.beta) * c0[idx];
        const double v = s * sum + bc;
        r.value.push_back(v);
        r.bound.push_back(k * u * std::fabs(s) * mag +
                          2 * (2 * u + uc) * (std::fabs(s * sum) + std::fabs(bc) + std::fabs(v)));
      }
    }
  }
  return r;
}

inline ::testing::AssertionResult matches(const Tensor& c, const Ref& r) {
  const std::vector<double> got = c.to_vector<double>();
  if (got.size() != r.value.size()) return ::testing::AssertionFailure() << "size differs";
  std::ostringstream os;
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(got[i] - r.value[i]);
    if (!(err <= r.bound[i])) {
      if (bad++ < 5) {
        os << "\n  [" << i << "] got " << got[i] << " want " << r.value[i] << " bound "
           << r.bound[i];
      }
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << bad << " of " << got.size() << " out of bound" << os.str();
}

}  // namespace frugal::amp::testing
