// DLPack 0.6 import and export. Ownership rules: docs/io.md ("DLPack").
#include "frugal/core/dlpack.hpp"

#include <dlpack/dlpack.h>

#include <array>
#include <limits>
#include <memory>
#include <optional>

#include "frugal/core/build_config.hpp"

namespace frugal {
namespace {

// kDLBool arrived in DLPack 0.8 with this value; 0.6 (the installed header) lacks it.
constexpr uint8_t kDLBoolCode = 6;

std::optional<DType> dtype_from_dl(DLDataType t) {
  if (t.lanes != 1) return std::nullopt;
  switch (t.code) {
    case kDLFloat:
      if (t.bits == 16) return DType::kF16;
      if (t.bits == 32) return DType::kF32;
      if (t.bits == 64) return DType::kF64;
      break;
    case kDLBfloat:
      if (t.bits == 16) return DType::kBF16;
      break;
    case kDLInt:
      if (t.bits == 8) return DType::kI8;
      if (t.bits == 32) return DType::kI32;
      if (t.bits == 64) return DType::kI64;
      break;
    case kDLUInt:
      if (t.bits == 8) return DType::kU8;
      break;
    case kDLBoolCode:
      if (t.bits == 8) return DType::kBool;
      break;
    default:
      break;
  }
  return std::nullopt;
}

std::optional<DLDataType> dtype_to_dl(DType t) {
  auto dl = [](uint8_t code, uint8_t bits) { return DLDataType{code, bits, 1}; };
  switch (t) {
    case DType::kF32:
      return dl(kDLFloat, 32);
    case DType::kF64:
      return dl(kDLFloat, 64);
    case DType::kF16:
      return dl(kDLFloat, 16);
    case DType::kBF16:
      return dl(kDLBfloat, 16);
    case DType::kI8:
      return dl(kDLInt, 8);
    case DType::kU8:
      return dl(kDLUInt, 8);
    case DType::kI32:
      return dl(kDLInt, 32);
    case DType::kI64:
      return dl(kDLInt, 64);
    case DType::kBool:
      return dl(kDLBoolCode, 8);
    case DType::kF8E4M3:
    case DType::kF8E5M2:
    case DType::kI4:
    case DType::kU4:
      break;
  }
  return std::nullopt;
}

/// What an exported DLManagedTensor owns: a Tensor sharing the storage, and the arrays its
/// DLTensor points into.
struct ExportContext {
  Tensor tensor;
  std::array<int64_t, kMaxRank> shape{};
  std::array<int64_t, kMaxRank> strides{};
  DLManagedTensor managed{};
};

void delete_export(DLManagedTensor* self) {
  if (self == nullptr) return;
  std::unique_ptr<ExportContext> owner(static_cast<ExportContext*>(self->manager_ctx));
}

}  // namespace

Tensor from_dlpack(DLManagedTensor* t, bool read_only) {
  const char* op = "from_dlpack";
  FRUGAL_REQUIRE(t != nullptr, op, "null DLManagedTensor");
  const DLTensor& dl = t->dl_tensor;
  FRUGAL_REQUIRE(dl.ndim >= 0 && dl.ndim <= kMaxRank, op, "ndim ", dl.ndim, " is outside [0, ",
                 kMaxRank, "]");
  FRUGAL_REQUIRE(dl.ndim == 0 || dl.shape != nullptr, op, "null shape for ndim ", dl.ndim);
  const auto dtype = dtype_from_dl(dl.dtype);
  FRUGAL_REQUIRE(dtype.has_value(), op, "unsupported DLDataType (code ", int{dl.dtype.code},
                 ", bits ", int{dl.dtype.bits}, ", lanes ", dl.dtype.lanes, ")");

  Device device;
  switch (dl.device.device_type) {
    case kDLCPU:
    case kDLCUDAHost:  // pinned host memory: an ordinary host pointer
      device = Device::cpu();
      break;
    case kDLCUDA:
      if (!FRUGAL_HAS_CUDA) {
        detail::fail(ErrorCode::kNotCompiled, op,
                     "a CUDA tensor needs frugal built with CUDA (FRUGAL_WITH_CUDA)");
      }
      FRUGAL_REQUIRE(dl.device.device_id >= 0 && dl.device.device_id < cuda_device_count(), op,
                     "CUDA device ", dl.device.device_id, " does not exist");
      device = Device::cuda(dl.device.device_id);
      break;
    default:
      detail::fail(ErrorCode::kInvalidArgument, op, "unsupported device type ",
                   static_cast<int>(dl.device.device_type), " (only CPU, CUDA host and CUDA)");
  }

  Shape shape;
  for (int i = 0; i < dl.ndim; ++i) {
    FRUGAL_REQUIRE(dl.shape[i] >= 0, op, "negative extent ", dl.shape[i], " in axis ", i);
    shape.push_back(dl.shape[i]);
  }
  // Reject extents whose product overflows: strides and sizes derived from them would too.
  int64_t numel = 1;
  bool empty = false;
  for (int64_t d : shape) {
    if (d == 0) {
      empty = true;
    } else {
      FRUGAL_REQUIRE(!__builtin_mul_overflow(numel, d, &numel), op, "shape ", shape,
                     " has too many elements");
    }
  }
  if (empty) numel = 0;
  Strides strides = contiguous_strides(shape);
  if (dl.strides != nullptr) {
    for (int i = 0; i < dl.ndim; ++i) {
      FRUGAL_REQUIRE(dl.strides[i] >= 0, op, "negative stride ", dl.strides[i], " in axis ", i,
                     " is not supported");
      strides[i] = dl.strides[i];
    }
  }
  // The furthest element must be addressable in bytes without overflow (8 bytes at most each).
  if (!empty) {
    int64_t max_offset = 0;
    bool overflow = false;
    for (int i = 0; i < shape.rank(); ++i) {
      int64_t reach = 0;
      overflow = overflow || __builtin_mul_overflow(shape[i] - 1, strides[i], &reach) ||
                 __builtin_add_overflow(max_offset, reach, &max_offset);
    }
    overflow = overflow || max_offset > std::numeric_limits<int64_t>::max() / 8 - 1;
    FRUGAL_REQUIRE(!overflow, op, "shape ", shape, " with strides ", strides,
                   " spans more bytes than int64 can count");
  }
  FRUGAL_REQUIRE(dl.data != nullptr || numel == 0, op, "null data for ", numel, " elements");
  void* data = dl.data == nullptr ? nullptr : static_cast<char*>(dl.data) + dl.byte_offset;

  // Everything is checked: from here on the Tensor owns `t`.
  Storage::Deleter deleter;
  if (t->deleter != nullptr) deleter = [t](void*) { t->deleter(t); };
  Tensor out = Tensor::wrap_strided(data, shape, strides, *dtype, device, std::move(deleter));
  out.set_read_only(read_only);
  return out;
}

DLManagedTensor* to_dlpack(const Tensor& t, bool allow_read_only) {
  const char* op = "to_dlpack";
  FRUGAL_REQUIRE(t.defined(), op, "tensor is undefined");
  FRUGAL_REQUIRE(!t.read_only() || allow_read_only, op,
                 "tensor is read-only and DLPack 0.6 cannot say so; pass allow_read_only=true "
                 "if the consumer will not write, or export a clone()");
  const auto dl_dtype = dtype_to_dl(t.dtype());
  if (!dl_dtype) {
    detail::fail(ErrorCode::kUnsupported, op, "dtype ", dtype_name(t.dtype()),
                 " has no DLPack 0.6 type code");
  }
  auto ctx = std::make_unique<ExportContext>();
  ctx->tensor = t;
  for (int i = 0; i < t.rank(); ++i) {
    ctx->shape[i] = t.shape()[i];
    ctx->strides[i] = t.strides()[i];
  }
  DLTensor& dl = ctx->managed.dl_tensor;
  // The const overload: exporting is not itself a write (read-only was checked above).
  dl.data = const_cast<void*>(std::as_const(t).data_ptr());
  dl.device = t.device().is_cuda() ? DLDevice{kDLCUDA, t.device().index} : DLDevice{kDLCPU, 0};
  dl.ndim = t.rank();
  dl.dtype = *dl_dtype;
  dl.shape = ctx->shape.data();
  dl.strides = ctx->strides.data();
  dl.byte_offset = 0;
  ctx->managed.manager_ctx = ctx.get();
  ctx->managed.deleter = &delete_export;
  return &ctx.release()->managed;
}

}  // namespace frugal
