// Philox4x32-10 and the random fills on the CPU: the generator against Random123's published
// known-answer vectors, the stream definition against values rebuilt here from the generator, the
// distributions against their closed-form moments, and the bad-input errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "frugal/core.hpp"
#include "support/check.hpp"
#include "support/tolerance.hpp"

namespace frugal {
namespace {

constexpr double kTwoPi = 6.283185307179586476925;

// Random123 tests/kat_vectors, lines "philox4x32 10": counter, key, expected output.
struct Kat {
  Uint4 counter;
  Uint2 key;
  Uint4 out;
};
constexpr Kat kKats[] = {
    {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
    {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
     {0xffffffff, 0xffffffff},
     {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
    {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
     {0xa4093822, 0x299f31d0},
     {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
};

// The generator is constexpr: the first vector also holds at compile time.
static_assert(Philox4x32::generate(Uint4{0, 0, 0, 0}, Uint2{0, 0}) ==
              Uint4{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8});

using testing::expect_error;

ExecContext ctx_of(uint64_t seed, uint64_t offset = 0, int threads = 0) {
  ExecContext ctx;
  ctx.seed = seed;
  ctx.offset = offset;
  ctx.num_threads = threads;
  return ctx;
}

/// Bit-exact comparison of two host tensors of the same dtype.
::testing::AssertionResult same_bits(const Tensor& a, const Tensor& b) {
  if (!(a.shape() == b.shape()) || a.dtype() != b.dtype() || a.nbytes() != b.nbytes()) {
    return ::testing::AssertionFailure() << "shape or dtype differ";
  }
  Tensor ca = a.contiguous(), cb = b.contiguous();
  if (std::memcmp(ca.data_ptr(), cb.data_ptr(), static_cast<std::size_t>(a.nbytes())) != 0) {
    return ::testing::AssertionFailure() << "bytes differ";
  }
  return ::testing::AssertionSuccess();
}

/// Lane l of the Philox block of stream element i, from the generator alone.
uint32_t stream_word(uint64_t seed, uint64_t offset, uint64_t i) {
  const Uint4 b =
      Philox4x32::generate(Uint4{static_cast<uint32_t>(i / 4 + offset),
                                 static_cast<uint32_t>((i / 4 + offset) >> 32), 0, 0},
                           Uint2{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)});
  const uint32_t w[4] = {b.x, b.y, b.z, b.w};
  return w[i % 4];
}

struct Moments {
  double mean, var, skew, kurt;  // kurt = E[(x - mean)^4] / var^2
};

Moments moments(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  const double m = s / static_cast<double>(v.size());
  double m2 = 0, m3 = 0, m4 = 0;
  for (double x : v) {
    const double d = x - m, d2 = d * d;
    m2 += d2;
    m3 += d2 * d;
    m4 += d2 * d2;
  }
  const double n = static_cast<double>(v.size());
  m2 /= n;
  m3 /= n;
  m4 /= n;
  return {m, m2, m3 / std::pow(m2, 1.5), m4 / (m2 * m2)};
}

TEST(Philox, KnownAnswerVectors) {
  for (const Kat& k : kKats) {
    const Uint4 r = Philox4x32::generate(k.counter, k.key);
    EXPECT_EQ(r.x, k.out.x);
    EXPECT_EQ(r.y, k.out.y);
    EXPECT_EQ(r.z, k.out.z);
    EXPECT_EQ(r.w, k.out.w);
  }
  // A 64-bit seed is the key (low word, high word).
  EXPECT_EQ(Philox4x32::generate(kKats[2].counter, uint64_t{0x299f31d0a4093822}), kKats[2].out);
}

TEST(Philox, CounterIs128BitWithCarry) {
  EXPECT_EQ(philox_counter(5, 7), (Uint4{12, 0, 0, 0}));
  EXPECT_EQ(philox_counter(1, 0xffffffffu), (Uint4{0, 1, 0, 0}));
  EXPECT_EQ(philox_counter(1, std::numeric_limits<uint64_t>::max()), (Uint4{0, 0, 1, 0}));
  EXPECT_EQ(philox_counters(0), 0u);
  EXPECT_EQ(philox_counters(9), 3u);
}

TEST(Philox, UniformConversionsHitTheirEnds) {
  // (x >> 8) * 2^-24: 0 for x = 0, 1 - 2^-24 for the largest word; the (0, 1] form adds 2^-24.
  EXPECT_EQ(uniform01(0u), 0.f);
  EXPECT_EQ(uniform01(0xffffffffu), 1.f - std::ldexp(1.f, -24));
  EXPECT_EQ(uniform01(0x12345678u), static_cast<float>(0x123456) * std::ldexp(1.f, -24));
  EXPECT_EQ(uniform01_open0(0u), std::ldexp(1.f, -24));
  EXPECT_EQ(uniform01_open0(0xffffffffu), 1.f);
  EXPECT_EQ(uniform01_f64(0xffffffffu), 1.0 - std::ldexp(1.0, -32));
  EXPECT_EQ(uniform01_open0_f64(0u), std::ldexp(1.0, -32));
}

TEST(RandUniform, FollowsTheStreamDefinition) {
  const uint64_t seed = 0x0123456789abcdefull, offset = 3;
  const float lo = -1.f, hi = 3.f;
  const int64_t n = 1001;  // not a multiple of 4: the last block is partial
  Tensor t = rand_uniform({n}, DType::kF32, Device::cpu(), ctx_of(seed, offset), lo, hi);
  const std::vector<float> got = t.to_vector<float>();
  for (int64_t i = 0; i < n; ++i) {
    // lo + 4 u is exact in double (24-bit u, power-of-two span), so the float rounding is the only
    // one.
    const double u = static_cast<double>(stream_word(seed, offset, i) >> 8) * std::ldexp(1.0, -24);
    ASSERT_EQ(got[i], static_cast<float>(lo + (hi - lo) * u)) << "element " << i;
  }
}

TEST(RandUniform, F64UsesThirtyTwoBits) {
  const uint64_t seed = 99;
  Tensor t = rand_uniform({37}, DType::kF64, Device::cpu(), ctx_of(seed), 2.f, 4.f);
  const std::vector<double> got = t.to_vector<double>();
  for (int64_t i = 0; i < 37; ++i) {
    // 2 + 2 x 2^-32 is exact in double.
    EXPECT_EQ(got[i], 2.0 + 2.0 * std::ldexp(static_cast<double>(stream_word(seed, 0, i)), -32));
  }
}

TEST(RandNormal, IsBoxMullerOfTheStream) {
  const uint64_t seed = 7, offset = 11;
  const int64_t n = 4099;
  const std::vector<float> got =
      rand_normal({n}, DType::kF32, Device::cpu(), ctx_of(seed, offset)).to_vector<float>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t pair = i - i % 2;  // lanes (x, y) and (z, w) pair up
    const uint32_t a = stream_word(seed, offset, pair), b = stream_word(seed, offset, pair + 1);
    const double u = static_cast<double>((a >> 8) + 1) * std::ldexp(1.0, -24);
    const double v = static_cast<double>(b >> 8) * std::ldexp(1.0, -24);
    const double r = std::sqrt(-2.0 * std::log(u));
    const double want = i % 2 == 0 ? r * std::cos(kTwoPi * v) : r * std::sin(kTwoPi * v);
    // Float Box-Muller (2 pi rounded to float, logf/cosf/sinf) against double: r <= 5.8 and
    // the angle's rounding error (~4e-7 rad) bound the difference by ~3e-6.
    ASSERT_NEAR(got[i], want, 1e-5) << "element " << i;
  }
}

TEST(RandUniform, MomentsOfAMillionSamples) {
  const int64_t n = 1'000'000;
  const std::vector<double> v =
      rand_uniform({n}, DType::kF32, Device::cpu(), ctx_of(2024)).to_vector<double>();
  const Moments m = moments(v);
  const double dn = static_cast<double>(n);
  // 5 sigma bounds: sd(mean) = sqrt(1/12 / n); sd(var) = sqrt((1/80 - 1/144) / n) = sqrt(1/180/n).
  EXPECT_NEAR(m.mean, 0.5, 5 * std::sqrt(1.0 / 12 / dn));
  EXPECT_NEAR(m.var, 1.0 / 12, 5 * std::sqrt(1.0 / 180 / dn));
  double lo = 1, hi = 0;
  for (double x : v) {
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  EXPECT_GE(lo, 0.0);
  EXPECT_LT(hi, 1.0);
  // Uniformity by decile: each count is Binomial(n, 0.1), sd = sqrt(n * 0.09) = 300; 5 sigma.
  std::vector<int64_t> bins(10, 0);
  for (double x : v) ++bins[static_cast<std::size_t>(x * 10)];
  for (int64_t c : bins) EXPECT_NEAR(static_cast<double>(c), 0.1 * dn, 5 * std::sqrt(0.09 * dn));
}

TEST(RandUniform, ScaledRangeMoments) {
  const int64_t n = 1'000'000;
  const double lo = -2, hi = 3, w = hi - lo;
  const Moments m = moments(
      rand_uniform({n}, DType::kF64, Device::cpu(), ctx_of(5), -2.f, 3.f).to_vector<double>());
  const double dn = static_cast<double>(n);
  // 5 sigma: sd(mean) = w sqrt(1/12/n), sd(var) = w^2 sqrt(1/180/n).
  EXPECT_NEAR(m.mean, (lo + hi) / 2, 5 * w * std::sqrt(1.0 / 12 / dn));
  EXPECT_NEAR(m.var, w * w / 12, 5 * w * w * std::sqrt(1.0 / 180 / dn));
}

TEST(RandNormal, MomentsOfAMillionSamples) {
  const int64_t n = 1'000'000;
  const double dn = static_cast<double>(n);
  for (DType t : {DType::kF32, DType::kF64}) {
    const Moments m =
        moments(rand_normal({n}, t, Device::cpu(), ctx_of(31337), 3.f, 2.f).to_vector<double>());
    // 5 sigma for a normal(3, 2): sd(mean) = 2/sqrt(n), sd(var) = 4 sqrt(2/n),
    // sd(skewness) = sqrt(6/n), sd(kurtosis) = sqrt(24/n).
    EXPECT_NEAR(m.mean, 3.0, 5 * 2 / std::sqrt(dn)) << dtype_name(t);
    EXPECT_NEAR(m.var, 4.0, 5 * 4 * std::sqrt(2 / dn)) << dtype_name(t);
    EXPECT_NEAR(m.skew, 0.0, 5 * std::sqrt(6 / dn)) << dtype_name(t);
    EXPECT_NEAR(m.kurt, 3.0, 5 * std::sqrt(24 / dn)) << dtype_name(t);
  }
}

TEST(RandNormal, ZeroStdGivesTheMean) {
  EXPECT_EQ(rand_normal({9}, DType::kF32, Device::cpu(), ctx_of(1), 1.5f, 0.f).to_vector<float>(),
            std::vector<float>(9, 1.5f));
}

TEST(Random, SameSeedSameNumbers) {
  const ExecContext ctx = ctx_of(42, 5);
  EXPECT_TRUE(same_bits(rand_uniform({513}, DType::kF32, Device::cpu(), ctx),
                        rand_uniform({513}, DType::kF32, Device::cpu(), ctx)));
  EXPECT_TRUE(same_bits(rand_normal({513}, DType::kF32, Device::cpu(), ctx),
                        rand_normal({513}, DType::kF32, Device::cpu(), ctx)));
}

TEST(Random, DifferentSeedOrOffsetDifferentNumbers) {
  const auto a = rand_uniform({64}, DType::kF32, Device::cpu(), ctx_of(42, 0)).to_vector<float>();
  const auto b = rand_uniform({64}, DType::kF32, Device::cpu(), ctx_of(43, 0)).to_vector<float>();
  const auto c = rand_uniform({64}, DType::kF32, Device::cpu(), ctx_of(42, 16)).to_vector<float>();
  int same_ab = 0, same_ac = 0;
  for (int i = 0; i < 64; ++i) {
    same_ab += a[i] == b[i];
    same_ac += a[i] == c[i];
  }
  // Two independent 24-bit uniforms coincide with probability 2^-24.
  EXPECT_EQ(same_ab, 0);
  EXPECT_EQ(same_ac, 0);
}

TEST(Random, OffsetShiftsTheStreamByFourElements) {
  const auto base =
      rand_normal({400}, DType::kF32, Device::cpu(), ctx_of(8, 10)).to_vector<float>();
  const auto next =
      rand_normal({396}, DType::kF32, Device::cpu(), ctx_of(8, 11)).to_vector<float>();
  for (int i = 0; i < 396; ++i) ASSERT_EQ(next[i], base[i + 4]) << i;
}

TEST(Random, OffsetCarriesIntoTheHighCounterWord) {
  const uint64_t seed = 3, offset = std::numeric_limits<uint64_t>::max();
  const auto v =
      rand_uniform({8}, DType::kF32, Device::cpu(), ctx_of(seed, offset)).to_vector<float>();
  // Block 1 has counter 2^64: words (0, 0, 1, 0).
  const Uint4 b = Philox4x32::generate(Uint4{0, 0, 1, 0}, Philox4x32::key_of(seed));
  const uint32_t w[4] = {b.x, b.y, b.z, b.w};
  for (int l = 0; l < 4; ++l) {
    EXPECT_EQ(v[4 + l], static_cast<float>(w[l] >> 8) * std::ldexp(1.f, -24));
  }
}

TEST(Random, ThreadCountInvariantBitExact) {
  const int64_t n = 1'000'003;
  for (DType t : {DType::kF32, DType::kF64, DType::kBF16}) {
    const Tensor u1 = rand_uniform({n}, t, Device::cpu(), ctx_of(77, 9, 1));
    const Tensor n1 = rand_normal({n}, t, Device::cpu(), ctx_of(77, 9, 1));
    for (int threads : {2, 0}) {
      EXPECT_TRUE(same_bits(u1, rand_uniform({n}, t, Device::cpu(), ctx_of(77, 9, threads))))
          << dtype_name(t) << " threads " << threads;
      EXPECT_TRUE(same_bits(n1, rand_normal({n}, t, Device::cpu(), ctx_of(77, 9, threads))))
          << dtype_name(t) << " threads " << threads;
    }
  }
}

TEST(Random, HalfTypesRoundTheFloatValues) {
  const ExecContext ctx = ctx_of(12, 1);
  const Tensor f = rand_normal({1000}, DType::kF32, Device::cpu(), ctx);
  for (DType t : {DType::kF16, DType::kBF16}) {
    EXPECT_TRUE(same_bits(rand_normal({1000}, t, Device::cpu(), ctx), f.to(t))) << dtype_name(t);
  }
  const Tensor g = rand_uniform({1000}, DType::kF32, Device::cpu(), ctx, -4.f, 4.f);
  EXPECT_TRUE(same_bits(rand_uniform({1000}, DType::kBF16, Device::cpu(), ctx, -4.f, 4.f),
                        g.to(DType::kBF16)));
}

TEST(Random, FillOfAStridedViewMatchesRowMajorOrder) {
  const ExecContext ctx = ctx_of(21, 2);
  Tensor base = Tensor::zeros({6, 5});
  Tensor tv = base.t();  // (5, 6), strides (1, 5)
  fill_uniform(tv.view(), -1.f, 1.f, ctx);
  EXPECT_TRUE(
      same_bits(tv.contiguous(), rand_uniform({5, 6}, DType::kF32, Device::cpu(), ctx, -1.f, 1.f)));
  fill_normal(tv.view(), 0.f, 1.f, ctx);
  EXPECT_TRUE(same_bits(tv.contiguous(), rand_normal({5, 6}, DType::kF32, Device::cpu(), ctx)));
}

TEST(Random, EmptyShapeIsFine) {
  EXPECT_EQ(rand_uniform({0, 3}, DType::kF32, Device::cpu(), {}).numel(), 0);
  EXPECT_EQ(rand_normal({0}, DType::kF64, Device::cpu(), {}).numel(), 0);
}

TEST(Random, BadInput) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const auto cpu = Device::cpu();
  const auto uniform = [&](DType t, float lo, float hi) {
    return [=] { rand_uniform({4}, t, cpu, {}, lo, hi); };
  };
  const auto normal = [&](DType t, float mean, float std) {
    return [=] { rand_normal({4}, t, cpu, {}, mean, std); };
  };
  const ErrorCode bad = ErrorCode::kInvalidArgument;
  expect_error(uniform(DType::kF32, 1.f, 1.f), bad, "rand_uniform");
  expect_error(uniform(DType::kF32, 2.f, 1.f), bad, "rand_uniform");
  expect_error(uniform(DType::kF32, nan, 1.f), bad, "rand_uniform");
  expect_error(uniform(DType::kF32, 0.f, inf), bad, "rand_uniform");
  expect_error(uniform(DType::kF32, -3e38f, 3e38f), bad, "rand_uniform");  // hi - lo overflows
  expect_error(normal(DType::kF32, 0.f, -1.f), bad, "rand_normal");
  expect_error(normal(DType::kF32, 0.f, nan), bad, "rand_normal");
  expect_error(normal(DType::kF32, 0.f, inf), bad, "rand_normal");
  expect_error(normal(DType::kF32, nan, 1.f), bad, "rand_normal");
  for (DType t : {DType::kI32, DType::kI8, DType::kF8E4M3, DType::kI4, DType::kBool}) {
    expect_error(uniform(t, 0.f, 1.f), ErrorCode::kUnsupported, "rand_uniform");
    expect_error(normal(t, 0.f, 1.f), ErrorCode::kUnsupported, "rand_normal");
  }
  Tensor i = Tensor::zeros({4}, DType::kI32);
  expect_error([&] { fill_uniform(i.view(), 0.f, 1.f); }, ErrorCode::kUnsupported, "fill_uniform");
  expect_error([&] { fill_normal(i.view(), 0.f, 1.f); }, ErrorCode::kUnsupported, "fill_normal");
  Tensor f = Tensor::zeros({4});
  expect_error([&] { fill_uniform(f.view(), 1.f, 0.f); }, bad, "fill_uniform");
  expect_error([&] { fill_normal(f.view(), 0.f, -2.f); }, bad, "fill_normal");
  TensorView null_view = f.view();
  null_view.data = nullptr;
  expect_error([&] { fill_uniform(null_view, 0.f, 1.f); }, bad, "fill_uniform");
  if (!cuda_available()) {
    EXPECT_THROW(rand_uniform({4}, DType::kF32, Device::cuda(), {}), Error);
  }
}

}  // namespace
}  // namespace frugal
