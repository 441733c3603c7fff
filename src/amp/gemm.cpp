// amp::gemm: validation, 2-D -> 3-D normalization and the device dispatch.
#include "frugal/amp/gemm.hpp"

#include <cmath>

#include "amp/gemm_internal.hpp"
#include "core/copy.hpp"
#include "cu_ops.hpp"
#include "frugal/core/error.hpp"
#include "frugal/core/ops.hpp"

namespace frugal::amp {

namespace {

constexpr const char* kOp = "amp::gemm";

bool is_fp8(DType t) { return t == DType::kF8E4M3 || t == DType::kF8E5M2; }

bool is_half(DType t) { return t == DType::kBF16 || t == DType::kF16; }

struct Dims3 {
  int64_t batch, m, n, k;
};

// Validates the operands and options; returns the problem size.
Dims3 check(ConstTensorView a, ConstTensorView b, DType c_dtype, const GemmOptions& o) {
  FRUGAL_REQUIRE(is_half(a.dtype) || is_fp8(a.dtype), kOp, "a has dtype ", dtype_name(a.dtype),
                 " (supported: bf16, f16, f8_e4m3, f8_e5m2)");
  FRUGAL_REQUIRE(is_half(b.dtype) || is_fp8(b.dtype), kOp, "b has dtype ", dtype_name(b.dtype),
                 " (supported: bf16, f16, f8_e4m3, f8_e5m2)");
  FRUGAL_REQUIRE(a.dtype == b.dtype || (is_fp8(a.dtype) && is_fp8(b.dtype)), kOp,
                 "unsupported dtype combination a ", dtype_name(a.dtype), " x b ",
                 dtype_name(b.dtype), " (bf16 and f16 need equal dtypes; fp8 may mix e4m3/e5m2)");
  FRUGAL_REQUIRE(c_dtype == DType::kF32 || c_dtype == DType::kBF16 || c_dtype == DType::kF16, kOp,
                 "output dtype ", dtype_name(c_dtype), " is not supported (f32, bf16, f16)");
  FRUGAL_REQUIRE(a.rank() == 2 || a.rank() == 3, kOp, "a must have rank 2 or 3, got shape ",
                 a.shape);
  FRUGAL_REQUIRE(b.rank() == a.rank(), kOp, "a and b must have the same rank, got shapes ", a.shape,
                 " and ", b.shape);
  FRUGAL_REQUIRE(a.device == b.device, kOp, "a is on ", a.device.str(), " but b is on ",
                 b.device.str());
  FRUGAL_REQUIRE(a.is_contiguous(), kOp, "a must be contiguous");
  FRUGAL_REQUIRE(b.is_contiguous(), kOp, "b must be contiguous");
  FRUGAL_REQUIRE(a.data != nullptr || a.numel() == 0, kOp, "a has null data");
  FRUGAL_REQUIRE(b.data != nullptr || b.numel() == 0, kOp, "b has null data");
  for (auto [v, name] : {std::pair{o.a_scale, "a_scale"}, std::pair{o.b_scale, "b_scale"}}) {
    FRUGAL_REQUIRE(std::isfinite(v) && v > 0.f, kOp, name, " must be finite and > 0, got ", v);
  }
  FRUGAL_REQUIRE(std::isfinite(o.alpha), kOp, "alpha must be finite, got ", o.alpha);
  FRUGAL_REQUIRE(std::isfinite(o.beta), kOp, "beta must be finite, got ", o.beta);
  const int r = a.rank();
  Dims3 d{};
  d.batch = r == 3 ? a.shape[0] : 1;
  if (r == 3) {
    FRUGAL_REQUIRE(b.shape[0] == a.shape[0], kOp, "batch sizes differ: a ", a.shape, ", b ",
                   b.shape);
  }
  const int64_t a0 = a.shape[r - 2], a1 = a.shape[r - 1];
  const int64_t b0 = b.shape[r - 2], b1 = b.shape[r - 1];
  d.m = o.trans_a ? a1 : a0;
  d.k = o.trans_a ? a0 : a1;
  d.n = o.trans_b ? b0 : b1;
  const int64_t kb = o.trans_b ? b1 : b0;
  FRUGAL_REQUIRE(d.k == kb, kOp, "inner dimensions differ: op(a) is ", d.m, " x ", d.k,
                 ", op(b) is ", kb, " x ", d.n, " (a ", a.shape, ", b ", b.shape,
                 o.trans_a ? ", trans_a" : "", o.trans_b ? ", trans_b" : "", ")");
  if (a.device.kind == DeviceKind::kCuda && is_fp8(a.dtype)) {
    FRUGAL_REQUIRE(d.m % 16 == 0 && d.n % 16 == 0 && d.k % 16 == 0, kOp,
                   "fp8 on CUDA needs M, N, K multiples of 16 (cuBLASLt), got M ", d.m, ", N ", d.n,
                   ", K ", d.k);
  }
  return d;
}

template <class View>
View as_3d(View v) {
  if (v.rank() == 3) return v;
  v.shape = Shape{1, v.shape[0], v.shape[1]};
  v.strides = contiguous_strides(v.shape);
  return v;
}

void run(ConstTensorView a, ConstTensorView b, TensorView c, const GemmOptions& o, const Dims3& d,
         const ExecContext& ctx) {
  if (d.batch == 0 || d.m == 0 || d.n == 0) return;
  if (d.k == 0) {
    // An empty sum: C = beta * C (beta = 0 ignores C's old contents, NaN included).
    if (o.beta == 0.f) {
      detail::fill(c, 0.0, ctx);
    } else {
      const Tensor scaled = scale(c, o.beta, ctx);
      detail::copy(scaled.cview(), c, ctx);
    }
    return;
  }
  const ConstTensorView a3 = as_3d(a), b3 = as_3d(b);
  const TensorView c3 = as_3d(c);
  switch (a.device.kind) {
    case DeviceKind::kCpu:
      cpu::amp_gemm(a3, b3, c3, o, ctx);
      return;
    case DeviceKind::kCuda:
      cu::amp_gemm(a3, b3, c3, o.trans_a, o.trans_b, o.alpha, o.beta, o.a_scale, o.b_scale, ctx);
      return;
  }
}

}  // namespace

void gemm_into(ConstTensorView a, ConstTensorView b, TensorView c, const GemmOptions& o,
               const ExecContext& ctx) {
  const Dims3 d = check(a, b, c.dtype, o);
  Shape want = a.rank() == 3 ? Shape{d.batch, d.m, d.n} : Shape{d.m, d.n};
  FRUGAL_REQUIRE(c.shape == want, kOp, "c has shape ", c.shape, ", expected ", want);
  FRUGAL_REQUIRE(c.device == a.device, kOp, "c is on ", c.device.str(), " but a is on ",
                 a.device.str());
  FRUGAL_REQUIRE(c.is_contiguous(), kOp, "c must be contiguous");
  FRUGAL_REQUIRE(c.data != nullptr || c.numel() == 0, kOp, "c has null data");
  run(a, b, c, o, d, ctx);
}

Tensor gemm(ConstTensorView a, ConstTensorView b, DType out_dtype, const GemmOptions& o,
            const ExecContext& ctx) {
  const Dims3 d = check(a, b, out_dtype, o);
  Shape want = a.rank() == 3 ? Shape{d.batch, d.m, d.n} : Shape{d.m, d.n};
  Tensor c = Tensor::empty(want, out_dtype, a.device, ctx);
  GemmOptions o0 = o;
  o0.beta = 0.f;  // a new C has no previous value
  run(a, b, c.view(), o0, d, ctx);
  return c;
}

}  // namespace frugal::amp
