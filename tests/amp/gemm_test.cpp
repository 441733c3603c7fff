// amp::gemm on the CPU against a double-precision scalar reference on the decoded inputs: every
// supported input product is exact in fp32, so the only error is the fp32 accumulation (and the
// rounding of C to its dtype), bounded per element below. Covers every dtype pair, transposes,
// batches, alpha / beta, the fp8 scales, output dtypes, the portable (no oneDNN) path, an exact
// integer case and bad input ("[amp::gemm]").
#include "frugal/amp/gemm.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "amp/gemm_internal.hpp"
#include "amp/gemm_reference.hpp"
#include "frugal/core.hpp"
#include "support/check.hpp"
#include "support/tolerance.hpp"

namespace frugal::amp {
namespace {

using frugal::testing::expect_error;
using frugal::testing::random_uniform;
using testing::matches;
using testing::Ref;
using testing::reference;

constexpr const char* kOp = "amp::gemm";

// Random values of dtype t with a spread of magnitudes: uniform in [-lo_hi, lo_hi], rounded to t.
Tensor random_in(DType t, Shape shape, uint32_t seed, float range = 4.f) {
  return random_uniform(shape, seed, -range, range).to(t);
}

struct Pair {
  DType a, b;
};
const Pair kPairs[] = {{DType::kBF16, DType::kBF16},     {DType::kF16, DType::kF16},
                       {DType::kF8E4M3, DType::kF8E4M3}, {DType::kF8E4M3, DType::kF8E5M2},
                       {DType::kF8E5M2, DType::kF8E4M3}, {DType::kF8E5M2, DType::kF8E5M2}};

Shape stored(int64_t batch, int64_t rows, int64_t cols, bool trans) {
  if (batch == 0) return trans ? Shape{cols, rows} : Shape{rows, cols};
  return trans ? Shape{batch, cols, rows} : Shape{batch, rows, cols};
}

void check_case(Pair p, int64_t batch, int64_t m, int64_t n, int64_t k, const GemmOptions& o,
                DType c_dtype, uint32_t seed) {
  SCOPED_TRACE(std::string(dtype_name(p.a)) + " x " + std::string(dtype_name(p.b)) + " -> " +
               std::string(dtype_name(c_dtype)) + (o.trans_a ? " trans_a" : "") +
               (o.trans_b ? " trans_b" : "") + " batch " + std::to_string(batch));
  const Tensor a = random_in(p.a, stored(batch, m, k, o.trans_a), seed);
  const Tensor b = random_in(p.b, stored(batch, k, n, o.trans_b), seed + 1);
  const Shape cs = batch == 0 ? Shape{m, n} : Shape{batch, m, n};
  if (o.beta == 0.f) {
    const Tensor c = amp::gemm(a.cview(), b.cview(), c_dtype, o);
    EXPECT_EQ(c.dtype(), c_dtype);
    EXPECT_TRUE(c.shape() == cs);
    EXPECT_TRUE(matches(c, reference(a, b, {}, c_dtype, o)));
  } else {
    Tensor c = random_in(c_dtype, cs, seed + 2);
    const std::vector<double> c0 = c.to_vector<double>();
    amp::gemm_into(a.cview(), b.cview(), c.view(), o);
    EXPECT_TRUE(matches(c, reference(a, b, c0, c_dtype, o)));
  }
}

TEST(AmpGemm, EveryDtypePairMatchesDoubleReference) {
  for (const Pair& p : kPairs) check_case(p, 0, 37, 29, 53, {}, DType::kF32, 1);
}

TEST(AmpGemm, Transposes) {
  for (const Pair& p : kPairs) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        GemmOptions o;
        o.trans_a = ta;
        o.trans_b = tb;
        check_case(p, 0, 19, 33, 24, o, DType::kF32, 2);
      }
    }
  }
}

TEST(AmpGemm, Batched) {
  for (const Pair& p : {kPairs[0], kPairs[1], kPairs[3]}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        GemmOptions o;
        o.trans_a = ta;
        o.trans_b = tb;
        check_case(p, 3, 17, 12, 40, o, DType::kF32, 3);
      }
    }
  }
}

TEST(AmpGemm, AlphaBetaAndScales) {
  GemmOptions o;
  o.alpha = -0.75f;
  o.beta = 1.5f;
  o.a_scale = 0.125f;
  o.b_scale = 3.f;
  for (const Pair& p : kPairs) check_case(p, 0, 21, 18, 35, o, DType::kF32, 4);
  o.trans_b = true;
  check_case(kPairs[2], 2, 16, 16, 32, o, DType::kF32, 5);
}

TEST(AmpGemm, LowPrecisionOutputs) {
  for (DType out : {DType::kBF16, DType::kF16}) {
    for (const Pair& p : {kPairs[0], kPairs[1], kPairs[2]}) {
      check_case(p, 0, 23, 31, 45, {}, out, 6);
      GemmOptions o;
      o.beta = 1.f;
      o.alpha = 0.5f;
      check_case(p, 2, 9, 14, 20, o, out, 7);
    }
  }
}

TEST(AmpGemm, LongSumsStayWithinTheFp32Bound) {
  // K = 4096: the fp32 accumulation error is visible, the bound K * 2^-24 * sum |ab| holds.
  check_case(kPairs[0], 0, 8, 8, 4096, {}, DType::kF32, 8);
  check_case(kPairs[3], 0, 8, 8, 4096, {}, DType::kF32, 9);
}

TEST(AmpGemm, SmallIntegerFp8ProductsAreExact) {
  // Integers in [-7, 7] are exact in e4m3 and e5m2 and every partial sum (|.| <= 49 K) is an
  // integer below 2^24, so fp32 accumulation in any order is exact: equal to the double sum.
  const int64_t m = 16, n = 24, k = 64;
  std::vector<float> av(m * k), bv(k * n);
  for (size_t i = 0; i < av.size(); ++i)
    av[i] = static_cast<float>(static_cast<int>(i * 7 % 15) - 7);
  for (size_t i = 0; i < bv.size(); ++i)
    bv[i] = static_cast<float>(static_cast<int>(i * 11 % 15) - 7);
  const Tensor a = Tensor::from_vector(av, {m, k}).to(DType::kF8E4M3);
  const Tensor b = Tensor::from_vector(bv, {k, n}).to(DType::kF8E5M2);
  const Tensor c = amp::gemm(a.cview(), b.cview());
  const Ref r = reference(a, b, {}, DType::kF32, {});
  EXPECT_TRUE(frugal::testing::all_close(c.to_vector<double>(), r.value, 0.0, 0.0));
}

TEST(AmpGemm, PortablePathMatchesReference) {
  // The path used without oneDNN (decode to f32, Eigen), called directly.
  for (const Pair& p : {kPairs[0], kPairs[1], kPairs[4]}) {
    GemmOptions o;
    o.trans_a = true;
    o.alpha = 2.f;
    o.beta = -1.f;
    o.a_scale = 0.5f;
    const Tensor a = random_in(p.a, {2, 30, 11}, 10), b = random_in(p.b, {2, 30, 13}, 11);
    Tensor c = random_in(DType::kBF16, {2, 11, 13}, 12);
    const std::vector<double> c0 = c.to_vector<double>();
    cpu::amp_gemm_portable(a.cview(), b.cview(), c.view(), o, {});
    EXPECT_TRUE(matches(c, reference(a, b, c0, DType::kBF16, o)));
  }
}

TEST(AmpGemm, ThreadCountDoesNotChangeBits) {
  // The row-block split (Eigen) and oneDNN's M / N partition do not split K for this shape, so 1
  // and 2 threads sum in the same order; shapes where oneDNN splits K may differ in the last bits.
  const Tensor a = random_in(DType::kBF16, {96, 80}, 13), b = random_in(DType::kBF16, {80, 72}, 14);
  const Tensor c1 = amp::gemm(a.cview(), b.cview(), DType::kF32, {}, frugal::testing::threads(1));
  const Tensor c2 = amp::gemm(a.cview(), b.cview(), DType::kF32, {}, frugal::testing::threads(2));
  EXPECT_TRUE(matches(c1, reference(a, b, {}, DType::kF32, {})));
  EXPECT_TRUE(matches(c2, reference(a, b, {}, DType::kF32, {})));
  EXPECT_TRUE(frugal::testing::same_bits(c1, c2));
}

TEST(AmpGemm, EmptyOperands) {
  const Tensor a = Tensor::zeros({4, 0}, DType::kBF16), b = Tensor::zeros({0, 5}, DType::kBF16);
  const Tensor c = amp::gemm(a.cview(), b.cview());
  EXPECT_TRUE(frugal::testing::all_equal(c, Tensor::zeros({4, 5})));
  Tensor c2 = Tensor::full({4, 5}, 2.0);
  GemmOptions o;
  o.beta = 0.5f;
  amp::gemm_into(a.cview(), b.cview(), c2.view(), o);
  EXPECT_TRUE(frugal::testing::all_equal(c2, Tensor::full({4, 5}, 1.0)));
  const Tensor e = amp::gemm(Tensor::zeros({0, 3}, DType::kF8E4M3).cview(),
                             Tensor::zeros({3, 2}, DType::kF8E4M3).cview());
  EXPECT_EQ(e.numel(), 0);
}

TEST(AmpGemm, BadInput) {
  const Tensor a = random_in(DType::kBF16, {4, 6}, 1), b = random_in(DType::kBF16, {6, 5}, 2);
  const Tensor h = random_in(DType::kF16, {6, 5}, 2), e = random_in(DType::kF8E4M3, {6, 5}, 2);
  const Tensor f = random_uniform({6, 5}, 3);
  Tensor c = Tensor::zeros({4, 5});
  auto bad = [&](auto fn) { expect_error(fn, ErrorCode::kInvalidArgument, kOp); };
  bad([&] { amp::gemm(f.cview(), f.cview()); });                                     // f32 inputs
  bad([&] { amp::gemm(a.cview(), h.cview()); });                                     // bf16 x f16
  bad([&] { amp::gemm(a.cview(), e.cview()); });                                     // bf16 x fp8
  bad([&] { amp::gemm(random_in(DType::kF8E5M2, {4, 6}, 1).cview(), h.cview()); });  // fp8 x f16
  bad([&] { amp::gemm(a.cview(), b.cview(), DType::kI32); });                        // output dtype
  bad([&] { amp::gemm(a.cview(), b.cview(), DType::kF8E4M3); });                     // fp8 output
  bad([&] { amp::gemm(a.reshape({24}).cview(), b.cview()); });                       // rank 1
  bad([&] { amp::gemm(a.reshape({1, 4, 6}).cview(), b.cview()); });  // rank mismatch
  bad([&] {
    amp::gemm(random_in(DType::kBF16, {2, 4, 6}, 1).cview(),
              random_in(DType::kBF16, {3, 6, 5}, 1).cview());
  });                                             // batch mismatch
  bad([&] { amp::gemm(a.cview(), a.cview()); });  // inner dims
  GemmOptions t;
  t.trans_a = true;
  bad([&] { amp::gemm(a.cview(), b.cview(), DType::kF32, t); });  // inner dims, trans
  bad([&] { amp::gemm(b.t().cview(), b.cview()); });              // non-contiguous
  for (float s : {0.f, -1.f, std::nanf(""), INFINITY}) {
    GemmOptions o;
    o.a_scale = s;
    bad([&] { amp::gemm(a.cview(), b.cview(), DType::kF32, o); });
    o.a_scale = 1.f;
    o.b_scale = s;
    bad([&] { amp::gemm(a.cview(), b.cview(), DType::kF32, o); });
  }
  GemmOptions na;
  na.alpha = std::nanf("");
  bad([&] { amp::gemm(a.cview(), b.cview(), DType::kF32, na); });
  GemmOptions nb;
  nb.beta = INFINITY;
  bad([&] { amp::gemm_into(a.cview(), b.cview(), c.view(), nb); });
  Tensor c_shape = Tensor::zeros({5, 4});
  bad([&] { amp::gemm_into(a.cview(), b.cview(), c_shape.view()); });  // wrong C shape
  Tensor c_i8 = Tensor::zeros({4, 5}, DType::kI8);
  bad([&] { amp::gemm_into(a.cview(), b.cview(), c_i8.view()); });  // wrong C dtype
  Tensor c_big = Tensor::zeros({5, 8});
  bad([&] { amp::gemm_into(a.cview(), b.cview(), c_big.slice(0, 0, 4).slice(1, 0, 5).view()); });
  ConstTensorView on_gpu = b.cview();
  on_gpu.device = Device::cuda(0);  // never dereferenced: validation rejects the mix first
  bad([&] { amp::gemm(a.cview(), on_gpu); });
  TensorView c_gpu = c.view();
  c_gpu.device = Device::cuda(0);
  bad([&] { amp::gemm_into(a.cview(), b.cview(), c_gpu); });
}

}  // namespace
}  // namespace frugal::amp
