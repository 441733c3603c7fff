#include "core/copy.hpp"

#include "cu_ops.hpp"

namespace frugal::detail {

void copy(ConstTensorView src, TensorView dst, const ExecContext& ctx) {
  const char* op = "copy";
  FRUGAL_REQUIRE(src.shape == dst.shape, op, "source shape ", src.shape,
                 " differs from destination shape ", dst.shape);
  if (src.numel() == 0) return;
  FRUGAL_REQUIRE(src.data != nullptr && dst.data != nullptr, op, "null data pointer");
  if (src.device == dst.device) {
    switch (src.device.kind) {
      case DeviceKind::kCpu: return cpu::copy(src, dst, ctx);
      case DeviceKind::kCuda: return cu::copy(src, dst, ctx);
    }
  }
  // Across devices: bytes move only between contiguous buffers of the same dtype; conversion and
  // re-striding happen on one side.
  if (src.dtype == dst.dtype && src.is_contiguous() && dst.is_contiguous()) {
    cu::memcpy_bytes(dst.data, dst.device, src.data, src.device, src.nbytes(), ctx);
    return;
  }
  Tensor staged = Tensor::empty(src.shape, dst.dtype, src.device, ctx);
  copy(src, staged.view(), ctx);
  if (dst.is_contiguous()) {
    copy(staged.cview(), dst, ctx);
    return;
  }
  Tensor landed = Tensor::empty(src.shape, dst.dtype, dst.device, ctx);
  copy(staged.cview(), landed.view(), ctx);
  copy(landed.cview(), dst, ctx);
}

void fill(TensorView dst, double value, const ExecContext& ctx) {
  if (dst.numel() == 0) return;
  switch (dst.device.kind) {
    case DeviceKind::kCpu: return cpu::fill(dst, value, ctx);
    case DeviceKind::kCuda: return cu::fill(dst, value, ctx);
  }
}

}  // namespace frugal::detail
