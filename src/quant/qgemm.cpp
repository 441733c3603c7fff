// Quantized GEMMs: validation, output allocation and the device switch (see qgemm.hpp).
#include "frugal/quant/qgemm.hpp"

#include <cmath>

#include "cu_ops.hpp"
#include "frugal/core/build_config.hpp"
#include "quant/qgemm_internal.hpp"

namespace frugal::quant {
namespace {

constexpr int64_t kMaxK = 65536;  // (255 * 128) * 65536 < 2^31: no int32 sum overflows

Tensor contiguous_of(ConstTensorView v, const ExecContext& ctx) {
  Tensor t = Tensor::empty(v.shape, v.dtype, v.device, ctx);
  t.copy_from(v, ctx);
  return t;
}

/// A view with unit strides: v itself or a contiguous copy kept alive by `holder`.
ConstTensorView dense(ConstTensorView v, Tensor& holder, const ExecContext& ctx) {
  if (v.is_contiguous()) return v;
  holder = contiguous_of(v, ctx);
  return holder.cview();
}

void check_operands(const char* op, ConstTensorView a, int32_t a_zero_point, ConstTensorView b) {
  FRUGAL_REQUIRE(a.rank() == 2 && b.rank() == 2, op, "a and b must be rank 2, got ranks ", a.rank(),
                 " and ", b.rank());
  FRUGAL_REQUIRE(a.dtype == DType::kI8 || a.dtype == DType::kU8, op, "a dtype ",
                 dtype_name(a.dtype), " is not i8 or u8");
  FRUGAL_REQUIRE(b.dtype == DType::kI8, op, "b dtype ", dtype_name(b.dtype), " is not i8");
  FRUGAL_REQUIRE(a.device == b.device, op, "a and b are on different devices");
  FRUGAL_REQUIRE(a.shape[1] == b.shape[1], op, "inner extents differ: a is ", a.shape, ", b is ",
                 b.shape, " (b is (N, K))");
  FRUGAL_REQUIRE(a.shape[1] <= kMaxK, op, "K = ", a.shape[1], " exceeds ", kMaxK,
                 " (int32 accumulators could overflow)");
  const int32_t lo = a.dtype == DType::kI8 ? -128 : 0;
  const int32_t hi = a.dtype == DType::kI8 ? 127 : 255;
  FRUGAL_REQUIRE(a_zero_point >= lo && a_zero_point <= hi, op, "a zero point ", a_zero_point,
                 " is outside [", lo, ", ", hi, "]");
}

void check_epilogue(const char* op, ConstTensorView a, float a_scale, ConstTensorView b,
                    ConstTensorView b_scale, ConstTensorView bias) {
  const int64_t n = b.shape[0];
  FRUGAL_REQUIRE(std::isfinite(a_scale) && a_scale > 0.f, op, "a scale ", a_scale,
                 " must be finite and > 0");
  FRUGAL_REQUIRE(b_scale.dtype == DType::kF32, op, "b scale dtype ", dtype_name(b_scale.dtype),
                 " is not f32");
  FRUGAL_REQUIRE(b_scale.rank() == 0 || (b_scale.rank() == 1 && b_scale.shape[0] == n), op,
                 "b scale must have shape {} or {", n, "}, got ", b_scale.shape);
  FRUGAL_REQUIRE(b_scale.device == a.device, op, "b scale is on another device");
  if (bias.data != nullptr) {
    FRUGAL_REQUIRE(bias.dtype == DType::kF32, op, "bias dtype ", dtype_name(bias.dtype),
                   " is not f32");
    FRUGAL_REQUIRE(bias.rank() == 1 && bias.shape[0] == n, op, "bias must have shape {", n,
                   "}, got ", bias.shape);
    FRUGAL_REQUIRE(bias.device == a.device, op, "bias is on another device");
  }
  if (b_scale.device.kind == DeviceKind::kCpu) {
    Tensor holder;
    const ConstTensorView s = dense(b_scale, holder, {});
    const float* p = s.data_as<float>();
    for (int64_t i = 0; i < s.numel(); ++i) {
      FRUGAL_REQUIRE(std::isfinite(p[i]) && p[i] > 0.f, op, "b scale[", i, "] = ", p[i],
                     " must be finite and > 0");
    }
  }
}

void s32_dispatch(ConstTensorView a, int32_t zp, ConstTensorView b, TensorView c,
                  const QGemmOptions& opt, const ExecContext& ctx) {
  switch (a.device.kind) {
    case DeviceKind::kCpu:
      switch (opt.backend) {
        case QGemmBackend::kPortable:
          return cpu::qgemm_s32_portable(a, zp, b, c, ctx);
        case QGemmBackend::kDnnl:
#if FRUGAL_HAS_DNNL
          return cpu::qgemm_s32_dnnl(a, zp, b, c, ctx);
#else
          ::frugal::detail::fail(ErrorCode::kNotCompiled, "qgemm",
                                 "frugal was built without oneDNN");
#endif
        case QGemmBackend::kAuto:
#if FRUGAL_HAS_DNNL
          return cpu::qgemm_s32_dnnl(a, zp, b, c, ctx);
#else
          return cpu::qgemm_s32_portable(a, zp, b, c, ctx);
#endif
      }
      return;
    case DeviceKind::kCuda:
      return cu::qgemm_s32(a, zp, b, c, ctx);
  }
}

Tensor run(const char* op, ConstTensorView a, float a_scale, int32_t a_zero_point,
           ConstTensorView b, ConstTensorView b_scale, ConstTensorView bias, float out_scale,
           int32_t out_zero_point, DType out_dtype, const QGemmOptions& opt,
           const ExecContext& ctx) {
  check_operands(op, a, a_zero_point, b);
  check_epilogue(op, a, a_scale, b, b_scale, bias);
  Tensor ha, hb, hs, hbias;
  const ConstTensorView da = dense(a, ha, ctx), db = dense(b, hb, ctx);
  const ConstTensorView ds = dense(b_scale, hs, ctx);
  const ConstTensorView dbias = bias.data != nullptr ? dense(bias, hbias, ctx) : bias;
  const int64_t m = a.shape[0], n = b.shape[0];
  Tensor acc = Tensor::empty({m, n}, DType::kI32, a.device, ctx);
  Tensor out = Tensor::empty({m, n}, out_dtype, a.device, ctx);
  if (m == 0 || n == 0) return out;
  s32_dispatch(da, a_zero_point, db, acc.view(), opt, ctx);
  switch (a.device.kind) {
    case DeviceKind::kCpu:
      cpu::qgemm_epilogue(acc.cview(), a_scale, ds, dbias, out_scale, out_zero_point, out.view(),
                          ctx);
      break;
    case DeviceKind::kCuda:
      cu::qgemm_epilogue(acc.cview(), a_scale, ds, dbias, out_scale, out_zero_point, out.view(),
                         ctx);
      break;
  }
  return out;
}

}  // namespace

Tensor qgemm_s32(ConstTensorView a, int32_t a_zero_point, ConstTensorView b,
                 const QGemmOptions& opt, const ExecContext& ctx) {
  check_operands("qgemm_s32", a, a_zero_point, b);
  Tensor ha, hb;
  const ConstTensorView da = dense(a, ha, ctx), db = dense(b, hb, ctx);
  Tensor c = Tensor::empty({a.shape[0], b.shape[0]}, DType::kI32, a.device, ctx);
  if (c.numel() == 0) return c;
  s32_dispatch(da, a_zero_point, db, c.view(), opt, ctx);
  return c;
}

Tensor qgemm_f32(ConstTensorView a, float a_scale, int32_t a_zero_point, ConstTensorView b,
                 ConstTensorView b_scale, ConstTensorView bias, const QGemmOptions& opt,
                 const ExecContext& ctx) {
  return run("qgemm_f32", a, a_scale, a_zero_point, b, b_scale, bias, 1.f, 0, DType::kF32, opt,
             ctx);
}

Tensor qgemm_requantize(ConstTensorView a, float a_scale, int32_t a_zero_point, ConstTensorView b,
                        ConstTensorView b_scale, ConstTensorView bias, float out_scale,
                        int32_t out_zero_point, DType out_dtype, const QGemmOptions& opt,
                        const ExecContext& ctx) {
  const char* op = "qgemm_requantize";
  FRUGAL_REQUIRE(out_dtype == DType::kI8 || out_dtype == DType::kU8, op, "output dtype ",
                 dtype_name(out_dtype), " is not i8 or u8");
  FRUGAL_REQUIRE(std::isfinite(out_scale) && out_scale > 0.f, op, "output scale ", out_scale,
                 " must be finite and > 0");
  const int32_t lo = out_dtype == DType::kI8 ? -128 : 0;
  const int32_t hi = out_dtype == DType::kI8 ? 127 : 255;
  FRUGAL_REQUIRE(out_zero_point >= lo && out_zero_point <= hi, op, "output zero point ",
                 out_zero_point, " is outside [", lo, ", ", hi, "]");
  return run(op, a, a_scale, a_zero_point, b, b_scale, bias, out_scale, out_zero_point, out_dtype,
             opt, ctx);
}

Tensor woq_matmul(ConstTensorView x, ConstTensorView w, ConstTensorView scale, int64_t group_size,
                  const ExecContext& ctx) {
  const char* op = "woq_matmul";
  FRUGAL_REQUIRE(x.rank() == 1 || x.rank() == 2, op, "x must be rank 1 or 2, got rank ", x.rank());
  FRUGAL_REQUIRE(x.dtype == DType::kF32, op, "x dtype ", dtype_name(x.dtype), " is not f32");
  FRUGAL_REQUIRE(w.rank() == 2, op, "w must be rank 2 (N, K), got rank ", w.rank());
  FRUGAL_REQUIRE(w.dtype == DType::kI4 || w.dtype == DType::kI8, op, "w dtype ",
                 dtype_name(w.dtype), " is not i4 or i8");
  FRUGAL_REQUIRE(scale.dtype == DType::kF32, op, "scale dtype ", dtype_name(scale.dtype),
                 " is not f32");
  FRUGAL_REQUIRE(x.device == w.device && x.device == scale.device, op,
                 "x, w and scale must be on one device");
  const int64_t n = w.shape[0], k = w.shape[1];
  const int64_t xk = x.shape[x.rank() - 1];
  FRUGAL_REQUIRE(xk == k, op, "x has ", xk, " features, w has K = ", k);
  FRUGAL_REQUIRE(group_size > 0 && k % group_size == 0, op, "group size ", group_size,
                 " does not divide K = ", k);
  FRUGAL_REQUIRE(w.dtype != DType::kI4 || group_size % 2 == 0, op, "group size ", group_size,
                 " must be even for i4 weights");
  FRUGAL_REQUIRE(w.dtype != DType::kI4 || w.is_contiguous(), op,
                 "packed i4 weights must be contiguous");
  FRUGAL_REQUIRE(scale.rank() == 2 && scale.shape[0] == n && scale.shape[1] == k / group_size, op,
                 "scale must have shape (", n, ", ", k / group_size, "), got ", scale.shape);
  Tensor hx, hw, hs;
  ConstTensorView dx = dense(x, hx, ctx);
  const ConstTensorView dw = dense(w, hw, ctx), ds = dense(scale, hs, ctx);
  const int64_t m = x.rank() == 2 ? x.shape[0] : 1;
  dx.shape = Shape{m, k};
  dx.strides = contiguous_strides(dx.shape);
  Tensor y = Tensor::empty({m, n}, DType::kF32, x.device, ctx);
  if (m > 0 && n > 0) {
    switch (x.device.kind) {
      case DeviceKind::kCpu:
        cpu::woq_matmul(dx, dw, ds, group_size, y.view(), ctx);
        break;
      case DeviceKind::kCuda:
        cu::woq_matmul(dx, dw, ds, group_size, y.view(), ctx);
        break;
    }
  }
  return x.rank() == 1 ? y.reshape({n}) : y;
}

}  // namespace frugal::quant
