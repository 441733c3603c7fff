// Linear quantization on the CPU: codes bit-identical to the scalar reference
// (frugal/ref/quant.hpp) for every bit width, signedness, range, granularity and dtype; ties;
// dequantization error; stochastic rounding; the NaN / Inf policy; compute_qparams against
// PyTorch's formulas; the format traits; bad input.
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

using testing::all_close;
using testing::random_uniform;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

using testing::expect_error;

QParams params(std::vector<float> s, std::vector<int32_t> z, Shape shape) {
  return {Tensor::from_vector(s, shape), Tensor::from_vector(z, shape)};
}

QuantSpec make_spec(int bits, bool is_signed, bool symmetric, bool narrow = false) {
  QuantSpec s;
  s.bits = bits;
  s.is_signed = is_signed;
  s.symmetric = symmetric;
  s.narrow_range = narrow;
  return s;
}

// ---- formats ------------------------------------------------------------------------------------

TEST(QuantFormat, TraitsTable) {
  for (int i = 0; i < kNumQFormats; ++i) {
    EXPECT_EQ(static_cast<int>(kQFormatTraits[i].format), i) << "table order";
  }
  static_assert(format_traits(QFormat::kQ4_0).bits_per_element() == 4.5);  // ggml Q4_0: 18 B / 32
  static_assert(format_traits(QFormat::kQ8_0).bits_per_element() == 8.5);  // ggml Q8_0: 34 B / 32
  static_assert(format_nbytes(QFormat::kInt4, 7) == 4);
  static_assert(format_nbytes(QFormat::kInt2, 9) == 3);
  static_assert(format_nbytes(QFormat::kQ4_0, 64) == 36);
  EXPECT_EQ(format_name(QFormat::kUInt2), "uint2");
  const QuantSpec q4 = format_spec(QFormat::kQ4_0, 1);
  EXPECT_EQ(q4.bits, 4);
  EXPECT_EQ(q4.granularity, Granularity::kPerGroup);
  EXPECT_EQ(q4.group_size, 32);
  EXPECT_EQ(q4.axis, 1);
  EXPECT_EQ(code_dtype(2, true), DType::kU8);
  EXPECT_EQ(code_dtype(3, true), DType::kI4);
  EXPECT_EQ(code_dtype(4, false), DType::kU4);
  EXPECT_EQ(code_dtype(7, false), DType::kU8);
  EXPECT_EQ(code_dtype(8, true), DType::kI8);
  for (const auto& t : kQFormatTraits) EXPECT_EQ(t.code_dtype, code_dtype(t.bits, t.is_signed));
}

// ---- compute_qparams
// ------------------------------------------------------------------------------

// Expected values written from torch.ao.quantization.observer._calculate_qparams.
TEST(ComputeQParams, MatchesPyTorchFormulas) {
  const Tensor mn = Tensor::from_vector(std::vector<float>{-1.f, 0.5f, -3.f, 0.f}, {4});
  const Tensor mx = Tensor::from_vector(std::vector<float>{2.f, 4.f, -1.f, 0.f}, {4});
  {  // symmetric int8: scale = max(|min|, |max|) / 127.5, zero point 0
    const QParams p = compute_qparams(mn, mx, make_spec(8, true, true));
    const auto s = p.scale.to_vector<float>();
    EXPECT_EQ(s[0], 2.f / 127.5f);
    EXPECT_EQ(s[1], 4.f / 127.5f);
    EXPECT_EQ(s[2], 3.f / 127.5f);
    EXPECT_EQ(s[3], std::numeric_limits<float>::epsilon());  // zero range: torch's eps
    for (int32_t z : p.zero_point.to_vector<int32_t>()) EXPECT_EQ(z, 0);
  }
  {  // narrow range: (127 - -127) / 2 = 127
    const QParams p = compute_qparams(mn, mx, make_spec(8, true, true, true));
    EXPECT_EQ(p.scale.to_vector<float>()[0], 2.f / 127.f);
  }
  {  // symmetric uint8: zero point 128 (torch quint8)
    const QParams p = compute_qparams(mn, mx, make_spec(8, false, true));
    for (int32_t z : p.zero_point.to_vector<int32_t>()) EXPECT_EQ(z, 128);
  }
  {  // affine uint8: range widened to include 0; zp = qmin - rint(min / scale)
    const QParams p = compute_qparams(mn, mx, make_spec(8, false, false));
    const auto s = p.scale.to_vector<float>();
    const auto z = p.zero_point.to_vector<int32_t>();
    EXPECT_EQ(s[0], 3.f / 255.f);
    EXPECT_EQ(z[0], static_cast<int32_t>(-std::rint(-1.f / (3.f / 255.f))));  // 85
    EXPECT_EQ(z[0], 85);
    EXPECT_EQ(s[1], 4.f / 255.f);  // [0, 4]
    EXPECT_EQ(z[1], 0);
    EXPECT_EQ(s[2], 3.f / 255.f);  // [-3, 0]
    EXPECT_EQ(z[2], 255);
  }
  {  // affine int4: qmin -8
    const QParams p = compute_qparams(mn, mx, make_spec(4, true, false));
    EXPECT_EQ(p.scale.to_vector<float>()[0], 3.f / 15.f);
    EXPECT_EQ(p.zero_point.to_vector<int32_t>()[0],
              -8 - static_cast<int32_t>(std::rint(-1.f / (3.f / 15.f))));
  }
}

TEST(ComputeQParams, BadInput) {
  const Tensor a = Tensor::from_vector(std::vector<float>{1.f}, {1});
  const Tensor b = Tensor::from_vector(std::vector<float>{0.f}, {1});
  const Tensor nan = Tensor::from_vector(std::vector<float>{kNaN}, {1});
  const Tensor inf = Tensor::from_vector(std::vector<float>{kInf}, {1});
  const QuantSpec s8 = make_spec(8, true, true);
  expect_error([&] { compute_qparams(a, b, s8); }, ErrorCode::kInvalidArgument, "compute_qparams");
  expect_error([&] { compute_qparams(nan, a, s8); }, ErrorCode::kInvalidArgument,
               "compute_qparams");
  expect_error([&] { compute_qparams(b, inf, s8); }, ErrorCode::kInvalidArgument,
               "compute_qparams");
  expect_error([&] { compute_qparams(b, a, make_spec(9, true, true)); },
               ErrorCode::kInvalidArgument, "compute_qparams");
  expect_error([&] { compute_qparams(b, Tensor::zeros({2}), s8); }, ErrorCode::kInvalidArgument,
               "compute_qparams");
  expect_error([&] { compute_qparams(Tensor::zeros({0}), Tensor::zeros({0}), s8); },
               ErrorCode::kInvalidArgument, "compute_qparams");
}

// ---- codes against the reference
// ------------------------------------------------------------------

struct Case {
  int bits;
  bool is_signed, symmetric, narrow;
};

std::vector<Case> all_cases() {
  std::vector<Case> v;
  for (int bits : {2, 3, 4, 5, 8}) {
    for (bool sg : {true, false}) {
      for (bool sym : {true, false}) {
        v.push_back({bits, sg, sym, false});
        if (sg) v.push_back({bits, sg, sym, true});
      }
    }
  }
  return v;
}

void expect_codes_match(const Tensor& x, const QuantSpec& spec, const QParams& p,
                        const ExecContext& ctx = {}) {
  const QTensor q = quantize(x, spec, p, ctx);
  const std::vector<int32_t> want = ref::quantize_codes(x, spec, p, ctx.seed, ctx.offset);
  const std::vector<int32_t> got = ref::unpack_codes(q);
  ASSERT_EQ(got.size(), want.size());
  int bad = 0;
  for (std::size_t i = 0; i < got.size() && bad < 5; ++i) {
    if (got[i] != want[i]) {
      ADD_FAILURE() << "element " << i << ": code " << got[i] << ", reference " << want[i]
                    << " (bits " << spec.bits << ", signed " << spec.is_signed << ", symmetric "
                    << spec.symmetric << ", narrow " << spec.narrow_range << ", granularity "
                    << static_cast<int>(spec.granularity) << ", axis " << spec.axis << ", "
                    << dtype_name(x.dtype()) << ")";
      ++bad;
    }
  }
  // Dequantization is the exact float product (code - z) * s.
  const Tensor dq = dequantize(q, ctx);
  const Tensor dref =
      Tensor::from_vector(ref::dequantize(want, x.shape(), spec, p), x.shape()).to(DType::kF32);
  EXPECT_TRUE(testing::all_equal(dq, dref));
}

TEST(Quantize, PerTensorMatchesReferenceAllFormats) {
  const Tensor x = random_uniform({7, 33}, 1, -3.f, 2.f);
  for (const Case& c : all_cases()) {
    QuantSpec spec = make_spec(c.bits, c.is_signed, c.symmetric, c.narrow);
    const QParams p = minmax_qparams(x, spec);
    expect_codes_match(x, spec, p);
    // Half the range: values beyond it saturate.
    const QParams half{Tensor::full({}, p.scale.to_vector<float>()[0] * 0.5f), p.zero_point};
    expect_codes_match(x, spec, half);
  }
}

TEST(Quantize, PerChannelAnyAxisMatchesReference) {
  const Tensor x = random_uniform({3, 5, 4, 6}, 2, -1.f, 3.f);
  for (const Case& c :
       {Case{8, true, true, false}, Case{8, false, false, false}, Case{4, true, false, false},
        Case{3, false, true, false}, Case{2, true, false, false}}) {
    for (int axis : {0, 1, 2, 3, -1}) {
      QuantSpec spec = make_spec(c.bits, c.is_signed, c.symmetric, c.narrow);
      spec.granularity = Granularity::kPerChannel;
      spec.axis = axis;
      const QParams p = minmax_qparams(x, spec);
      EXPECT_EQ(p.scale.shape(), Shape{x.dim(axis)});
      expect_codes_match(x, spec, p);
    }
  }
}

TEST(Quantize, PerGroupMatchesReference) {
  const Tensor x = random_uniform({4, 6, 64}, 3, -2.f, 2.f);
  for (const Case& c : {Case{8, true, true, false}, Case{4, true, true, false},
                        Case{4, false, false, false}, Case{2, false, false, false}}) {
    for (auto [axis, group] : {std::pair{2, 32}, std::pair{-1, 16}, std::pair{1, 3},
                               std::pair{0, 2}, std::pair{2, 64}}) {
      QuantSpec spec = make_spec(c.bits, c.is_signed, c.symmetric, c.narrow);
      spec.granularity = Granularity::kPerGroup;
      spec.axis = axis;
      spec.group_size = group;
      const QParams p = minmax_qparams(x, spec);
      Shape ps = x.shape();
      const int a = axis < 0 ? axis + 3 : axis;
      ps[a] /= group;
      EXPECT_EQ(p.scale.shape(), ps);
      expect_codes_match(x, spec, p);
    }
  }
}

TEST(Quantize, AllFloatDtypesMatchReference) {
  for (DType t : {DType::kF32, DType::kF64, DType::kF16, DType::kBF16}) {
    const Tensor x = random_uniform({5, 40}, 4, -4.f, 4.f).to(t);
    QuantSpec spec = make_spec(8, true, false);
    spec.granularity = Granularity::kPerChannel;
    const QParams p = minmax_qparams(x, spec);
    expect_codes_match(x, spec, p);
    // fake_quantize keeps the dtype and equals dequantize(quantize(x)) rounded to it.
    const Tensor fq = fake_quantize(x, spec, p);
    EXPECT_EQ(fq.dtype(), t);
    const Tensor want =
        Tensor::from_vector(ref::dequantize(ref::quantize_codes(x, spec, p), x.shape(), spec, p),
                            x.shape())
            .to(t == DType::kF64 ? DType::kF64 : DType::kF32)  // the backends' compute type
            .to(t);
    EXPECT_TRUE(all_close(fq, want, 0, 0));
  }
}

TEST(Quantize, StridedInputMatchesContiguous) {
  const Tensor base = random_uniform({12, 10}, 5, -1.f, 1.f);
  const Tensor x = base.t().slice(1, 2, 11);  // (10, 9), not contiguous
  QuantSpec spec = make_spec(4, true, true);
  spec.granularity = Granularity::kPerChannel;
  spec.axis = 1;
  const QParams p = minmax_qparams(x, spec);
  expect_codes_match(x, spec, p);
  EXPECT_EQ(ref::unpack_codes(quantize(x, spec, p)),
            ref::unpack_codes(quantize(x.contiguous(), spec, p)));
}

// Ties x / s = k + 0.5 go to the even integer (torch.quantize_per_tensor, numpy.rint).
TEST(Quantize, TiesRoundHalfToEven) {
  const float s = 0.25f;  // a power of two: x / s is exact
  const std::vector<float> t = {0.5f, 1.5f, 2.5f, 3.5f, -0.5f, -1.5f, -2.5f, -3.5f, 126.5f, 125.5f};
  const std::vector<int32_t> want = {0, 2, 2, 4, 0, -2, -2, -4, 126, 126};
  std::vector<float> xv;
  for (float v : t) xv.push_back(v * s);
  const Tensor x = Tensor::from_vector(xv, {static_cast<int64_t>(xv.size())});
  const QTensor q = quantize(x, make_spec(8, true, true), params({s}, {0}, {}));
  EXPECT_EQ(ref::unpack_codes(q), want);
  // With a zero point the tie is decided before adding it: rint(0.5) + 3 = 3.
  const QTensor qz = quantize(x, make_spec(8, true, false), params({s}, {3}, {}));
  std::vector<int32_t> want_z;
  for (int32_t w : want) want_z.push_back(std::min(w + 3, 127));
  EXPECT_EQ(ref::unpack_codes(qz), want_z);
}

TEST(Quantize, DequantizationErrorAtMostHalfStepInsideRange) {
  const Tensor x = random_uniform({100000}, 6, -5.f, 7.f);
  for (const Case& c :
       {Case{8, true, true, false}, Case{8, false, false, false}, Case{4, true, false, false},
        Case{3, true, true, true}, Case{2, false, false, false}}) {
    const QuantSpec spec = make_spec(c.bits, c.is_signed, c.symmetric, c.narrow);
    const QTensor q = quantize_per_tensor(x, spec);
    const float s = q.qparams.scale.to_vector<float>()[0];
    const int32_t z = q.qparams.zero_point.to_vector<int32_t>()[0];
    const double lo = (spec.qmin() - z) * double(s), hi = (spec.qmax() - z) * double(s);
    const auto xv = x.to_vector<double>();
    const auto dv = dequantize(q).to_vector<double>();
    for (std::size_t i = 0; i < xv.size(); ++i) {
      if (xv[i] < lo || xv[i] > hi) continue;
      // s / 2, plus the float rounding of x / s (relative 2^-24 of |x / s| <= 2^8, times s) and
      // of the product (half an ulp of x).
      const double tol = s / 2 * (1 + std::ldexp(1.0, -15)) + std::ldexp(std::fabs(xv[i]), -24);
      ASSERT_LE(std::fabs(dv[i] - xv[i]), tol) << "element " << i << " bits " << c.bits;
    }
  }
}

TEST(Quantize, PackedLayouts) {
  // int4: element 2k in the low nibble (frugal/core/packed.hpp); int2: element 4k+j in bits 2j.
  const Tensor x = Tensor::from_vector(std::vector<float>{-8, 7, -1, 3, 5}, {5});
  const QTensor q4 = quantize(x, make_spec(4, true, true), params({1.f}, {0}, {}));
  EXPECT_EQ(q4.codes.dtype(), DType::kI4);
  const auto* b4 = static_cast<const uint8_t*>(q4.codes.data_ptr());
  EXPECT_EQ(b4[0], pack_i4(-8, 7));
  EXPECT_EQ(b4[1], pack_i4(-1, 3));
  EXPECT_EQ(unpack_i4_lo(b4[2]), 5);
  const Tensor y = Tensor::from_vector(std::vector<float>{-2, 1, 0, -1, 1}, {5});
  const QTensor q2 = quantize(y, make_spec(2, true, true), params({1.f}, {0}, {}));
  EXPECT_EQ(q2.codes.dtype(), DType::kU8);
  EXPECT_EQ(q2.codes.shape(), Shape{2});
  const auto* b2 = static_cast<const uint8_t*>(q2.codes.data_ptr());
  // -2 = 0b10, 1 = 0b01, 0 = 0b00, -1 = 0b11 -> 0b11'00'01'10
  EXPECT_EQ(b2[0], 0b11000110);
  EXPECT_EQ(b2[1], 0b01);
}

// ---- stochastic rounding -----------------------------------------------------------------------

TEST(Quantize, StochasticIsReproducibleAndMatchesReference) {
  const Tensor x = random_uniform({1001}, 7, -2.f, 2.f);
  QuantSpec spec = make_spec(4, true, false);
  spec.rounding = Rounding::kStochastic;
  const QParams p = minmax_qparams(x, spec);
  ExecContext ctx;
  ctx.seed = 1234;
  ctx.offset = 17;
  expect_codes_match(x, spec, p, ctx);
  const auto a = ref::unpack_codes(quantize(x, spec, p, ctx));
  ctx.num_threads = 1;
  const auto b = ref::unpack_codes(quantize(x, spec, p, ctx));
  EXPECT_EQ(a, b) << "same seed, other thread count";
  ctx.offset += philox_counters(x.numel());
  const auto c = ref::unpack_codes(quantize(x, spec, p, ctx));
  EXPECT_NE(a, c) << "fresh offset, fresh numbers";
  // f64 and per-channel stochastic paths.
  spec.granularity = Granularity::kPerChannel;
  const Tensor x2 = random_uniform({13, 9}, 8, -1.f, 1.f).to(DType::kF64);
  spec.axis = 1;
  expect_codes_match(x2, spec, minmax_qparams(x2, spec), ctx);
}

TEST(Quantize, StochasticIsUnbiased) {
  // x / s = 0.3 for every element: each code is 1 with probability 0.3, else 0.
  const int64_t n = 1 << 20;
  const Tensor x = Tensor::full({n}, 0.3 * 0.5);
  QuantSpec spec = make_spec(8, true, true);
  spec.rounding = Rounding::kStochastic;
  ExecContext ctx;
  ctx.seed = 99;
  const auto codes = ref::unpack_codes(quantize(x, spec, params({0.5f}, {0}, {}), ctx));
  double mean = 0;
  for (int32_t c : codes) mean += c;
  mean /= static_cast<double>(n);
  const double t = static_cast<double>(static_cast<float>(0.3 * 0.5) / 0.5f);
  // 6 standard deviations of a Bernoulli(0.3) mean over n draws (a false alarm ~1e-9).
  EXPECT_NEAR(mean, t, 6 * std::sqrt(0.3 * 0.7 / static_cast<double>(n)));
  // fake_quantize with the same stream gives the same values.
  const auto fq = fake_quantize(x, spec, params({0.5f}, {0}, {}), ctx).to_vector<float>();
  for (std::size_t i = 0; i < codes.size(); ++i) ASSERT_EQ(fq[i], codes[i] * 0.5f);
}

// ---- non-finite input
// ----------------------------------------------------------------------------

TEST(Quantize, NanGoesToZeroPointInfSaturates) {
  const Tensor x = Tensor::from_vector(std::vector<float>{kNaN, kInf, -kInf, 1.f}, {4});
  const QTensor q = quantize(x, make_spec(8, false, false), params({0.1f}, {7}, {}));
  EXPECT_EQ(ref::unpack_codes(q), (std::vector<int32_t>{7, 255, 0, 17}));
  const auto d = dequantize(q).to_vector<float>();
  EXPECT_EQ(d[0], 0.f);
  const auto f =
      fake_quantize(x, make_spec(8, true, true), params({0.5f}, {0}, {})).to_vector<float>();
  EXPECT_EQ(f[0], 0.f);
  EXPECT_EQ(f[1], 127 * 0.5f);
  EXPECT_EQ(f[2], -128 * 0.5f);
  // The min-max convenience functions have no finite range to use.
  expect_error([&] { quantize_per_tensor(x); }, ErrorCode::kInvalidArgument, "quantize_per_tensor");
  expect_error([&] { quantize_per_channel(x, 0); }, ErrorCode::kInvalidArgument,
               "quantize_per_channel");
}

// ---- into variants and threads
// -------------------------------------------------------------------

TEST(Quantize, IntoVariantsAndThreadCounts) {
  const Tensor x = random_uniform({3, 50000}, 9, -1.f, 1.f);
  QuantSpec spec = make_spec(8, true, true);
  spec.granularity = Granularity::kPerChannel;
  const QParams p = minmax_qparams(x, spec);
  ExecContext one, two;
  one.num_threads = 1;
  two.num_threads = 2;
  const QTensor q = quantize(x, spec, p, one);
  Tensor codes = Tensor::empty(x.shape(), DType::kI8);
  quantize_into(x, spec, p, codes.view(), two);
  EXPECT_TRUE(testing::all_equal(codes, q.codes));
  Tensor out = Tensor::empty(x.shape(), DType::kF32);
  dequantize_into(q, out.view(), two);
  EXPECT_TRUE(testing::all_equal(out, dequantize(q, one)));
  Tensor fq = Tensor::empty(x.shape(), DType::kF32);
  fake_quantize_into(x, spec, p, fq.view(), two);
  EXPECT_TRUE(testing::all_equal(fq, out));
  expect_error(
      [&] {
        quantize_into(x, spec, p, Tensor::empty({3, 50000}, DType::kU8).view());
      },
      ErrorCode::kInvalidArgument, "quantize_into");
}

TEST(Quantize, QuantizationErrorReport) {
  const Tensor x = Tensor::from_vector(std::vector<float>{1.f, -2.f, 3.f, 0.f}, {4});
  const Tensor a = Tensor::from_vector(std::vector<float>{1.f, -1.5f, 2.f, 0.f}, {4});
  const QuantError e = quantization_error(x, a);
  EXPECT_DOUBLE_EQ(e.max_abs, 1.0);
  EXPECT_DOUBLE_EQ(e.rms, std::sqrt((0.25 + 1.0) / 4));
  EXPECT_DOUBLE_EQ(e.rel_rms, std::sqrt(1.25 / 14.0));
}

// ---- bad input ----------------------------------------------------------------------------------

TEST(Quantize, BadInput) {
  const Tensor x = random_uniform({4, 6}, 10);
  const QuantSpec s8 = make_spec(8, true, true);
  const QParams ok = params({0.1f}, {0}, {});
  const char* op = "quantize";
  auto q = [&](const Tensor& t, const QuantSpec& s, const QParams& p) { quantize(t, s, p); };
  for (int bits : {0, 1, 9, 16}) {
    expect_error([&] { q(x, make_spec(bits, true, true), ok); }, ErrorCode::kInvalidArgument, op);
  }
  for (float bad : {0.f, -1.f, kNaN, kInf}) {
    expect_error([&] { q(x, s8, params({bad}, {0}, {})); }, ErrorCode::kInvalidArgument, op);
  }
  expect_error([&] { q(x, s8, params({0.1f}, {128}, {})); }, ErrorCode::kInvalidArgument, op);
  expect_error([&] { q(x, make_spec(8, false, false), params({0.1f}, {-1}, {})); },
               ErrorCode::kInvalidArgument, op);
  expect_error([&] { q(x, make_spec(8, true, true, true), params({0.1f}, {-128}, {})); },
               ErrorCode::kInvalidArgument, op);
  QuantSpec g = s8;
  g.granularity = Granularity::kPerGroup;
  g.axis = 1;
  g.group_size = 4;  // does not divide 6
  expect_error(
      [&] {
        q(x, g, params(std::vector<float>(4, 0.1f), std::vector<int32_t>(4, 0), {4, 1}));
      },
      ErrorCode::kInvalidArgument, op);
  expect_error([&] { quantize_per_group(x, 1, 4); }, ErrorCode::kInvalidArgument,
               "quantize_per_group");
  expect_error([&] { quantize_per_group(x, 1, 0); }, ErrorCode::kInvalidArgument,
               "quantize_per_group");
  QuantSpec c = s8;
  c.granularity = Granularity::kPerChannel;
  c.axis = 2;
  expect_error(
      [&] { q(x, c, params(std::vector<float>(4, 0.1f), std::vector<int32_t>(4, 0), {4})); },
      ErrorCode::kInvalidArgument, op);
  expect_error([&] { quantize_per_channel(x, -3); }, ErrorCode::kInvalidArgument,
               "quantize_per_channel");
  c.axis = 0;  // per channel along axis 0 needs 4 scales, not 6
  expect_error(
      [&] { q(x, c, params(std::vector<float>(6, 0.1f), std::vector<int32_t>(6, 0), {6})); },
      ErrorCode::kInvalidArgument, op);
  expect_error([&] { q(Tensor::zeros({0, 3}), s8, ok); }, ErrorCode::kInvalidArgument, op);
  expect_error([&] { q(x.to(DType::kI32), s8, ok); }, ErrorCode::kInvalidArgument, op);
  expect_error(
      [&] {
        q(x, s8, QParams{Tensor::full({}, 0.1, DType::kF64), ok.zero_point});
      },
      ErrorCode::kInvalidArgument, op);
  expect_error(
      [&] {
        q(x, s8, QParams{ok.scale, Tensor::full({}, 0, DType::kI64)});
      },
      ErrorCode::kInvalidArgument, op);
  expect_error([&] { q(x, s8, QParams{}); }, ErrorCode::kInvalidArgument, op);
  // Data claimed to be on a GPU while the parameters are on the CPU: rejected before any access.
  ConstTensorView gpu = x.cview();
  gpu.device = Device::cuda(0);
  expect_error([&] { quantize(gpu, s8, ok); }, ErrorCode::kInvalidArgument, op);
  expect_error([&] { fake_quantize(x.to(DType::kI8), s8, ok); }, ErrorCode::kInvalidArgument,
               "fake_quantize");
  QTensor wrong = quantize(x, s8, ok);
  wrong.spec.bits = 4;
  expect_error([&] { dequantize(wrong); }, ErrorCode::kInvalidArgument, "dequantize");
}

}  // namespace
}  // namespace frugal::quant
