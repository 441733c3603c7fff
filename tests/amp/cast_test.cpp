// amp::cast on the CPU: every code round-trips, nearest even equals Tensor::to (the float_types.hpp
// reference), stochastic rounding lands on a neighbour, is unbiased and follows the documented
// Philox stream, amax equals core abs_max, and bad input fails with "[amp::cast]".
#include "frugal/amp/cast.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "amp/cast_bits.hpp"
#include "frugal/core.hpp"
#include "frugal/core/philox.hpp"
#include "support/check.hpp"
#include "support/tolerance.hpp"

namespace frugal::amp {
namespace {

using testing::expect_error;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
const DType kTargets[] = {DType::kF16, DType::kBF16, DType::kF8E4M3, DType::kF8E5M2};

int code_bits(DType t) { return (t == DType::kF16 || t == DType::kBF16) ? 16 : 8; }

float decode(DType t, uint32_t c) {
  switch (t) {
    case DType::kF16:
      return half_bits_to_float(static_cast<uint16_t>(c));
    case DType::kBF16:
      return bf16_bits_to_float(static_cast<uint16_t>(c));
    case DType::kF8E4M3:
      return e4m3_bits_to_float(static_cast<uint8_t>(c));
    default:
      return e5m2_bits_to_float(static_cast<uint8_t>(c));
  }
}

std::vector<uint32_t> codes_of(const Tensor& t) {
  std::vector<uint32_t> c(static_cast<size_t>(t.numel()));
  const void* p = t.cview().data;
  for (size_t i = 0; i < c.size(); ++i) {
    c[i] = t.dtype() == DType::kF16 || t.dtype() == DType::kBF16
               ? static_cast<const uint16_t*>(p)[i]
               : static_cast<const uint8_t*>(p)[i];
  }
  return c;
}

// Finite floats spread over many binades (including the f16 / fp8 subnormal ranges), plus specials.
std::vector<float> wide_values(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> m(-2.f, 2.f);
  std::uniform_int_distribution<int> e(-30, 20);
  std::vector<float> v(n);
  for (auto& x : v) x = std::ldexp(m(gen), e(gen));
  return v;
}

TEST(AmpCast, EveryCodeRoundTrips) {
  for (DType t : kTargets) {
    const uint32_t ncodes = 1u << code_bits(t);
    std::vector<float> x(ncodes);
    for (uint32_t c = 0; c < ncodes; ++c) x[c] = decode(t, c);
    const Tensor xt = Tensor::from_vector(x, Shape{static_cast<int64_t>(ncodes)});
    for (Rounding r : {Rounding::kNearestEven, Rounding::kStochastic}) {
      CastOptions opt;
      opt.rounding = r;
      opt.overflow = Overflow::kNonSaturate;  // keeps ±Inf codes as they are
      const std::vector<uint32_t> back = codes_of(cast(xt.cview(), t, opt).out);
      for (uint32_t c = 0; c < ncodes; ++c) {
        if (std::isnan(x[c])) {
          EXPECT_TRUE(std::isnan(decode(t, back[c]))) << dtype_name(t) << " code " << c;
          EXPECT_EQ(std::signbit(decode(t, back[c])), std::signbit(x[c]));
        } else {
          ASSERT_EQ(back[c], c) << dtype_name(t) << " rounding " << int(r);
        }
      }
    }
  }
}

TEST(AmpCast, SaturateClampsOverflowAndInf) {
  const Tensor x =
      Tensor::from_vector(std::vector<float>{1e6f, -1e6f, kInf, -kInf, kNaN}, Shape{5});
  const float maxes[] = {kMaxHalf, 3.3895313892515355e38f, kMaxE4M3, kMaxE5M2};
  for (int k = 0; k < 4; ++k) {
    CastOptions opt;
    opt.overflow = Overflow::kSaturate;
    const std::vector<uint32_t> c = codes_of(cast(x.cview(), kTargets[k], opt).out);
    const float big = k == 1 ? maxes[1] : maxes[k];
    if (k != 1) {  // 1e6 is finite in bf16
      EXPECT_EQ(decode(kTargets[k], c[0]), big);
      EXPECT_EQ(decode(kTargets[k], c[1]), -big);
    }
    EXPECT_EQ(decode(kTargets[k], c[2]), big);
    EXPECT_EQ(decode(kTargets[k], c[3]), -big);
    EXPECT_TRUE(std::isnan(decode(kTargets[k], c[4])));
  }
}

TEST(AmpCast, NearestEvenMatchesTensorTo) {
  std::vector<float> v = wide_values(1 << 18, 7);
  const float specials[] = {0.f,   -0.f,  kInf,  -kInf,   kNaN,    65504.f, 65519.f, 65520.f,
                            448.f, 464.f, 465.f, 57344.f, 61439.f, 61440.f, 1e-40f,  -1e-45f};
  v.insert(v.end(), std::begin(specials), std::end(specials));
  const Tensor x = Tensor::from_vector(v, Shape{static_cast<int64_t>(v.size())});
  for (DType t : kTargets) {
    CastOptions opt;
    // Tensor::to: IEEE (non-saturating) f16 / bf16, saturating fp8.
    opt.overflow = code_bits(t) == 16 ? Overflow::kNonSaturate : Overflow::kSaturate;
    EXPECT_EQ(codes_of(cast(x.cview(), t, opt).out), codes_of(x.to(t))) << dtype_name(t);
  }
}

TEST(AmpCast, BranchlessPathsMatchReferenceOnRandomBitPatterns) {
  // Every float class: random 32-bit patterns (NaNs, Infs, subnormals, all exponents).
  std::mt19937 gen(11);
  std::vector<float> v(1 << 20);
  for (auto& x : v) {
    const uint32_t u = gen();
    std::memcpy(&x, &u, 4);
  }
  const Tensor x = Tensor::from_vector(v, Shape{static_cast<int64_t>(v.size())});
  for (Overflow ov : {Overflow::kNonSaturate, Overflow::kSaturate}) {
    CastOptions opt;
    opt.overflow = ov;
    const auto h = codes_of(cast(x.cview(), DType::kF16, opt).out);
    const auto b = codes_of(cast(x.cview(), DType::kBF16, opt).out);
    const auto e4 = codes_of(cast(x.cview(), DType::kF8E4M3, opt).out);
    const auto e5 = codes_of(cast(x.cview(), DType::kF8E5M2, opt).out);
    for (size_t i = 0; i < v.size(); ++i) {
      ASSERT_EQ(h[i], (frugal::detail::float_to_small_float_bits<5, 10, true>(v[i], ov, 0x7E00u)))
          << v[i];
      ASSERT_EQ(b[i], (frugal::detail::float_to_small_float_bits<8, 7, true>(v[i], ov, 0x7FC0u)))
          << v[i];
      ASSERT_EQ(e4[i], float_to_e4m3_bits(v[i], ov)) << v[i];
      ASSERT_EQ(e5[i], float_to_e5m2_bits(v[i], ov)) << v[i];
    }
  }
}

TEST(AmpCast, ScaleIsAppliedBeforeTheCast) {
  const std::vector<float> v = wide_values(4096, 3);
  const Tensor x = Tensor::from_vector(v, Shape{4096});
  const float s = 0.0625f * 3.f;
  std::vector<float> xs(v.size());
  for (size_t i = 0; i < v.size(); ++i) xs[i] = v[i] * s;
  const Tensor xst = Tensor::from_vector(xs, Shape{4096});
  for (DType t : {DType::kF8E4M3, DType::kF8E5M2}) {
    CastOptions opt;
    opt.scale = s;
    opt.compute_amax = true;
    const CastResult r = cast(x.cview(), t, opt);
    EXPECT_EQ(codes_of(r.out), codes_of(xst.to(t)));
    EXPECT_EQ(r.amax, abs_max(x.cview()).to_vector<float>()[0]);  // amax of the unscaled input
  }
}

TEST(AmpCast, AmaxEqualsCoreAbsMax) {
  Tensor x = testing::random_uniform(Shape{3, 100003}, 5, -7.f, 9.f);
  CastOptions opt;
  opt.compute_amax = true;
  const float expected = abs_max(x.cview()).to_vector<float>()[0];
  for (DType t : kTargets) EXPECT_EQ(cast(x.cview(), t, opt).amax, expected);
  opt.compute_amax = false;
  EXPECT_EQ(cast(x.cview(), DType::kBF16, opt).amax, 0.f);  // not computed
  x.view().data_as<float>()[123456] = kNaN;
  opt.compute_amax = true;
  EXPECT_TRUE(std::isnan(abs_max(x.cview()).to_vector<float>()[0]));
  EXPECT_TRUE(std::isnan(cast(x.cview(), DType::kF8E4M3, opt).amax));
}

TEST(AmpCast, AmaxDoesNotDependOnThreadCount) {
  const Tensor x = testing::random_uniform(Shape{1 << 20}, 9, -3.f, 3.f);
  CastOptions opt;
  opt.compute_amax = true;
  opt.rounding = Rounding::kStochastic;
  ExecContext one;
  one.num_threads = 1;
  one.seed = 4;
  ExecContext all;
  all.seed = 4;
  const CastResult a = cast(x.cview(), DType::kBF16, opt, one);
  const CastResult b = cast(x.cview(), DType::kBF16, opt, all);
  EXPECT_EQ(a.amax, b.amax);
  EXPECT_EQ(codes_of(a.out), codes_of(b.out));
}

// The two representable neighbours of x in format t, as codes: the RNE result r and the code on
// the other side of x.
bool is_neighbour(DType t, float x, uint32_t got) {
  const Tensor xt = Tensor::from_vector(std::vector<float>{x}, Shape{1});
  CastOptions opt;
  opt.overflow = Overflow::kNonSaturate;
  const uint32_t r = codes_of(cast(xt.cview(), t, opt).out)[0];
  const float rv = decode(t, r);
  if (got == r) return true;
  if (rv == x) return false;
  // Moving the magnitude code by one moves away from (up) or toward (down) zero.
  const uint32_t other = std::fabs(rv) < std::fabs(x) ? r + 1 : r - 1;
  return got == other;
}

TEST(AmpCast, StochasticResultIsAlwaysANeighbour) {
  const std::vector<float> v = wide_values(20000, 13);
  const Tensor x = Tensor::from_vector(v, Shape{20000});
  for (DType t : kTargets) {
    CastOptions opt;
    opt.rounding = Rounding::kStochastic;
    opt.overflow = Overflow::kNonSaturate;
    ExecContext ctx;
    ctx.seed = 99;
    const auto c = codes_of(cast(x.cview(), t, opt, ctx).out);
    for (size_t i = 0; i < v.size(); ++i) {
      // Values beyond the range have no upper neighbour; skip them.
      if (std::fabs(v[i]) >= (t == DType::kF8E4M3   ? 448.f
                              : t == DType::kF16    ? 65504.f
                              : t == DType::kF8E5M2 ? 57344.f
                                                    : 1e38f)) {
        continue;
      }
      ASSERT_TRUE(is_neighbour(t, v[i], c[i])) << dtype_name(t) << " x=" << v[i];
    }
  }
}

// Philox4x32 with 7 rounds, written out from Salmon et al. 2011 (the stochastic-rounding stream's
// generator): the round function of Philox4x32, the key bumped by (W0, W1) between rounds.
Uint4 philox7(Uint4 c, uint64_t seed) {
  uint32_t kx = static_cast<uint32_t>(seed), ky = static_cast<uint32_t>(seed >> 32);
  for (int r = 0; r < 7; ++r) {
    const uint64_t p0 = uint64_t{0xD2511F53u} * c.x, p1 = uint64_t{0xCD9E8D57u} * c.z;
    c = {static_cast<uint32_t>(p1 >> 32) ^ c.y ^ kx, static_cast<uint32_t>(p1),
         static_cast<uint32_t>(p0 >> 32) ^ c.w ^ ky, static_cast<uint32_t>(p0)};
    kx += 0x9E3779B9u;
    ky += 0xBB67AE85u;
  }
  return c;
}

TEST(AmpCast, StochasticRoundingGeneratorIsPhilox4x32With7Rounds) {
  // Random123's known-answer vectors (kat_vectors, "philox4x32 7" lines): counter, key, output.
  struct Kat {
    Uint4 ctr;
    uint64_t key;
    Uint4 out;
  };
  const Kat kats[] = {{{0, 0, 0, 0}, 0, {0x5f6fb709u, 0x0d893f64u, 0x4f121f81u, 0x4f730a48u}},
                      {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
                       0xffffffffffffffffull,
                       {0x5207ddc2u, 0x45165e59u, 0x4d8ee751u, 0x8c52f662u}},
                      {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
                       0x299f31d0a4093822ull,
                       {0x4dfccabau, 0x190a87f0u, 0xc47362bau, 0xb6b5242au}}};
  for (const Kat& k : kats) {
    EXPECT_EQ(detail::sr_philox(k.ctr, k.key), k.out);
    EXPECT_EQ(philox7(k.ctr, k.key), k.out);
  }
}

TEST(AmpCast, StochasticFollowsThePhiloxStream) {
  // Independent check of the documented stream (docs/amp.md, "Rounding"), n = 4099. bf16 (16
  // bits, E = 8 elements per block, groups of G = 64): element j of group g takes half p % 2 (low
  // first) of word j % 16 of row p / 2, p = j / 16, where row 0 = x0 y0 x1 y1 ... x7 y7 and row 1
  // = z0 w0 ... z7 w7 of the blocks with counters 8 g + b + offset; the 3 tail elements take the
  // halves of the next block in order. bf16 normals drop 16 bits: the random bits are added and
  // the sum truncated. E4M3 (8 bits, E = 16, G = 128): byte p % 4 of word j % 16 of row p / 4;
  // normals drop 20 bits `rem`: round up iff r8 + ceil(rem / 2^12) >= 2^8.
  const int64_t n = 4099;
  const Tensor x = testing::random_uniform(Shape{n}, 17, 0.5f, 4.f);
  ExecContext ctx;
  ctx.seed = 0x1234567890ull;
  ctx.offset = 77;
  CastOptions opt;
  opt.rounding = Rounding::kStochastic;
  const auto c = codes_of(cast(x.cview(), DType::kBF16, opt, ctx).out);
  const auto c8 = codes_of(cast(x.cview(), DType::kF8E4M3, opt, ctx).out);
  const auto v = x.to_vector<float>();
  const auto word_of = [&](uint64_t counter, int w) {
    const Uint4 b = philox7({static_cast<uint32_t>(counter + ctx.offset), 0, 0, 0}, ctx.seed);
    return w == 0 ? b.x : w == 1 ? b.y : w == 2 ? b.z : b.w;
  };
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, &v[static_cast<size_t>(i)], 4);
    uint32_t r16, r8;
    if (i < 4096) {  // 64 full bf16 groups, 32 full E4M3 groups
      const int64_t j = i % 64, p = j / 16, l = j % 16;
      const uint32_t w = word_of(8 * (i / 64) + l / 2, static_cast<int>(2 * (p / 2) + l % 2));
      r16 = p % 2 == 1 ? w >> 16 : w & 0xFFFFu;
      const int64_t j8 = i % 128, p8 = j8 / 16, l8 = j8 % 16;
      const uint32_t w8 = word_of(8 * (i / 128) + l8 / 2, static_cast<int>(2 * (p8 / 4) + l8 % 2));
      r8 = (w8 >> (8 * (p8 % 4))) & 0xFFu;
    } else {
      const int64_t t = i - 4096;
      const uint32_t w = word_of(512 + t / 8, static_cast<int>(t % 8 / 2));
      r16 = t % 2 == 1 ? w >> 16 : w & 0xFFFFu;
      const uint32_t w8 = word_of(256 + t / 16, static_cast<int>(t % 16 / 4));
      r8 = (w8 >> (8 * (t % 4))) & 0xFFu;
    }
    ASSERT_EQ(c[static_cast<size_t>(i)], (u + r16) >> 16) << i;
    // E4M3: exponent e - 127 + 7, 3 kept mantissa bits; [0.5, 4) is normal and below 448.
    const uint32_t rem = u & 0xFFFFFu;
    const uint32_t up = (r8 + (rem + 4095u) / 4096u) >> 8;
    const uint32_t code = ((((u >> 23) - 120u) << 3) | ((u >> 20) & 7u)) + up;
    ASSERT_EQ(c8[static_cast<size_t>(i)], code) << i;
  }
}

TEST(AmpCast, StochasticIsUnbiased) {
  // n draws of one value: the mean of the decoded results has expectation x and standard
  // deviation ulp * sqrt(p (1 - p) / n) <= ulp / (2 sqrt(n)); allow 6 of those (a false failure
  // has probability below 1e-8 per case).
  const int64_t n = 1 << 18;
  struct Case {
    DType t;
    float x;
  };
  const Case cases[] = {{DType::kBF16, 1.f + 0.3f / 128.f},
                        {DType::kF16, 1.f / 3.f},
                        {DType::kF8E4M3, 0.1f},
                        {DType::kF8E5M2, -1000.7f},
                        {DType::kF8E4M3, 1.1e-3f},  // an E4M3 subnormal
                        {DType::kF16, 3e-7f}};      // an f16 subnormal
  for (const Case& cs : cases) {
    const Tensor x = Tensor::full(Shape{n}, cs.x);
    CastOptions opt;
    opt.rounding = Rounding::kStochastic;
    ExecContext ctx;
    ctx.seed = 2024;
    const auto c = codes_of(cast(x.cview(), cs.t, opt, ctx).out);
    double sum = 0;
    double lo = 1e300, hi = -1e300;
    for (uint32_t k : c) {
      const double d = decode(cs.t, k);
      sum += d;
      lo = std::min(lo, d);
      hi = std::max(hi, d);
    }
    const double ulp = hi - lo;
    ASSERT_GT(ulp, 0.0) << "both neighbours should appear";
    EXPECT_NEAR(sum / n, cs.x, 6.0 * ulp / (2.0 * std::sqrt(double(n)))) << dtype_name(cs.t);
  }
}

TEST(AmpCast, StochasticSeedAndOffsetDetermineTheBits) {
  const Tensor x = testing::random_uniform(Shape{10000}, 21, -2.f, 2.f);
  CastOptions opt;
  opt.rounding = Rounding::kStochastic;
  ExecContext a;
  a.seed = 5;
  ExecContext b = a;
  b.offset = philox_counters(10000);
  ExecContext c = a;
  c.seed = 6;
  for (DType t : kTargets) {
    const auto ra = codes_of(cast(x.cview(), t, opt, a).out);
    EXPECT_EQ(ra, codes_of(cast(x.cview(), t, opt, a).out));
    EXPECT_NE(ra, codes_of(cast(x.cview(), t, opt, b).out));
    EXPECT_NE(ra, codes_of(cast(x.cview(), t, opt, c).out));
  }
}

TEST(AmpCast, EmptyInput) {
  const Tensor x = Tensor::empty(Shape{0, 3});
  CastOptions opt;
  opt.compute_amax = true;
  const CastResult r = cast(x.cview(), DType::kBF16, opt);
  EXPECT_EQ(r.out.numel(), 0);
  EXPECT_EQ(r.out.dtype(), DType::kBF16);
}

TEST(AmpCast, BadInput) {
  const Tensor x = testing::random_uniform(Shape{4, 5}, 1);
  for (float s : {0.f, -1.f, kNaN, kInf}) {
    CastOptions opt;
    opt.scale = s;
    expect_error([&] { cast(x.cview(), DType::kBF16, opt); }, ErrorCode::kInvalidArgument,
                 "amp::cast");
  }
  for (DType t : {DType::kF32, DType::kF64, DType::kI8}) {
    expect_error([&] { cast(x.cview(), t); }, ErrorCode::kInvalidArgument, "amp::cast");
  }
  const Tensor xd = x.to(DType::kF64);
  expect_error([&] { cast(xd.cview(), DType::kBF16); }, ErrorCode::kInvalidArgument, "amp::cast");
  const Tensor xb = x.to(DType::kBF16);
  expect_error([&] { cast(xb.cview(), DType::kF16); }, ErrorCode::kInvalidArgument, "amp::cast");
  const Tensor xt = x.transpose(0, 1);
  expect_error([&] { cast(xt.cview(), DType::kBF16); }, ErrorCode::kInvalidArgument, "amp::cast");
}

}  // namespace
}  // namespace frugal::amp

namespace frugal::amp {
namespace {

TEST(AmpCast, CastIntoEqualsCast) {
  const Tensor x = testing::random_uniform(Shape{3, 1000}, 8, -100.f, 100.f);
  CastOptions opt;
  opt.compute_amax = true;
  opt.scale = 2.f;
  Tensor out = Tensor::empty(Shape{3, 1000}, DType::kF8E5M2);
  const CastResult r = cast(x.cview(), DType::kF8E5M2, opt);
  EXPECT_EQ(cast_into(x.cview(), out.view(), opt), r.amax);
  EXPECT_EQ(codes_of(out), codes_of(r.out));
  Tensor wrong = Tensor::empty(Shape{3000}, DType::kF8E5M2);
  expect_error([&] { cast_into(x.cview(), wrong.view(), opt); }, ErrorCode::kInvalidArgument,
               "amp::cast");
  Tensor bad_dtype = Tensor::empty(Shape{3, 1000}, DType::kI8);
  expect_error([&] { cast_into(x.cview(), bad_dtype.view(), opt); }, ErrorCode::kInvalidArgument,
               "amp::cast");
}

}  // namespace
}  // namespace frugal::amp

namespace frugal::amp {
namespace {

TEST(AmpCast, CpuStochasticFastPathsMatchTheDevicePath) {
  // The CPU's vectorized stochastic paths must give the bits of the readable integer conversion
  // (detail::encode_sr) that the CUDA kernel runs, with the stream of detail::sr_random, on
  // every class of input, for every target, overflow mode and scale. Inputs: random bit patterns
  // (every class, but almost no 16-lane vector of ordinary values) and normally distributed data
  // at three magnitudes with zeros of both signs (mostly all-ordinary vectors: the fast paths,
  // zeros included, plus fp8 subnormal lanes at the small magnitude and overflow at the large
  // one). Lengths: several oneTBB blocks with a tail, an odd number of full groups in the last
  // block, shorter than one group, one element.
  std::mt19937 gen(23);
  std::normal_distribution<float> normal(0.f, 1.f);
  const auto check = [](const std::vector<float>& v, float scale) {
    const auto n = static_cast<int64_t>(v.size());
    const Tensor x = Tensor::from_vector(v, Shape{n});
    ExecContext ctx;
    ctx.seed = 8;
    ctx.offset = 3;
    for (Overflow ov : {Overflow::kNonSaturate, Overflow::kSaturate}) {
      CastOptions opt;
      opt.rounding = Rounding::kStochastic;
      opt.overflow = ov;
      opt.scale = scale;
      const auto h = codes_of(cast(x.cview(), DType::kF16, opt, ctx).out);
      const auto b = codes_of(cast(x.cview(), DType::kBF16, opt, ctx).out);
      const auto e4 = codes_of(cast(x.cview(), DType::kF8E4M3, opt, ctx).out);
      const auto e5 = codes_of(cast(x.cview(), DType::kF8E5M2, opt, ctx).out);
      for (int64_t i = 0; i < n; ++i) {
        const auto k = static_cast<size_t>(i);
        const float xs = v[k] * scale;  // the cast scales in fp32 first
        const uint32_t r = detail::sr_random(ctx.seed, ctx.offset, n, i, 16);
        const uint32_t r8 = detail::sr_random(ctx.seed, ctx.offset, n, i, 8);
        ASSERT_EQ(h[k], detail::encode_sr<detail::kFmtF16>(xs, ov, r)) << n << " " << v[k];
        ASSERT_EQ(b[k], detail::encode_sr<detail::kFmtBF16>(xs, ov, r)) << n << " " << v[k];
        ASSERT_EQ(e4[k], detail::encode_sr<detail::kFmtE4M3>(xs, ov, r8)) << n << " " << v[k];
        ASSERT_EQ(e5[k], detail::encode_sr<detail::kFmtE5M2>(xs, ov, r8)) << n << " " << v[k];
      }
    }
  };
  for (const int64_t n :
       {int64_t{(1 << 18) + 77}, int64_t{65536 + 1024 + 64 + 3}, int64_t{100}, int64_t{1}}) {
    std::vector<float> bits(static_cast<size_t>(n));
    for (auto& x : bits) {
      const uint32_t u = gen();
      std::memcpy(&x, &u, 4);
    }
    check(bits, 1.f);
    for (const float magnitude : {1e-3f, 1.f, 300.f}) {
      std::vector<float> v(static_cast<size_t>(n));
      for (size_t k = 0; k < v.size(); ++k) {
        v[k] = k % 97 == 5 ? (k % 2 == 0 ? 0.f : -0.f) : magnitude * normal(gen);
      }
      check(v, 1.f);
      check(v, 0.75f);
    }
  }
}

TEST(AmpCast, CpuNearestEvenFp8FastPathMatchesTheReference) {
  // The CPU's fp8 nearest-even path converts 64-element groups of ordinary lanes (normals of the
  // target, zeros) with a short integer sequence and sends a group with any other lane to the
  // full lane-by-lane code. Random bit patterns almost never give an ordinary group, so this
  // feeds normally distributed data at magnitudes that give all-ordinary groups (1), groups with
  // target subnormals (1e-3, 2^-7 for e4m3's [2^-7, 2^-6)), overflow (300 for e4m3, 6e4 for
  // e5m2), zeros of both signs, near-ties of both formats, and NaN / Inf / f32 subnormals now
  // and then; lengths give several oneTBB blocks with tails of a group, of a vector and of
  // single lanes.
  std::mt19937 gen(31);
  std::normal_distribution<float> normal(0.f, 1.f);
  const auto check = [](const std::vector<float>& v, float scale) {
    const auto n = static_cast<int64_t>(v.size());
    const Tensor x = Tensor::from_vector(v, Shape{n});
    for (Overflow ov : {Overflow::kNonSaturate, Overflow::kSaturate}) {
      for (bool amax : {false, true}) {
        CastOptions opt;
        opt.overflow = ov;
        opt.scale = scale;
        opt.compute_amax = amax;
        const auto e4 = codes_of(cast(x.cview(), DType::kF8E4M3, opt).out);
        const auto e5 = codes_of(cast(x.cview(), DType::kF8E5M2, opt).out);
        for (int64_t i = 0; i < n; ++i) {
          const auto k = static_cast<size_t>(i);
          const float xs = v[k] * scale;  // the cast scales in fp32 first
          ASSERT_EQ(e4[k], float_to_e4m3_bits(xs, ov)) << n << " " << v[k] << " " << scale;
          ASSERT_EQ(e5[k], float_to_e5m2_bits(xs, ov)) << n << " " << v[k] << " " << scale;
        }
      }
    }
  };
  const float odd[] = {0.f, -0.f, kNaN, -kNaN, kInf, -kInf, 1e-40f, -1e-45f};
  for (const int64_t n : {int64_t{(1 << 17) + 64 + 16 + 5}, int64_t{64 * 5}, int64_t{63}}) {
    for (const float magnitude : {1.f, 1e-3f, 0.0078125f, 300.f, 6e4f}) {
      std::vector<float> v(static_cast<size_t>(n));
      for (size_t k = 0; k < v.size(); ++k) {
        float z = magnitude * normal(gen);
        if (k % 7 == 3) {
          // A near-tie: the kept mantissa (2 or 3 bits), then 1 0...0 ending in 0 or 1.
          uint32_t b;
          std::memcpy(&b, &z, 4);
          b = (b & ~0x001FFFFFu) | (k % 2 == 0 ? 0x00080000u : 0x00100000u) |
              static_cast<uint32_t>(k % 3 == 0);
          std::memcpy(&z, &b, 4);
        }
        if (k % 61 == 7) z = k % 2 == 0 ? 0.f : -0.f;
        if (k % 4093 == 11) z = odd[k % 8];
        v[k] = z;
      }
      check(v, 1.f);
      check(v, 0.75f);
    }
  }
}

}  // namespace
}  // namespace frugal::amp
