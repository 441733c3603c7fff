// Quantized GEMMs on the CPU against the scalar references of include/frugal/ref/quant_gemm.hpp:
// integer products exactly (int64 reference), the epilogue bit-exactly (same float operations)
// and against f64, the weight-only products against f64 within a stated tolerance.
#include "frugal/quant/qgemm.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "frugal/core/build_config.hpp"
#include "frugal/ref/quant_gemm.hpp"

namespace frugal::quant {
namespace {

struct Operands {
  int64_t m, n, k;
  std::vector<int32_t> a;  // values of a (i8 or u8)
  std::vector<int8_t> b;
  Tensor ta, tb;
};

Operands make_operands(int64_t m, int64_t n, int64_t k, DType adt, uint32_t seed) {
  std::mt19937 rng(seed);
  Operands o{m, n, k, {}, {}, {}, {}};
  std::uniform_int_distribution<int> da(adt == DType::kI8 ? -128 : 0,
                                        adt == DType::kI8 ? 127 : 255);
  std::uniform_int_distribution<int> db(-128, 127);
  o.a.resize(static_cast<size_t>(m * k));
  o.b.resize(static_cast<size_t>(n * k));
  for (auto& v : o.a) v = da(rng);
  for (auto& v : o.b) v = static_cast<int8_t>(db(rng));
  if (adt == DType::kI8) {
    std::vector<int8_t> a8(o.a.begin(), o.a.end());
    o.ta = Tensor::from_vector(a8, {m, k});
  } else {
    std::vector<uint8_t> a8(o.a.begin(), o.a.end());
    o.ta = Tensor::from_vector(a8, {m, k});
  }
  o.tb = Tensor::from_vector(o.b, {n, k});
  return o;
}

std::vector<QGemmBackend> backends() {
  std::vector<QGemmBackend> v = {QGemmBackend::kAuto, QGemmBackend::kPortable};
  if (FRUGAL_HAS_DNNL) v.push_back(QGemmBackend::kDnnl);
  return v;
}

TEST(QGemm, IntegerProductIsExact) {
  struct Case {
    int64_t m, n, k;
    DType adt;
    int32_t zp;
  };
  const std::vector<Case> cases = {{37, 29, 131, DType::kI8, 3},    {64, 64, 256, DType::kU8, 128},
                                   {8, 16, 4100, DType::kI8, -128}, {1, 5, 7, DType::kU8, 0},
                                   {5, 70, 64, DType::kI8, 0},      {3, 2, 0, DType::kU8, 7}};
  for (const Case& c : cases) {
    const Operands o = make_operands(c.m, c.n, c.k, c.adt, 11);
    const std::vector<int64_t> want = ref::qgemm_s64(o.a, c.zp, o.b, c.m, c.n, c.k);
    for (QGemmBackend be : backends()) {
      const Tensor got = qgemm_s32(o.ta, c.zp, o.tb, {be});
      ASSERT_EQ(got.dtype(), DType::kI32);
      const std::vector<int64_t> g = got.to_vector<int64_t>();
      EXPECT_EQ(g, want) << "m " << c.m << " n " << c.n << " k " << c.k << " backend "
                         << static_cast<int>(be);
    }
  }
}

TEST(QGemm, ExtremeValuesDoNotOverflow) {
  // K = 65536 with every product at its maximum magnitude: |sum| = 65536 * 255 * 128 < 2^31.
  const int64_t k = 65536;
  std::vector<uint8_t> a(k, 255);
  std::vector<int8_t> b(k, -128);
  const Tensor c = qgemm_s32(Tensor::from_vector(a, {1, k}), 0, Tensor::from_vector(b, {1, k}));
  EXPECT_EQ(c.to_vector<int64_t>()[0], -int64_t{65536} * 255 * 128);
}

TEST(QGemm, DequantizedAndRequantizedEpilogues) {
  const int64_t m = 19, n = 23, k = 96;
  const Operands o = make_operands(m, n, k, DType::kU8, 5);
  const int32_t za = 117;
  const float sa = 0.0137f;
  std::vector<float> sb(n), bias(n);
  for (int64_t j = 0; j < n; ++j) {
    sb[j] = 0.001f * static_cast<float>(j + 1);
    bias[j] = 0.25f * static_cast<float>(j % 5) - 0.5f;
  }
  const Tensor tsb = Tensor::from_vector(sb, {n}), tbias = Tensor::from_vector(bias, {n});
  const std::vector<int64_t> acc = ref::qgemm_s64(o.a, za, o.b, m, n, k);
  const float so = 0.05f;
  const int32_t zo = -3;
  for (QGemmBackend be : backends()) {
    const std::vector<float> y = qgemm_f32(o.ta, sa, za, o.tb, tsb, tbias, {be}).to_vector<float>();
    const std::vector<int64_t> q =
        qgemm_requantize(o.ta, sa, za, o.tb, tsb, tbias, so, zo, DType::kI8, {be})
            .to_vector<int64_t>();
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        const int64_t idx = i * n + j;
        const float want = ref::qgemm_dequant(acc[idx], sa, sb[j], bias[j]);
        EXPECT_EQ(y[idx], want) << idx;  // same float operations: bit-identical
        // Against f64: two float roundings of a value of magnitude <= |acc| sa sb + |bias|.
        const double exact = ref::qgemm_f64(acc[idx], sa, sb[j], bias[j]);
        EXPECT_NEAR(y[idx], exact, 4e-7 * (std::fabs(exact) + std::fabs(bias[j])) + 1e-6);
        EXPECT_EQ(q[idx], ref::qgemm_requantize(want, so, zo, -128, 127)) << idx;
      }
    }
  }
  // Per-tensor weight scale, no bias, u8 output.
  const Tensor s0 = Tensor::full({}, 0.002, DType::kF32);
  const std::vector<int64_t> q =
      qgemm_requantize(o.ta, sa, za, o.tb, s0, ConstTensorView(), so, 128, DType::kU8)
          .to_vector<int64_t>();
  for (int64_t idx = 0; idx < m * n; ++idx) {
    const float y = ref::qgemm_dequant(acc[idx], sa, 0.002f, 0.f);
    EXPECT_EQ(q[idx], ref::qgemm_requantize(y, so, 128, 0, 255)) << idx;
  }
}

// Builds (N, K) codes in [lo, hi] and the tensor holding them (i4 packed or i8).
Tensor make_weights(int64_t n, int64_t k, bool i4, uint32_t seed, std::vector<int8_t>& codes) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(i4 ? -8 : -128, i4 ? 7 : 127);
  codes.resize(static_cast<size_t>(n * k));
  for (auto& c : codes) c = static_cast<int8_t>(d(rng));
  if (!i4) return Tensor::from_vector(codes, {n, k});
  Tensor t = Tensor::empty({n, k}, DType::kI4);
  pack_i4(codes.data(), static_cast<uint8_t*>(t.data_ptr()), n * k);
  return t;
}

TEST(QGemm, WeightOnlyMatchesF64) {
  struct Case {
    int64_t m, n, k, g;
    bool i4;
  };
  const std::vector<Case> cases = {{1, 33, 256, 64, true}, {1, 40, 512, 128, false},
                                   {3, 17, 192, 32, true}, {6, 9, 96, 6, true},
                                   {5, 12, 80, 16, false}, {2, 4, 40, 40, false}};
  std::mt19937 rng(3);
  for (const Case& c : cases) {
    std::vector<int8_t> codes;
    const Tensor w = make_weights(c.n, c.k, c.i4, 17, codes);
    std::vector<float> x(static_cast<size_t>(c.m * c.k)), s(static_cast<size_t>(c.n * c.k / c.g));
    std::uniform_real_distribution<float> dx(-1.f, 1.f), ds(0.001f, 0.02f);
    for (auto& v : x) v = dx(rng);
    for (auto& v : s) v = ds(rng);
    const Tensor tx = c.m == 1 ? Tensor::from_vector(x, {c.k}) : Tensor::from_vector(x, {c.m, c.k});
    const Tensor ts = Tensor::from_vector(s, {c.n, c.k / c.g});
    const Tensor y = woq_matmul(tx, w, ts, c.g);
    ASSERT_EQ(y.rank(), c.m == 1 ? 1 : 2);
    const std::vector<double> got = y.to_vector<double>();
    const std::vector<double> want = ref::woq_matmul(x, codes, s, c.m, c.n, c.k, c.g);
    for (int64_t i = 0; i < c.m; ++i) {
      for (int64_t j = 0; j < c.n; ++j) {
        // f32 products and sums over K terms: error <= ~K eps sum |x w s| (eps = 2^-24).
        double mag = 0;
        for (int64_t t = 0; t < c.k; ++t) {
          mag += std::fabs(x[i * c.k + t] * codes[j * c.k + t] * s[j * (c.k / c.g) + t / c.g]);
        }
        const double tol = static_cast<double>(c.k) * 6e-8 * mag + 1e-12;
        EXPECT_NEAR(got[i * c.n + j], want[i * c.n + j], tol) << "case k " << c.k << " g " << c.g;
      }
    }
    // Thread count does not change a single bit.
    const Tensor y1 = woq_matmul(tx, w, ts, c.g, ExecContext{nullptr, 1});
    EXPECT_EQ(y1.to_vector<float>(), y.to_vector<float>());
  }
}

template <class F>
void expect_invalid(F&& f, const char* op, int line = __builtin_LINE()) {
  SCOPED_TRACE(::testing::Message() << "called from line " << line);
  try {
    f();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(std::string(e.what()).rfind(std::string("[") + op + "]", 0), 0u) << e.what();
  }
}

TEST(QGemm, BadInput) {
  const Operands o = make_operands(4, 6, 8, DType::kI8, 1);
  const Tensor f = Tensor::zeros({4, 8});
  const Tensor sb = Tensor::full({6}, 0.1, DType::kF32);
  expect_invalid([&] { qgemm_s32(f, 0, o.tb); }, "qgemm_s32");                    // dtype
  expect_invalid([&] { qgemm_s32(o.ta.reshape({32}), 0, o.tb); }, "qgemm_s32");   // rank
  expect_invalid([&] { qgemm_s32(o.ta, 0, o.tb.slice(1, 0, 4)); }, "qgemm_s32");  // K mismatch
  expect_invalid([&] { qgemm_s32(o.ta, 128, o.tb); }, "qgemm_s32");               // zp range
  const Tensor bigk = Tensor::zeros({1, 65537}, DType::kI8);
  expect_invalid([&] { qgemm_s32(bigk, 0, bigk); }, "qgemm_s32");               // K too large
  expect_invalid([&] { qgemm_f32(o.ta, 0.f, 0, o.tb, sb, {}); }, "qgemm_f32");  // a scale 0
  expect_invalid([&] { qgemm_f32(o.ta, NAN, 0, o.tb, sb, {}); }, "qgemm_f32");  // a scale NaN
  const Tensor bad_sb =
      Tensor::from_vector(std::vector<float>{0.1f, 0.1f, -1.f, 0.1f, 0.1f, 0.1f}, {6});
  expect_invalid([&] { qgemm_f32(o.ta, 1.f, 0, o.tb, bad_sb, {}); }, "qgemm_f32");
  expect_invalid([&] { qgemm_f32(o.ta, 1.f, 0, o.tb, Tensor::full({5}, 1.0), {}); }, "qgemm_f32");
  expect_invalid([&] { qgemm_f32(o.ta, 1.f, 0, o.tb, sb, Tensor::zeros({5})); }, "qgemm_f32");
  expect_invalid([&] { qgemm_requantize(o.ta, 1.f, 0, o.tb, sb, {}, 1.f, 0, DType::kF32); },
                 "qgemm_requantize");
  expect_invalid([&] { qgemm_requantize(o.ta, 1.f, 0, o.tb, sb, {}, 1.f, 300, DType::kU8); },
                 "qgemm_requantize");
  expect_invalid([&] { qgemm_requantize(o.ta, 1.f, 0, o.tb, sb, {}, 0.f, 0, DType::kI8); },
                 "qgemm_requantize");
  std::vector<int8_t> codes;
  const Tensor w = make_weights(6, 8, true, 2, codes);
  const Tensor x = Tensor::zeros({2, 8});
  expect_invalid([&] { woq_matmul(x, w, Tensor::zeros({6, 3}), 3); }, "woq_matmul");  // 3 !| 8
  expect_invalid([&] { woq_matmul(x, w, Tensor::zeros({6, 3}), 4); }, "woq_matmul");  // scale shape
  expect_invalid(
      [&] {
        woq_matmul(Tensor::zeros({2, 6}), w, Tensor::zeros({6, 2}), 4);
      },
      "woq_matmul");  // K mismatch
  expect_invalid([&] { woq_matmul(x.to(DType::kF64), w, Tensor::zeros({6, 2}), 4); }, "woq_matmul");
  expect_invalid(
      [&] {
        woq_matmul(x, o.tb.to(DType::kI32), Tensor::zeros({6, 2}), 4);
      },
      "woq_matmul");
}

TEST(QGemm, EmptyShapes) {
  const Tensor a = Tensor::zeros({0, 8}, DType::kI8), b = Tensor::zeros({3, 8}, DType::kI8);
  EXPECT_EQ(qgemm_s32(a, 0, b).shape(), (Shape{0, 3}));
  EXPECT_EQ(qgemm_f32(a, 1.f, 0, b, Tensor::full({}, 1.0), {}).shape(), (Shape{0, 3}));
}

}  // namespace
}  // namespace frugal::quant
