// Low-precision float conversions and i4/u4 packing, checked bit-exactly against independent
// references: codes are decoded from their (sign, exponent, mantissa) fields with ldexp in double,
// per IEEE 754 and the OCP 8-bit Floating Point Specification (OFP8) v1.0, and floats are encoded
// by searching the sorted table of every finite value of the format for the nearest one.
#include "frugal/core/float_types.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "frugal/core/packed.hpp"

namespace frugal {
namespace {

// ---------------------------------------------------------------------------------------------
// Reference model of a binary floating-point format.

struct FormatDef {
  const char* name;
  int exp_bits;
  int man_bits;
  bool has_inf;  // IEEE-style top exponent (Inf/NaN); false = OFP8 E4M3 (only S.1111.111 is NaN)
};

constexpr FormatDef kE4M3Def{"e4m3", 4, 3, false};
constexpr FormatDef kE5M2Def{"e5m2", 5, 2, true};
constexpr FormatDef kHalfDef{"f16", 5, 10, true};
constexpr FormatDef kBF16Def{"bf16", 8, 7, true};

constexpr uint32_t kRefNaN = 0xFFFFFFFFu;  // "the result is a NaN", whatever its bits

int bias_of(const FormatDef& f) { return (1 << (f.exp_bits - 1)) - 1; }
uint32_t num_codes(const FormatDef& f) { return 1u << (1 + f.exp_bits + f.man_bits); }
uint32_t sign_bit(const FormatDef& f) { return 1u << (f.exp_bits + f.man_bits); }

// The value of `code` straight from the format definition.
double ref_decode(const FormatDef& f, uint32_t code) {
  const bool negative = ((code >> (f.exp_bits + f.man_bits)) & 1u) != 0;
  const uint32_t exp = (code >> f.man_bits) & ((1u << f.exp_bits) - 1);
  const uint32_t man = code & ((1u << f.man_bits) - 1);
  const uint32_t exp_all = (1u << f.exp_bits) - 1;
  const uint32_t man_all = (1u << f.man_bits) - 1;
  double mag;
  if (f.has_inf && exp == exp_all) {
    mag = man == 0 ? std::numeric_limits<double>::infinity()
                   : std::numeric_limits<double>::quiet_NaN();
  } else if (!f.has_inf && exp == exp_all && man == man_all) {
    mag = std::numeric_limits<double>::quiet_NaN();
  } else if (exp == 0) {
    // subnormal: 0.m * 2^(1 - bias)
    mag = std::ldexp(static_cast<double>(man), 1 - bias_of(f) - f.man_bits);
  } else {
    // normal: 1.m * 2^(e - bias)
    mag = std::ldexp(1.0 + std::ldexp(static_cast<double>(man), -f.man_bits),
                     static_cast<int>(exp) - bias_of(f));
  }
  return negative ? -mag : mag;
}

// Nearest-value encoder over the table of all finite non-negative values of a format.
class RefEncoder {
 public:
  explicit RefEncoder(const FormatDef& f) : f_(f) {
    std::vector<std::pair<double, uint32_t>> table;
    for (uint32_t c = 0; c < sign_bit(f); ++c) {
      const double v = ref_decode(f, c);
      if (std::isfinite(v)) table.emplace_back(v, c);
    }
    std::sort(table.begin(), table.end());
    for (const auto& [v, c] : table) {
      values_.push_back(v);
      codes_.push_back(c);
    }
    max_code_ = codes_.back();
    // Rounding treats the exponent range as unbounded (IEEE 754 §4.3, OFP8 §5): past the largest
    // finite value lies one more step of the top binade.
    over_value_ = values_.back() + (values_.back() - values_[values_.size() - 2]);
    for (uint32_t c = 0; c < sign_bit(f); ++c) {
      if (std::isinf(ref_decode(f, c))) inf_code_ = c;
    }
  }

  // Code of `x` rounded to nearest, ties to the even code, with the given overflow policy;
  // kRefNaN when the result must be a NaN.
  uint32_t encode(float x, Overflow policy) const {
    if (std::isnan(x)) return kRefNaN;
    const uint32_t sign = std::signbit(x) ? sign_bit(f_) : 0u;
    const uint32_t overflow = policy == Overflow::kSaturate ? max_code_
                              : f_.has_inf                  ? inf_code_
                                                            : kRefNaN;
    const double a = std::fabs(static_cast<double>(x));
    if (std::isinf(a)) return overflow == kRefNaN ? kRefNaN : sign | overflow;
    const size_t hi_idx = std::upper_bound(values_.begin(), values_.end(), a) - values_.begin();
    const double lo = values_[hi_idx - 1];
    const uint32_t lo_code = codes_[hi_idx - 1];
    const bool beyond = hi_idx == values_.size();
    const double hi = beyond ? over_value_ : values_[hi_idx];
    const uint32_t hi_code = beyond ? max_code_ + 1 : codes_[hi_idx];  // parity is what matters
    const double d_lo = a - lo;
    const double d_hi = hi - a;
    bool take_hi = d_hi < d_lo;
    if (d_hi == d_lo) take_hi = (hi_code & 1u) == 0;  // the even mantissa is the even code
    if (!take_hi) return sign | lo_code;
    if (beyond) return overflow == kRefNaN ? kRefNaN : sign | overflow;
    return sign | hi_code;
  }

  const std::vector<double>& values() const { return values_; }
  double over_value() const { return over_value_; }

 private:
  FormatDef f_;
  std::vector<double> values_;
  std::vector<uint32_t> codes_;
  uint32_t max_code_ = 0;
  uint32_t inf_code_ = 0;
  double over_value_ = 0;
};

// The implementation under test, behind one interface per format.
struct Impl {
  FormatDef def;
  uint32_t (*encode)(float, Overflow);
  float (*decode)(uint32_t);
  bool has_policy;  // fp8 takes an Overflow argument; fp16/bf16 always overflow to Inf
};

const Impl kImpls[] = {
    {kE4M3Def, [](float x, Overflow p) -> uint32_t { return float_to_e4m3_bits(x, p); },
     [](uint32_t c) { return e4m3_bits_to_float(static_cast<uint8_t>(c)); }, true},
    {kE5M2Def, [](float x, Overflow p) -> uint32_t { return float_to_e5m2_bits(x, p); },
     [](uint32_t c) { return e5m2_bits_to_float(static_cast<uint8_t>(c)); }, true},
    {kHalfDef, [](float x, Overflow) -> uint32_t { return float_to_half_bits(x); },
     [](uint32_t c) { return half_bits_to_float(static_cast<uint16_t>(c)); }, false},
    {kBF16Def, [](float x, Overflow) -> uint32_t { return float_to_bf16_bits(x); },
     [](uint32_t c) { return bf16_bits_to_float(static_cast<uint16_t>(c)); }, false},
};

std::string hex(uint64_t v) {
  std::ostringstream s;
  s << "0x" << std::hex << v;
  return s.str();
}

std::string float_desc(float x) {
  std::ostringstream s;
  s.precision(9);
  s << x << " (" << hex(std::bit_cast<uint32_t>(x)) << ")";
  return s.str();
}

// Records mismatches, printing only the first few so a broken conversion does not flood the log.
class Mismatches {
 public:
  explicit Mismatches(std::string what) : what_(std::move(what)) {}
  ~Mismatches() {
    if (count_ > 0) ADD_FAILURE() << what_ << ": " << count_ << " mismatches";
  }
  void add(const std::string& msg) {
    if (count_++ < 8) ADD_FAILURE() << what_ << ": " << msg;
  }

 private:
  std::string what_;
  int64_t count_ = 0;
};

// Checks one encode against the reference; returns nothing, records into `bad`.
void check_encode(const Impl& impl, const RefEncoder& ref, float x, Overflow policy,
                  Mismatches& bad) {
  const uint32_t want = ref.encode(x, policy);
  const uint32_t got = impl.encode(x, policy);
  if (want == kRefNaN) {
    if (got >= num_codes(impl.def) || !std::isnan(ref_decode(impl.def, got))) {
      bad.add(float_desc(x) + " gave " + hex(got) + ", want a NaN");
    }
  } else if (got != want) {
    bad.add(float_desc(x) + " gave " + hex(got) + ", want " + hex(want));
  }
}

std::vector<Overflow> policies_of(const Impl& impl) {
  if (impl.has_policy) return {Overflow::kSaturate, Overflow::kNonSaturate};
  return {Overflow::kNonSaturate};
}

// Floats that probe every rounding decision of a format: each value, each midpoint between
// neighbours (and past the largest finite value), and the float ulp on either side of those.
std::vector<float> boundary_floats(const RefEncoder& ref) {
  std::vector<double> points;
  const std::vector<double>& v = ref.values();
  for (size_t i = 0; i < v.size(); ++i) {
    points.push_back(v[i]);
    const double next = i + 1 < v.size() ? v[i + 1] : ref.over_value();
    points.push_back(0.5 * (v[i] + next));
  }
  points.push_back(ref.over_value());
  points.push_back(2 * ref.over_value());
  std::vector<float> out;
  const float inf = std::numeric_limits<float>::infinity();
  for (double p : points) {
    // bf16 shares float's exponent range: its points past the largest float are not floats
    // (Inf, among the special floats, covers them).
    if (p > std::numeric_limits<float>::max()) continue;
    const float f = static_cast<float>(p);
    EXPECT_EQ(static_cast<double>(f), p) << "probe point not a float";
    for (float g : {f, std::nextafter(f, inf), std::nextafter(f, -inf)}) {
      out.push_back(g);
      out.push_back(-g);
    }
  }
  return out;
}

std::vector<float> special_floats() {
  using L = std::numeric_limits<float>;
  return {0.f,
          -0.f,
          L::infinity(),
          -L::infinity(),
          L::quiet_NaN(),
          -L::quiet_NaN(),
          L::signaling_NaN(),
          L::max(),
          -L::max(),
          L::min(),
          -L::min(),
          L::denorm_min(),
          -L::denorm_min(),
          std::bit_cast<float>(0x7F800001u),
          std::bit_cast<float>(0xFFFFFFFFu),
          std::bit_cast<float>(0x7F80FFFFu),
          1e-30f,
          1e30f};
}

// Fixed-seed random floats: raw bit patterns (every exponent, NaNs included) and values whose
// exponent lies in and around the format's range, where the interesting roundings happen.
std::vector<float> random_floats(const FormatDef& f, int n) {
  std::mt19937 gen(20240601u + static_cast<unsigned>(f.exp_bits * 16 + f.man_bits));
  std::vector<float> out;
  const int bias = bias_of(f);
  std::uniform_int_distribution<int> exp_dist(-bias - f.man_bits - 3, bias + 3);
  for (int i = 0; i < n; ++i) {
    const uint32_t raw = static_cast<uint32_t>(gen());
    out.push_back(std::bit_cast<float>(raw));
    const int e = std::max(-149, exp_dist(gen));
    const float near = std::ldexp(1.0f + std::ldexp(static_cast<float>(raw & 0x7FFFFFu), -23), e);
    out.push_back((raw >> 31) != 0 ? -near : near);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Conversions.

TEST(FloatTypes, DecodeEveryCodeMatchesDefinition) {
  for (const Impl& impl : kImpls) {
    Mismatches bad(std::string(impl.def.name) + " decode");
    for (uint32_t c = 0; c < num_codes(impl.def); ++c) {
      const double want = ref_decode(impl.def, c);
      const float got = impl.decode(c);
      if (std::isnan(want)) {
        if (!std::isnan(got)) bad.add(hex(c) + " should be NaN, got " + float_desc(got));
      } else if (static_cast<double>(got) != want || std::signbit(got) != std::signbit(want)) {
        bad.add(hex(c) + " gave " + float_desc(got));
      }
    }
  }
}

TEST(FloatTypes, EveryCodeRoundTrips) {
  for (const Impl& impl : kImpls) {
    for (Overflow policy : policies_of(impl)) {
      Mismatches bad(std::string(impl.def.name) + " round trip");
      for (uint32_t c = 0; c < num_codes(impl.def); ++c) {
        const float x = impl.decode(c);
        const uint32_t back = impl.encode(x, policy);
        const double ref = ref_decode(impl.def, c);
        if (std::isnan(ref)) {
          if (back >= num_codes(impl.def) || !std::isnan(ref_decode(impl.def, back))) {
            bad.add("NaN " + hex(c) + " came back as " + hex(back));
          }
        } else if (std::isinf(ref) && policy == Overflow::kSaturate) {
          // saturation maps ±Inf to the largest finite value of the same sign
          const double sat = ref_decode(impl.def, back);
          if (!std::isfinite(sat) || std::signbit(sat) != std::signbit(ref)) {
            bad.add("Inf " + hex(c) + " saturated to " + hex(back));
          }
        } else if (back != c) {
          bad.add(hex(c) + " came back as " + hex(back));
        }
      }
    }
  }
}

TEST(FloatTypes, EncodeBoundaryFloatsMatchesNearestValue) {
  for (const Impl& impl : kImpls) {
    const RefEncoder ref(impl.def);
    const std::vector<float> xs = boundary_floats(ref);
    for (Overflow policy : policies_of(impl)) {
      Mismatches bad(std::string(impl.def.name) + " boundary encode" +
                     (policy == Overflow::kSaturate ? " (saturate)" : " (non-saturate)"));
      for (float x : xs) check_encode(impl, ref, x, policy, bad);
    }
  }
}

TEST(FloatTypes, EncodeSpecialAndRandomFloatsMatchesNearestValue) {
  for (const Impl& impl : kImpls) {
    const RefEncoder ref(impl.def);
    std::vector<float> xs = special_floats();
    const std::vector<float> rnd = random_floats(impl.def, 100000);
    xs.insert(xs.end(), rnd.begin(), rnd.end());
    for (Overflow policy : policies_of(impl)) {
      Mismatches bad(std::string(impl.def.name) + " random encode" +
                     (policy == Overflow::kSaturate ? " (saturate)" : " (non-saturate)"));
      for (float x : xs) check_encode(impl, ref, x, policy, bad);
    }
  }
}

// Published values: OFP8 v1.0 Table 1 and 2, IEEE 754 binary16, bfloat16 as the upper half of
// binary32.
TEST(FloatTypes, KnownValues) {
  constexpr Overflow kSat = Overflow::kSaturate;
  constexpr Overflow kNon = Overflow::kNonSaturate;
  // E4M3
  EXPECT_EQ(float_to_e4m3_bits(448.f, kNon), 0x7E);
  EXPECT_EQ(float_to_e4m3_bits(-448.f, kNon), 0xFE);
  EXPECT_EQ(float_to_e4m3_bits(std::ldexp(1.f, -9), kNon), 0x01);  // min subnormal
  EXPECT_EQ(float_to_e4m3_bits(std::ldexp(1.f, -6), kNon), 0x08);  // min normal
  EXPECT_EQ(float_to_e4m3_bits(std::ldexp(7.f, -9), kNon), 0x07);  // max subnormal 0.875 * 2^-6
  EXPECT_EQ(float_to_e4m3_bits(1.f, kNon), 0x38);
  EXPECT_EQ(float_to_e4m3_bits(-2.f, kNon), 0xC0);
  EXPECT_EQ(float_to_e4m3_bits(464.f, kNon), 0x7E);  // tie between 448 (even) and 480
  EXPECT_TRUE(std::isnan(e4m3_bits_to_float(float_to_e4m3_bits(465.f, kNon))));
  EXPECT_EQ(float_to_e4m3_bits(465.f, kSat), 0x7E);
  EXPECT_EQ(float_to_e4m3_bits(1e30f, kSat), 0x7E);
  EXPECT_EQ(float_to_e4m3_bits(-std::numeric_limits<float>::infinity(), kSat), 0xFE);
  EXPECT_EQ(float_to_e4m3_bits(std::numeric_limits<float>::quiet_NaN(), kSat) & 0x7F, 0x7F);
  EXPECT_EQ(float_to_e4m3_bits(-0.f, kSat), 0x80);
  EXPECT_EQ(float_to_e4m3_bits(std::ldexp(1.f, -10), kSat), 0x00);   // tie with 2^-9 goes to 0
  EXPECT_EQ(float_to_e4m3_bits(-std::ldexp(1.f, -11), kSat), 0x80);  // underflow keeps the sign
  EXPECT_EQ(e4m3_bits_to_float(0x7E), kMaxE4M3);
  EXPECT_EQ(e4m3_bits_to_float(0x01), std::ldexp(1.f, -9));
  EXPECT_TRUE(std::isnan(e4m3_bits_to_float(0x7F)));
  EXPECT_TRUE(std::isnan(e4m3_bits_to_float(0xFF)));
  EXPECT_EQ(e4m3_bits_to_float(0x78), 256.f);  // top exponent holds normal values in E4M3
  // E5M2
  EXPECT_EQ(float_to_e5m2_bits(57344.f, kNon), 0x7B);
  EXPECT_EQ(float_to_e5m2_bits(std::ldexp(1.f, -16), kNon), 0x01);  // min subnormal
  EXPECT_EQ(float_to_e5m2_bits(std::ldexp(1.f, -14), kNon), 0x04);  // min normal
  EXPECT_EQ(float_to_e5m2_bits(1.f, kNon), 0x3C);
  EXPECT_EQ(float_to_e5m2_bits(61440.f, kNon), 0x7C);  // tie between 57344 (odd) and 2^16
  EXPECT_EQ(float_to_e5m2_bits(61439.f, kNon), 0x7B);
  EXPECT_EQ(float_to_e5m2_bits(61440.f, kSat), 0x7B);
  EXPECT_EQ(float_to_e5m2_bits(-std::numeric_limits<float>::infinity(), kNon), 0xFC);
  EXPECT_EQ(float_to_e5m2_bits(std::numeric_limits<float>::infinity(), kSat), 0x7B);
  EXPECT_EQ(e5m2_bits_to_float(0x7B), kMaxE5M2);
  EXPECT_EQ(e5m2_bits_to_float(0x7C), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(e5m2_bits_to_float(0x7D)));
  // binary16
  EXPECT_EQ(float_to_half_bits(65504.f), 0x7BFF);
  EXPECT_EQ(float_to_half_bits(65519.f), 0x7BFF);
  EXPECT_EQ(float_to_half_bits(65520.f), 0x7C00);  // tie past the max rounds to Inf
  EXPECT_EQ(float_to_half_bits(1.f), 0x3C00);
  EXPECT_EQ(float_to_half_bits(-2.f), 0xC000);
  EXPECT_EQ(float_to_half_bits(std::ldexp(1.f, -24)), 0x0001);  // min subnormal
  EXPECT_EQ(float_to_half_bits(std::ldexp(1.f, -14)), 0x0400);  // min normal
  EXPECT_EQ(float_to_half_bits(1.f / 3.f), 0x3555);
  EXPECT_EQ(half_bits_to_float(0x7BFF), kMaxHalf);
  EXPECT_EQ(half_bits_to_float(0x3555), 0.333251953125f);
  EXPECT_EQ(half_bits_to_float(0x0001), std::ldexp(1.f, -24));
  EXPECT_EQ(float_to_half_bits(std::numeric_limits<float>::quiet_NaN()) & 0x7E00, 0x7E00);
  // bfloat16
  EXPECT_EQ(float_to_bf16_bits(1.f), 0x3F80);
  EXPECT_EQ(float_to_bf16_bits(-2.f), 0xC000);
  EXPECT_EQ(float_to_bf16_bits(1.f / 3.f), 0x3EAB);  // 0x3EAAAAAB rounds up, not truncated
  EXPECT_EQ(float_to_bf16_bits(std::bit_cast<float>(0x3F808000u)), 0x3F80);  // tie to even
  EXPECT_EQ(float_to_bf16_bits(std::bit_cast<float>(0x3F818000u)), 0x3F82);  // tie to even
  EXPECT_EQ(float_to_bf16_bits(std::numeric_limits<float>::max()), 0x7F80);
  // a NaN whose payload is only in the low half must stay NaN (truncation would make it Inf)
  EXPECT_EQ(float_to_bf16_bits(std::bit_cast<float>(0x7F800001u)), 0x7FC0);
  EXPECT_EQ(float_to_bf16_bits(std::bit_cast<float>(0xFF800001u)), 0xFFC0);
  EXPECT_EQ(bf16_bits_to_float(0x3F80), 1.f);
  EXPECT_EQ(bf16_bits_to_float(0x0001), std::bit_cast<float>(0x00010000u));  // subnormal
}

// float -> bf16 over every sign and exponent (subnormals, Inf and NaN included): each of the 128
// kept mantissas with dropped halves at and around every rounding decision (0, 1, just below, at
// and above one half ulp, all ones) plus random ones, and every dropped half for a few kept
// mantissas of the smallest, middle and largest exponents. Against the nearest-value reference;
// a NaN must give exactly the quiet NaN 0x7FC0 with the sign kept.
TEST(FloatTypes, Bf16EncodeEveryExponentDenseMantissas) {
  const RefEncoder ref(kBF16Def);
  Mismatches bad("bf16 dense encode");
  const auto check = [&](uint32_t u) {
    const float x = std::bit_cast<float>(u);
    const uint32_t got = float_to_bf16_bits(x);
    if (std::isnan(x)) {
      const uint32_t want = ((u >> 16) & 0x8000u) | 0x7FC0u;
      if (got != want) bad.add(float_desc(x) + " gave " + hex(got) + ", want " + hex(want));
      return;
    }
    const uint32_t want = ref.encode(x, Overflow::kNonSaturate);
    if (got != want) bad.add(float_desc(x) + " gave " + hex(got) + ", want " + hex(want));
  };
  std::mt19937 gen(7);
  std::vector<uint32_t> lows = {0x0000, 0x0001, 0x0002, 0x3FFF, 0x4000, 0x7FFE, 0x7FFF,
                                0x8000, 0x8001, 0x8002, 0xBFFF, 0xC000, 0xFFFE, 0xFFFF};
  for (int i = 0; i < 18; ++i) lows.push_back(gen() & 0xFFFFu);
  int64_t checked = 0;
  for (uint32_t sign_exp = 0; sign_exp < 512; ++sign_exp) {
    for (uint32_t kept = 0; kept < 128; ++kept) {
      for (uint32_t low : lows) {
        check((sign_exp << 23) | (kept << 16) | low);
        ++checked;
      }
    }
  }
  for (uint32_t exp : {0u, 1u, 127u, 254u, 255u}) {
    for (uint32_t sign : {0u, 1u}) {
      for (uint32_t kept : {0u, 1u, 0x40u, 0x7Fu}) {
        for (uint32_t low = 0; low < 65536; ++low) {
          check((sign << 31) | (exp << 23) | (kept << 16) | low);
          ++checked;
        }
      }
    }
  }
  EXPECT_GT(checked, 4000000);
}

// The conversions are constexpr, so compile-time tables of fp8/fp16 constants are possible.
static_assert(float_to_e4m3_bits(448.f, Overflow::kSaturate) == 0x7E);
static_assert(float_to_e5m2_bits(-57344.f, Overflow::kNonSaturate) == 0xFB);
static_assert(half_bits_to_float(0x3C00) == 1.f);
static_assert(float_to_bf16_bits(1.f) == 0x3F80);
static_assert(static_cast<float>(Float8E4M3(1000.f)) == 448.f);
static_assert(Half::from_bits(0x7BFF).bits == 0x7BFF);

TEST(FloatTypes, TypesUseTheDocumentedConversions) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::is_trivially_copyable_v<Half>);
  EXPECT_EQ(Half(65520.f).bits, 0x7C00);  // IEEE: overflow to Inf
  EXPECT_EQ(BFloat16(inf).bits, 0x7F80);
  EXPECT_EQ(Float8E4M3(1e9f).bits, 0x7E);  // fp8 constructors saturate
  EXPECT_EQ(Float8E4M3(-inf).bits, 0xFE);
  EXPECT_EQ(Float8E5M2(inf).bits, 0x7B);
  EXPECT_EQ(Float8E5M2(-61440.f).bits, 0xFB);
  EXPECT_TRUE(std::isnan(static_cast<float>(Float8E4M3(nan))));
  EXPECT_TRUE(std::isnan(static_cast<float>(Float8E5M2(nan))));
  EXPECT_TRUE(std::isnan(static_cast<float>(Half(nan))));
  EXPECT_TRUE(std::isnan(static_cast<float>(BFloat16(nan))));
  EXPECT_EQ(Half{}.bits, 0);  // value-initialization is +0
  // Constructors and float() agree with the free functions on every code.
  for (uint32_t c = 0; c < 256; ++c) {
    const auto b = static_cast<uint8_t>(c);
    const float e4 = e4m3_bits_to_float(b);
    const float e5 = e5m2_bits_to_float(b);
    EXPECT_EQ(std::bit_cast<uint32_t>(static_cast<float>(Float8E4M3::from_bits(b))),
              std::bit_cast<uint32_t>(e4));
    EXPECT_EQ(std::bit_cast<uint32_t>(static_cast<float>(Float8E5M2::from_bits(b))),
              std::bit_cast<uint32_t>(e5));
    EXPECT_EQ(Float8E4M3(e4).bits, float_to_e4m3_bits(e4, Overflow::kSaturate));
    EXPECT_EQ(Float8E5M2(e5).bits, float_to_e5m2_bits(e5, Overflow::kSaturate));
  }
  for (uint32_t c = 0; c < 65536; c += 7) {
    const auto b = static_cast<uint16_t>(c);
    const float h = half_bits_to_float(b);
    const float bf = bf16_bits_to_float(b);
    EXPECT_EQ(std::bit_cast<uint32_t>(static_cast<float>(Half::from_bits(b))),
              std::bit_cast<uint32_t>(h));
    EXPECT_EQ(std::bit_cast<uint32_t>(static_cast<float>(BFloat16::from_bits(b))),
              std::bit_cast<uint32_t>(bf));
    EXPECT_EQ(Half(h).bits, float_to_half_bits(h));
    EXPECT_EQ(BFloat16(bf).bits, float_to_bf16_bits(bf));
  }
}

// ---------------------------------------------------------------------------------------------
// i4 / u4 packing: element 2k in the low nibble of byte k.

int i4_of_nibble(int nibble) { return nibble < 8 ? nibble : nibble - 16; }  // two's complement
int nibble_of_i4(int v) { return v < 0 ? v + 16 : v; }

TEST(PackedInt4, EveryByteUnpacksAndRepacks) {
  for (int b = 0; b < 256; ++b) {
    const auto byte = static_cast<uint8_t>(b);
    const int lo = b % 16;
    const int hi = b / 16;
    EXPECT_EQ(unpack_i4_lo(byte), i4_of_nibble(lo)) << b;
    EXPECT_EQ(unpack_i4_hi(byte), i4_of_nibble(hi)) << b;
    EXPECT_EQ(unpack_u4_lo(byte), lo) << b;
    EXPECT_EQ(unpack_u4_hi(byte), hi) << b;
    EXPECT_EQ(pack_i4(unpack_i4_lo(byte), unpack_i4_hi(byte)), byte) << b;
    EXPECT_EQ(pack_u4(unpack_u4_lo(byte), unpack_u4_hi(byte)), byte) << b;
  }
}

TEST(PackedInt4, EveryPairPacks) {
  for (int lo = -8; lo <= 7; ++lo) {
    for (int hi = -8; hi <= 7; ++hi) {
      const uint8_t b = pack_i4(static_cast<int8_t>(lo), static_cast<int8_t>(hi));
      EXPECT_EQ(b, nibble_of_i4(lo) + 16 * nibble_of_i4(hi)) << lo << " " << hi;
      EXPECT_EQ(unpack_i4_lo(b), lo);
      EXPECT_EQ(unpack_i4_hi(b), hi);
    }
  }
  for (int lo = 0; lo <= 15; ++lo) {
    for (int hi = 0; hi <= 15; ++hi) {
      const uint8_t b = pack_u4(static_cast<uint8_t>(lo), static_cast<uint8_t>(hi));
      EXPECT_EQ(b, lo + 16 * hi);
    }
  }
  EXPECT_EQ(pack_i4(-1, -8), 0x8F);
  EXPECT_EQ(pack_i4(7, 1), 0x17);
}

TEST(PackedInt4, BufferRoundTripIncludingOddLengths) {
  std::mt19937 gen(7);
  std::uniform_int_distribution<int> i4(-8, 7);
  std::uniform_int_distribution<int> u4(0, 15);
  constexpr uint8_t kGuard = 0xA5;
  for (int64_t n : {0, 1, 2, 3, 4, 5, 7, 8, 1001, 1024}) {
    const int64_t nbytes = (n + 1) / 2;
    std::vector<int8_t> s(n);
    std::vector<uint8_t> su(n);
    for (auto& v : s) v = static_cast<int8_t>(i4(gen));
    for (auto& v : su) v = static_cast<uint8_t>(u4(gen));

    std::vector<uint8_t> packed(nbytes + 1, kGuard);
    pack_i4(s.data(), packed.data(), n);
    EXPECT_EQ(packed[nbytes], kGuard) << "wrote past (n + 1) / 2 bytes, n=" << n;
    for (int64_t i = 0; i < n; ++i) {
      const int nib = (packed[i / 2] >> (4 * (i % 2))) & 0xF;
      ASSERT_EQ(i4_of_nibble(nib), s[i]) << "n=" << n << " i=" << i;
    }
    if (n % 2 != 0) {
      EXPECT_EQ(packed[nbytes - 1] >> 4, 0) << "n=" << n;
    }
    std::vector<int8_t> back(n + 1, 99);
    unpack_i4(packed.data(), back.data(), n);
    EXPECT_EQ(back[n], 99);
    back.pop_back();
    EXPECT_EQ(back, s) << "n=" << n;

    std::vector<uint8_t> packed_u(nbytes + 1, kGuard);
    pack_u4(su.data(), packed_u.data(), n);
    EXPECT_EQ(packed_u[nbytes], kGuard) << "n=" << n;
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ((packed_u[i / 2] >> (4 * (i % 2))) & 0xF, su[i]) << "n=" << n << " i=" << i;
    }
    if (n % 2 != 0) {
      EXPECT_EQ(packed_u[nbytes - 1] >> 4, 0) << "n=" << n;
    }
    std::vector<uint8_t> back_u(n + 1, 99);
    unpack_u4(packed_u.data(), back_u.data(), n);
    EXPECT_EQ(back_u[n], 99);
    back_u.pop_back();
    EXPECT_EQ(back_u, su) << "n=" << n;
  }
}

}  // namespace
}  // namespace frugal
