// Core ops on CUDA against the CPU backend and the scalar references: every op, every float dtype,
// strided inputs. Inputs are built on the host and moved with .to(Device::cuda()).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "frugal/core.hpp"
#include "frugal/ref/ops.hpp"
#include "support/gpu.hpp"
#include "support/tolerance.hpp"

namespace frugal {
namespace {

using testing::all_close;
using testing::all_equal;
using testing::random_uniform;

const std::vector<DType> kFloatTypes = {DType::kF32, DType::kF64, DType::kF16, DType::kBF16};

Tensor rand(Shape shape, uint32_t seed, DType dtype = DType::kF32, float lo = -1.f,
            float hi = 1.f) {
  return random_uniform(shape, seed, lo, hi).to(dtype);
}

Tensor gpu(const Tensor& t) { return t.to(Device::cuda()); }

double ulp(DType t) {
  switch (t) {
    case DType::kF16:
      return std::ldexp(1.0, -10);
    case DType::kBF16:
      return std::ldexp(1.0, -7);
    case DType::kF64:
      return std::ldexp(1.0, -52);
    default:
      return std::ldexp(1.0, -23);
  }
}

TEST(OpsCuda, ElementwiseMatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  for (DType t : kFloatTypes) {
    for (Shape shape : {Shape{}, Shape{7}, Shape{33, 1025}, Shape{3, 70001}}) {
      const Tensor a = rand(shape, 1, t);
      const Tensor b = rand(shape, 2, t);
      const Tensor ga = gpu(a), gb = gpu(b);
      // add / sub / mul / scale round once from the same float (double) arithmetic: exact.
      EXPECT_TRUE(all_equal(add(ga, gb), add(a, b))) << dtype_name(t) << shape;
      EXPECT_TRUE(all_equal(sub(ga, gb), sub(a, b))) << dtype_name(t) << shape;
      EXPECT_TRUE(all_equal(mul(ga, gb), mul(a, b))) << dtype_name(t) << shape;
      EXPECT_TRUE(all_equal(scale(ga, 0.375), scale(a, 0.375))) << dtype_name(t) << shape;
      Tensor y = gb.clone();
      axpy(-1.5, ga, y);
      EXPECT_EQ(y.device(), Device::cuda());
      // nvcc may contract alpha * x + y into one fma (one rounding instead of two).
      const double tol = 2 * ulp(t);
      EXPECT_TRUE(all_close(y, ref::axpy(-1.5, a, b), tol, tol)) << dtype_name(t) << shape;
    }
  }
  // Strided views on the device.
  const Tensor a = rand({40, 30}, 3);
  const Tensor b = rand({30, 40}, 4);
  EXPECT_TRUE(all_equal(add(gpu(a).slice(1, 2, 22), gpu(b).t().slice(1, 3, 23)),
                        add(a.slice(1, 2, 22), b.t().slice(1, 3, 23))));
  Tensor owner = gpu(rand({40, 30}, 5));
  Tensor y = owner.slice(1, 5, 25);
  const Tensor want = ref::axpy(2.0, a.slice(1, 0, 20), y);
  axpy(2.0, gpu(a).slice(1, 0, 20), y);
  const double tol = 2 * ulp(DType::kF32);  // fma contraction, as above
  EXPECT_TRUE(all_close(y, want, tol, tol));
}

TEST(OpsCuda, ReductionsMatchCpu) {
  FRUGAL_REQUIRE_GPU();
  const int64_t odd = 3 * (int64_t{1} << 14) + 17;
  for (DType t : kFloatTypes) {
    for (Shape shape :
         {Shape{}, Shape{1}, Shape{odd}, Shape{7, 13, 5}, Shape{3, 1000, 67}, Shape{4, 300000}}) {
      const Tensor x = rand(shape, 11, t, -3.f, 2.f);
      const Tensor gx = gpu(x);
      // Selections are exact.
      EXPECT_TRUE(all_equal(min(gx), min(x))) << dtype_name(t) << shape;
      EXPECT_TRUE(all_equal(max(gx), max(x))) << dtype_name(t) << shape;
      EXPECT_TRUE(all_equal(abs_max(gx), abs_max(x))) << dtype_name(t) << shape;
      // Both sum in double in different orders; the f32 results may differ by one f32 ulp, f64
      // results by a few f64 ulps of the sum of magnitudes.
      const double rtol = t == DType::kF64 ? 1e-12 : 2 * ulp(DType::kF32);
      const double atol = t == DType::kF64 ? 1e-15 * x.numel() : 1e-30;
      EXPECT_TRUE(all_close(sum(gx), sum(x), rtol, atol)) << dtype_name(t) << shape;
      EXPECT_TRUE(all_close(mean(gx), mean(x), rtol, atol)) << dtype_name(t) << shape;
      for (int axis = 0; axis < shape.rank(); ++axis) {
        EXPECT_TRUE(all_equal(min(gx, axis), min(x, axis)));
        EXPECT_TRUE(all_equal(max(gx, axis, true), max(x, axis, true)));
        EXPECT_TRUE(all_equal(abs_max(gx, axis), abs_max(x, axis)));
        const double al = t == DType::kF64 ? 1e-15 * x.dim(axis) : 1e-30;  // as above
        EXPECT_TRUE(all_close(sum(gx, axis), sum(x, axis), rtol, al)) << dtype_name(t) << shape;
        EXPECT_TRUE(all_close(mean(gx, axis), mean(x, axis), rtol, al)) << dtype_name(t) << shape;
      }
    }
  }
  // NaN propagates, empty sums are zero, and the same input gives the same bits twice.
  const Tensor n = Tensor::from_vector<float>({1, std::nanf(""), 3, 4}, {2, 2});
  EXPECT_TRUE(std::isnan(max(gpu(n)).to_vector<float>()[0]));
  EXPECT_TRUE(all_equal(max(gpu(n), 1), max(n, 1)));
  EXPECT_EQ(sum(gpu(Tensor::empty({0}))).to_vector<float>()[0], 0.f);
  const Tensor big = gpu(rand({1 << 22}, 12));
  EXPECT_TRUE(all_equal(sum(big), sum(big)));
}

TEST(OpsCuda, ArgmaxAndTopkMatchCpu) {
  FRUGAL_REQUIRE_GPU();
  for (DType t : kFloatTypes) {
    // Short rows sort in shared memory, rows of 20000 in the global workspace.
    for (Shape shape :
         {Shape{9}, Shape{5, 300}, Shape{4, 7, 3}, Shape{3, 20000}, Shape{2, 5000, 2}}) {
      // Few distinct values so that ties are common.
      const Tensor x = random_uniform(shape, 41, -20.f, 20.f).to(DType::kI32).to(t);
      const Tensor gx = gpu(x);
      for (int axis = 0; axis < shape.rank(); ++axis) {
        EXPECT_TRUE(all_equal(argmax(gx, axis), argmax(x, axis))) << dtype_name(t) << shape;
        const int64_t len = shape[axis];
        for (int64_t k : {int64_t{1}, std::min<int64_t>(5, len), len}) {
          for (bool largest : {true, false}) {
            const TopK g = topk(gx, k, axis, largest);
            const TopK c = topk(x, k, axis, largest);
            EXPECT_TRUE(all_equal(g.values, c.values)) << dtype_name(t) << shape << " k " << k;
            EXPECT_TRUE(all_equal(g.indices, c.indices)) << dtype_name(t) << shape << " k " << k;
          }
        }
      }
    }
  }
  const Tensor n = Tensor::from_vector<double>({2, std::nan(""), 7, std::nan(""), -1}, {5});
  EXPECT_EQ(argmax(gpu(n), 0).to_vector<int64_t>()[0], 1);
  EXPECT_EQ(topk(gpu(n), 5, 0, false).indices.to_vector<int64_t>(),
            (std::vector<int64_t>{4, 0, 2, 1, 3}));
}

TEST(OpsCuda, GemmMatchesReference) {
  FRUGAL_REQUIRE_GPU();
  const std::vector<std::array<int64_t, 3>> shapes = {
      {1, 1, 1}, {17, 33, 9}, {130, 70, 257}, {300, 200, 513}};
  for (DType t : kFloatTypes) {
    for (const auto& [m, n, k] : shapes) {
      for (int tr = 0; tr < 4; ++tr) {
        GemmOptions opt;
        opt.trans_a = tr & 1;
        opt.trans_b = tr & 2;
        opt.alpha = tr == 3 ? -0.5 : 1.0;
        const Tensor a = opt.trans_a ? rand({k, m}, 51, t) : rand({m, k}, 51, t);
        const Tensor b = opt.trans_b ? rand({n, k}, 52, t) : rand({k, n}, 52, t);
        const Tensor got = gemm(gpu(a), gpu(b), opt);
        EXPECT_EQ(got.device(), Device::cuda());
        // fp32 / fp64 accumulate k products of magnitude <= 1 (TF32 is off, so fp32 is fp32);
        // f16 / bf16 outputs round once more to their own precision.
        const double acc = t == DType::kF64 ? ulp(DType::kF64) : ulp(DType::kF32);
        const double tol =
            acc * static_cast<double>(k) + (t == DType::kF16 || t == DType::kBF16 ? ulp(t) : 0.0);
        EXPECT_TRUE(all_close(got, ref::gemm(a, b, opt, Tensor(), t), tol, tol))
            << dtype_name(t) << " " << m << "x" << n << "x" << k << " trans " << tr;
      }
    }
  }
}

TEST(OpsCuda, GemmIntoStridedAndMixedPrecision) {
  FRUGAL_REQUIRE_GPU();
  const int64_t m = 45, n = 38, k = 29;
  const Tensor a = rand({k, m}, 61).t();                     // column-major A
  const Tensor b = rand({k, n + 5}, 62).slice(1, 1, n + 1);  // row-major B, leading dim n + 5
  GemmOptions opt;
  opt.alpha = 2.0;
  opt.beta = -0.5;
  const double tol = 4 * ulp(DType::kF32) * k;  // alpha = 2 doubles the accumulation error
  {
    Tensor c_host = rand({m, n + 7}, 63).slice(1, 3, n + 3);
    const Tensor want = ref::gemm(a, b, opt, c_host, DType::kF32);
    Tensor owner = gpu(rand({m, n + 7}, 63));
    Tensor c = owner.slice(1, 3, n + 3);
    gemm_into(gpu(a), gpu(b), c, opt);
    EXPECT_TRUE(all_close(c, want, tol, tol));
  }
  {
    Tensor c_host = rand({n, m}, 64).t();
    const Tensor want = ref::gemm(a, b, opt, c_host, DType::kF32);
    Tensor c = gpu(rand({n, m}, 64)).t();  // column-major C
    gemm_into(gpu(a), gpu(b), c, opt);
    EXPECT_TRUE(all_close(c, want, tol, tol));
  }
  for (DType t : {DType::kF16, DType::kBF16}) {
    const Tensor ah = a.to(t), bh = b.to(t);
    const Tensor c_host = rand({m, n}, 65);
    const Tensor want = ref::gemm(ah, bh, opt, c_host, DType::kF32);
    Tensor c = gpu(c_host);
    gemm_into(gpu(ah), gpu(bh), c, opt);
    EXPECT_TRUE(all_close(c, want, tol, tol)) << dtype_name(t);  // f32 output, as above
  }
  // beta = 0 ignores NaN in C.
  Tensor c = Tensor::full({m, n}, std::nan(""), DType::kF32, Device::cuda());
  gemm_into(gpu(a), gpu(b), c);
  EXPECT_TRUE(all_close(c, ref::gemm(a, b, {}, Tensor(), DType::kF32), tol, tol));
}

TEST(OpsCuda, MixedDevicesAreRejected) {
  FRUGAL_REQUIRE_GPU();
  const Tensor a = rand({3, 3}, 1);
  try {
    add(a, gpu(a));
    ADD_FAILURE() << "expected InvalidArgument";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(std::string(e.what()).rfind("[add]", 0), 0u) << e.what();
  }
  EXPECT_THROW(matmul(gpu(a), a), Error);
}

}  // namespace
}  // namespace frugal
