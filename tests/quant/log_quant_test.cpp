// Logarithmic quantization on the CPU: levels are exact powers of two, codes match a linear-scan
// reference, ties, NaN / Inf / zero, the error report, spec helpers and bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "frugal/core.hpp"
#include "frugal/quant.hpp"
#include "frugal/ref/quant.hpp"
#include "support/check.hpp"
#include "support/tolerance.hpp"

namespace frugal::quant {
namespace {

using testing::random_uniform;

using testing::expect_error;

LogQuantSpec spec_of(int bits, int e_min, int e_max, LogBase base = LogBase::kTwo) {
  LogQuantSpec s;
  s.bits = bits;
  s.e_min = e_min;
  s.e_max = e_max;
  s.base = base;
  return s;
}

TEST(LogQuant, LevelsAreExactPowersOfTwo) {
  const LogQuantSpec s = spec_of(8, -126, 0);
  for (int m = 1; m <= s.levels(); ++m) {
    const float v = log_level(s, m);
    int e = 0;
    EXPECT_EQ(std::frexp(v, &e), 0.5f) << "mantissa of level " << m;  // a power of two
    EXPECT_EQ(e - 1, s.e_min + m - 1);
  }
  // Base sqrt(2): even exponents are powers of two, odd ones float(sqrt 2) times a power of two.
  const LogQuantSpec r = spec_of(5, -6, 8, LogBase::kSqrt2);
  for (int m = 1; m <= r.levels(); ++m) {
    const int e = r.e_min + m - 1;
    if (e % 2 == 0) {
      EXPECT_EQ(log_level(r, m), std::ldexp(1.0f, e / 2)) << "e " << e;
    } else {
      EXPECT_EQ(log_level(r, m), static_cast<float>(std::pow(2.0, e / 2.0))) << "e " << e;
    }
  }
}

TEST(LogQuant, CodesMatchReference) {
  for (LogBase base : {LogBase::kTwo, LogBase::kSqrt2}) {
    for (int bits : {3, 4, 6, 8}) {
      const int levels = (1 << (bits - 1)) - 1;
      const LogQuantSpec s = spec_of(bits, 2 - levels, 1, base);
      for (DType t : {DType::kF32, DType::kF64, DType::kF16, DType::kBF16}) {
        // Values spread over many octaves, both signs.
        Tensor u = random_uniform({3000}, 1 + bits, -30.f, 3.f);
        std::vector<float> v = u.to_vector<float>();
        for (std::size_t i = 0; i < v.size(); ++i) v[i] = (i % 2 ? -1.f : 1.f) * std::exp2(v[i]);
        const Tensor x = Tensor::from_vector(v, {3000}).to(t);
        const LogQTensor q = log_quantize(x, s);
        const auto codes = q.codes.to_vector<int32_t>();
        const auto xv = x.to_vector<double>();
        for (std::size_t i = 0; i < xv.size(); ++i) {
          ASSERT_EQ(codes[i], ref::log_code(xv[i], s))
              << "x " << xv[i] << " bits " << bits << " base " << static_cast<int>(base);
        }
        // Dequantized magnitudes are levels (or zero) with the sign of x.
        const auto d = log_dequantize(q).to_vector<double>();
        const auto lv = ref::log_levels(s);
        for (std::size_t i = 0; i < d.size(); ++i) {
          if (d[i] == 0) continue;
          EXPECT_EQ(d[i] < 0, xv[i] < 0);
          EXPECT_NE(std::find(lv.begin(), lv.end(), std::fabs(d[i])), lv.end());
        }
      }
    }
  }
}

TEST(LogQuant, TiesZeroNanInf) {
  const LogQuantSpec s = spec_of(4, -2, 1);  // levels 0.25, 0.5, 1, 2
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const Tensor x = Tensor::from_vector(
      std::vector<float>{1.5f, -0.75f, 0.125f, 0.1249f, 0.f, nan, inf, -inf, 100.f, 1.49f}, {10});
  const auto d = log_dequantize(log_quantize(x, s)).to_vector<float>();
  EXPECT_EQ(d, (std::vector<float>{2.f, -1.f, 0.25f, 0.f, 0.f, 0.f, 2.f, -2.f, 2.f, 1.f}));
  EXPECT_EQ(log_quantize(x, s).codes.to_vector<int32_t>()[5], 0);  // NaN -> the zero code
}

TEST(LogQuant, ErrorReport) {
  const LogQuantSpec s = spec_of(4, -2, 1);
  const Tensor x = Tensor::from_vector(std::vector<float>{3.f, -0.75f}, {2});
  // 3 -> 2 (error 1), -0.75 -> -1 (a tie, to the larger magnitude; error 0.25).
  const QuantError e = log_quant_error(x, log_quantize(x, s));
  EXPECT_DOUBLE_EQ(e.max_abs, 1.0);
  EXPECT_DOUBLE_EQ(e.rms, std::sqrt((1.0 + 0.0625) / 2));
  EXPECT_DOUBLE_EQ(e.rel_rms, std::sqrt(1.0625 / (9 + 0.5625)));
}

TEST(LogQuant, SpecForRange) {
  const LogQuantSpec a = log_spec_for_range(3.0, 4);
  EXPECT_EQ(a.e_max, 2);  // 4 >= 3 > 2
  EXPECT_EQ(a.e_min, 2 - 7 + 1);
  EXPECT_EQ(log_spec_for_range(4.0, 4).e_max, 2);  // exactly a level
  const LogQuantSpec b = log_spec_for_range(3.0, 4, LogBase::kSqrt2);
  EXPECT_EQ(b.e_max, 4);                                // 2^(4/2) = 4 >= 3 > 2^(3/2) = 2.83
  EXPECT_EQ(log_spec_for_range(1e-30, 8).e_min, -126);  // clamped to normal floats
}

TEST(LogQuant, BadInput) {
  const Tensor x = random_uniform({4}, 9);
  const char* op = "log_quantize";
  expect_error([&] { log_quantize(x, spec_of(1, 0, 0)); }, ErrorCode::kInvalidArgument, op);
  expect_error([&] { log_quantize(x, spec_of(9, 0, 0)); }, ErrorCode::kInvalidArgument, op);
  expect_error([&] { log_quantize(x, spec_of(4, 0, 7)); }, ErrorCode::kInvalidArgument, op);
  expect_error([&] { log_quantize(x, spec_of(4, 1, 0)); }, ErrorCode::kInvalidArgument, op);
  expect_error([&] { log_quantize(x, spec_of(8, -127, -120)); }, ErrorCode::kInvalidArgument, op);
  expect_error([&] { log_quantize(x, spec_of(8, 120, 128)); }, ErrorCode::kInvalidArgument, op);
  expect_error([&] { log_quantize(Tensor::zeros({0}), spec_of(4, 0, 1)); },
               ErrorCode::kInvalidArgument, op);
  expect_error([&] { log_quantize(x.to(DType::kI32), spec_of(4, 0, 1)); },
               ErrorCode::kInvalidArgument, op);
  expect_error([&] { log_spec_for_range(0.0, 4); }, ErrorCode::kInvalidArgument,
               "log_spec_for_range");
  LogQTensor q = log_quantize(x, spec_of(4, 0, 1));
  q.codes = q.codes.to(DType::kI8);
  expect_error([&] { log_dequantize(q); }, ErrorCode::kInvalidArgument, "log_dequantize");
}

}  // namespace
}  // namespace frugal::quant
