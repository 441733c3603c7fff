#include "frugal/core/random.hpp"

#include <cmath>

#include "core/random.hpp"
#include "cu_ops.hpp"

namespace frugal {
namespace {

void check_dtype(DType t, const char* op) {
  if (t != DType::kF32 && t != DType::kF64 && t != DType::kF16 && t != DType::kBF16) {
    detail::fail(ErrorCode::kUnsupported, op, "dtype ", dtype_name(t),
                 " is not supported (f32, f64, f16, bf16)");
  }
}

void check_uniform_args(const char* op, DType t, float lo, float hi) {
  FRUGAL_REQUIRE(std::isfinite(lo) && std::isfinite(hi), op, "bounds must be finite, got lo ", lo,
                 " and hi ", hi);
  FRUGAL_REQUIRE(lo < hi, op, "lo ", lo, " must be less than hi ", hi);
  FRUGAL_REQUIRE(std::isfinite(hi - lo), op, "hi - lo overflows float (lo ", lo, ", hi ", hi, ")");
  check_dtype(t, op);
}

void check_normal_args(const char* op, DType t, float mean, float std) {
  FRUGAL_REQUIRE(std::isfinite(mean), op, "mean must be finite, got ", mean);
  FRUGAL_REQUIRE(std::isfinite(std) && std >= 0.f, op, "std must be finite and >= 0, got ", std);
  check_dtype(t, op);
}

void check_view(const char* op, const TensorView& dst) {
  FRUGAL_REQUIRE(dst.data != nullptr || dst.numel() == 0, op, "null data pointer");
}

void dispatch_uniform(TensorView dst, float lo, float hi, const ExecContext& ctx) {
  if (dst.numel() == 0) return;
  switch (dst.device.kind) {
    case DeviceKind::kCpu:
      return cpu::fill_uniform(dst, lo, hi, ctx);
    case DeviceKind::kCuda:
      return cu::fill_uniform(dst, lo, hi, ctx);
  }
}

void dispatch_normal(TensorView dst, float mean, float std, const ExecContext& ctx) {
  if (dst.numel() == 0) return;
  switch (dst.device.kind) {
    case DeviceKind::kCpu:
      return cpu::fill_normal(dst, mean, std, ctx);
    case DeviceKind::kCuda:
      return cu::fill_normal(dst, mean, std, ctx);
  }
}

}  // namespace

Tensor rand_uniform(Shape shape, DType dtype, Device device, const ExecContext& ctx, float lo,
                    float hi) {
  check_uniform_args("rand_uniform", dtype, lo, hi);
  Tensor out = Tensor::empty(shape, dtype, device, ctx);
  dispatch_uniform(out.view(), lo, hi, ctx);
  return out;
}

Tensor rand_normal(Shape shape, DType dtype, Device device, const ExecContext& ctx, float mean,
                   float std) {
  check_normal_args("rand_normal", dtype, mean, std);
  Tensor out = Tensor::empty(shape, dtype, device, ctx);
  dispatch_normal(out.view(), mean, std, ctx);
  return out;
}

void fill_uniform(TensorView dst, float lo, float hi, const ExecContext& ctx) {
  check_uniform_args("fill_uniform", dst.dtype, lo, hi);
  check_view("fill_uniform", dst);
  dispatch_uniform(dst, lo, hi, ctx);
}

void fill_normal(TensorView dst, float mean, float std, const ExecContext& ctx) {
  check_normal_args("fill_normal", dst.dtype, mean, std);
  check_view("fill_normal", dst);
  dispatch_normal(dst, mean, std, ctx);
}

}  // namespace frugal
