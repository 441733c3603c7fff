// amp::cast: validation and the device dispatch.
#include "frugal/amp/cast.hpp"

#include <cmath>

#include "amp/amp_internal.hpp"
#include "amp/cast_bits.hpp"
#include "cu_ops.hpp"
#include "frugal/core/error.hpp"

namespace frugal::amp {

namespace {

constexpr const char* kOp = "amp::cast";

// Validates x, the target and the options; returns the amp/cast_bits.hpp format code.
int check_cast(ConstTensorView x, DType to, const CastOptions& opt) {
  FRUGAL_REQUIRE(x.dtype == DType::kF32, kOp, "input must be f32, got ", dtype_name(x.dtype));
  FRUGAL_REQUIRE(x.is_contiguous(), kOp, "input must be contiguous");
  int format = -1;
  switch (to) {
    case DType::kF16:
      format = detail::kFmtF16;
      break;
    case DType::kBF16:
      format = detail::kFmtBF16;
      break;
    case DType::kF8E4M3:
      format = detail::kFmtE4M3;
      break;
    case DType::kF8E5M2:
      format = detail::kFmtE5M2;
      break;
    default:
      break;
  }
  FRUGAL_REQUIRE(format >= 0, kOp, "unsupported cast f32 -> ", dtype_name(to),
                 " (targets: f16, bf16, f8_e4m3, f8_e5m2)");
  FRUGAL_REQUIRE(std::isfinite(opt.scale) && opt.scale > 0.f, kOp,
                 "scale must be finite and > 0, got ", opt.scale);
  return format;
}

float run_cast(ConstTensorView x, TensorView out, int format, const CastOptions& opt,
               const ExecContext& ctx) {
  if (x.numel() == 0) return 0.f;
  switch (x.device.kind) {
    case DeviceKind::kCpu:
      return cpu::amp_cast(x, out, format, opt, ctx);
    case DeviceKind::kCuda:
      return cu::amp_cast(x, out, format, static_cast<int>(opt.rounding),
                          static_cast<int>(opt.overflow), opt.scale, opt.compute_amax, ctx);
  }
  return 0.f;
}

}  // namespace

CastResult cast(ConstTensorView x, DType to, const CastOptions& opt, const ExecContext& ctx) {
  const int format = check_cast(x, to, opt);
  CastResult r;
  r.out = Tensor::empty(x.shape, to, x.device, ctx);
  r.amax = run_cast(x, r.out.view(), format, opt, ctx);
  return r;
}

float cast_into(ConstTensorView x, TensorView out, const CastOptions& opt, const ExecContext& ctx) {
  const int format = check_cast(x, out.dtype, opt);
  FRUGAL_REQUIRE(out.shape == x.shape, kOp, "out shape differs from the input shape");
  FRUGAL_REQUIRE(out.device == x.device, kOp, "out is on another device than the input");
  FRUGAL_REQUIRE(out.is_contiguous(), kOp, "out must be contiguous");
  return run_cast(x, out, format, opt, ctx);
}

}  // namespace frugal::amp
