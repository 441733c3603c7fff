#include "frugal/core/tensor.hpp"

#include <cstring>

#include "core/convert.hpp"
#include "core/copy.hpp"
#include "core/dtype_dispatch.hpp"
#include "cu_ops.hpp"
#include "frugal/core/memory.hpp"

namespace frugal {

Storage::~Storage() {
  if (!deleter_) return;
  try {
    deleter_(data_);
  } catch (...) {
    // Destructors never throw; a failing deleter (e.g. CUDA already torn down) is ignored.
  }
}

std::shared_ptr<Storage> Storage::allocate(int64_t nbytes, Device device, const ExecContext& ctx) {
  FRUGAL_REQUIRE(nbytes >= 0, "Storage::allocate", "negative size ", nbytes);
  if (device.is_cpu()) {
    const auto n = static_cast<std::size_t>(nbytes);
    void* p = host_allocate(n);
    return std::make_shared<Storage>(p, nbytes, device, [n](void* q) { host_free(q, n); });
  }
  void* stream = ctx.stream;
  const int index = device.index;
  void* p = cu::allocate(nbytes, index, stream);
  return std::make_shared<Storage>(p, nbytes, device,
                                   [index, stream](void* q) { cu::deallocate(q, index, stream); });
}

namespace {

void check_shape(const char* op, const Shape& shape) {
  FRUGAL_REQUIRE(shape.rank() <= kMaxRank, op, "rank ", shape.rank(), " exceeds ", kMaxRank);
  for (int i = 0; i < shape.rank(); ++i) {
    FRUGAL_REQUIRE(shape[i] >= 0, op, "negative extent ", shape[i], " in shape ", shape);
  }
}

void check_device(const char* op, Device device) {
  if (device.is_cuda()) {
    const int n = cuda_device_count();
    FRUGAL_REQUIRE(n > 0, op, "no usable CUDA device for ", device.str());
    FRUGAL_REQUIRE(device.index >= 0 && device.index < n, op, "device ", device.str(),
                   " does not exist (", n, " CUDA devices)");
  }
}

int norm_axis(const char* op, int axis, int rank) {
  const int a = axis < 0 ? axis + rank : axis;
  FRUGAL_REQUIRE(a >= 0 && a < rank, op, "axis ", axis, " out of range for rank ", rank);
  return a;
}

}  // namespace

Tensor Tensor::empty(Shape shape, DType dtype, Device device, const ExecContext& ctx) {
  check_shape("Tensor::empty", shape);
  check_device("Tensor::empty", device);
  Tensor t;
  t.storage_ = Storage::allocate(dtype_nbytes(dtype, shape.numel()), device, ctx);
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::zeros(Shape shape, DType dtype, Device device, const ExecContext& ctx) {
  return full(shape, 0.0, dtype, device, ctx);
}

Tensor Tensor::full(Shape shape, double value, DType dtype, Device device, const ExecContext& ctx) {
  Tensor t = empty(shape, dtype, device, ctx);
  t.fill(value, ctx);
  return t;
}

template <class T>
Tensor Tensor::from_vector(std::span<const T> values, Shape shape) {
  check_shape("Tensor::from_vector", shape);
  FRUGAL_REQUIRE(static_cast<int64_t>(values.size()) == shape.numel(), "Tensor::from_vector",
                 values.size(), " values do not fill shape ", shape);
  Tensor t = empty(shape, dtype_of_v<T>);
  if (!values.empty()) std::memcpy(t.data_ptr(), values.data(), values.size_bytes());
  return t;
}

#define FRUGAL_INSTANTIATE(T) template Tensor Tensor::from_vector<T>(std::span<const T>, Shape);
FRUGAL_INSTANTIATE(float)
FRUGAL_INSTANTIATE(double)
FRUGAL_INSTANTIATE(Half)
FRUGAL_INSTANTIATE(BFloat16)
FRUGAL_INSTANTIATE(Float8E4M3)
FRUGAL_INSTANTIATE(Float8E5M2)
FRUGAL_INSTANTIATE(int8_t)
FRUGAL_INSTANTIATE(uint8_t)
FRUGAL_INSTANTIATE(int32_t)
FRUGAL_INSTANTIATE(int64_t)
FRUGAL_INSTANTIATE(bool)
#undef FRUGAL_INSTANTIATE

Tensor Tensor::wrap(void* data, Shape shape, DType dtype, Device device, Storage::Deleter deleter) {
  return wrap_strided(data, shape, contiguous_strides(shape), dtype, device, std::move(deleter));
}

Tensor Tensor::wrap_strided(void* data, Shape shape, Strides strides, DType dtype, Device device,
                            Storage::Deleter deleter) {
  const char* op = "Tensor::wrap";
  check_shape(op, shape);
  FRUGAL_REQUIRE(strides.rank() == shape.rank(), op, "strides ", strides, " do not match shape ",
                 shape);
  FRUGAL_REQUIRE(data != nullptr || shape.numel() == 0, op, "null data for ", shape.numel(),
                 " elements");
  FRUGAL_REQUIRE(!is_packed(dtype) || strides == contiguous_strides(shape), op,
                 "packed dtype ", dtype_name(dtype), " must be contiguous");
  // The span of bytes the view may touch, for the storage's size.
  int64_t max_offset = 0;
  for (int i = 0; i < shape.rank(); ++i) {
    FRUGAL_REQUIRE(strides[i] >= 0, op, "negative stride ", strides[i], " is not supported");
    if (shape[i] > 0) max_offset += (shape[i] - 1) * strides[i];
  }
  const int64_t nbytes = shape.numel() == 0 ? 0 : dtype_nbytes(dtype, max_offset + 1);
  Tensor t;
  t.storage_ = std::make_shared<Storage>(data, nbytes, device, std::move(deleter));
  t.shape_ = shape;
  t.strides_ = strides;
  t.dtype_ = dtype;
  return t;
}

void Tensor::check_element_type(DType t) const {
  FRUGAL_REQUIRE(defined(), "Tensor::data", "tensor is undefined");
  FRUGAL_REQUIRE(t == dtype_, "Tensor::data", "element type ", dtype_name(t),
                 " requested from a ", dtype_name(dtype_), " tensor");
}

const void* Tensor::data_ptr() const {
  if (!storage_) return nullptr;
  // Packed views always start on a byte (enforced by slice), so the byte offset is exact.
  return static_cast<const char*>(storage_->data()) + dtype_nbytes(dtype_, offset_);
}

void* Tensor::data_ptr() {
  if (read_only_) {
    detail::fail(ErrorCode::kInvalidArgument, "Tensor::data_ptr",
                 "tensor is read-only (imported read-only); write to a clone()");
  }
  return const_cast<void*>(std::as_const(*this).data_ptr());
}

TensorView Tensor::view() {
  return TensorView{data_ptr(), shape_, strides_, dtype_, device()};
}

ConstTensorView Tensor::view() const {
  return ConstTensorView{data_ptr(), shape_, strides_, dtype_, device()};
}

Tensor Tensor::reshape(Shape shape) const {
  const char* op = "Tensor::reshape";
  FRUGAL_REQUIRE(defined(), op, "tensor is undefined");
  int infer = -1;
  int64_t known = 1;
  for (int i = 0; i < shape.rank(); ++i) {
    if (shape[i] == -1) {
      FRUGAL_REQUIRE(infer < 0, op, "more than one -1 in ", shape);
      infer = i;
    } else {
      FRUGAL_REQUIRE(shape[i] >= 0, op, "negative extent in ", shape);
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    FRUGAL_REQUIRE(known > 0 && numel() % known == 0, op, "cannot infer -1 in ", shape, " for ",
                   numel(), " elements");
    shape[infer] = numel() / known;
  }
  FRUGAL_REQUIRE(shape.numel() == numel(), op, "shape ", shape, " has ", shape.numel(),
                 " elements, tensor ", shape_, " has ", numel());
  FRUGAL_REQUIRE(is_contiguous(), op, "tensor with strides ", strides_,
                 " is not contiguous; call contiguous() first");
  Tensor t = *this;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  return t;
}

Tensor Tensor::slice(int axis, int64_t start, int64_t end) const {
  const char* op = "Tensor::slice";
  FRUGAL_REQUIRE(defined(), op, "tensor is undefined");
  const int a = norm_axis(op, axis, rank());
  const int64_t n = shape_[a];
  if (start < 0) start += n;
  if (end < 0) end += n;
  FRUGAL_REQUIRE(0 <= start && start <= end && end <= n, op, "range [", start, ", ", end,
                 ") out of bounds for axis ", a, " of length ", n);
  Tensor t = *this;
  t.offset_ += start * strides_[a];
  t.shape_[a] = end - start;
  if (is_packed(dtype_)) {
    FRUGAL_REQUIRE(t.offset_ % 2 == 0 && t.is_contiguous(), op, "a slice of packed ",
                   dtype_name(dtype_), " must be contiguous and start on a byte");
  }
  return t;
}

Tensor Tensor::transpose(int a, int b) const {
  const char* op = "Tensor::transpose";
  FRUGAL_REQUIRE(defined(), op, "tensor is undefined");
  FRUGAL_REQUIRE(!is_packed(dtype_), op, "packed dtype ", dtype_name(dtype_),
                 " cannot be transposed as a view");
  a = norm_axis(op, a, rank());
  b = norm_axis(op, b, rank());
  Tensor t = *this;
  std::swap(t.shape_[a], t.shape_[b]);
  std::swap(t.strides_[a], t.strides_[b]);
  return t;
}

Tensor Tensor::contiguous(const ExecContext& ctx) const {
  return is_contiguous() ? *this : clone(ctx);
}

Tensor Tensor::clone(const ExecContext& ctx) const {
  FRUGAL_REQUIRE(defined(), "Tensor::clone", "tensor is undefined");
  Tensor t = empty(shape_, dtype_, device(), ctx);
  t.copy_from(view(), ctx);
  return t;
}

Tensor Tensor::to(Device device, const ExecContext& ctx) const {
  FRUGAL_REQUIRE(defined(), "Tensor::to", "tensor is undefined");
  if (device == this->device()) return *this;
  Tensor t = empty(shape_, dtype_, device, ctx);
  t.copy_from(view(), ctx);
  return t;
}

Tensor Tensor::to(DType dtype, const ExecContext& ctx) const {
  FRUGAL_REQUIRE(defined(), "Tensor::to", "tensor is undefined");
  if (dtype == dtype_) return *this;
  Tensor t = empty(shape_, dtype, device(), ctx);
  t.copy_from(view(), ctx);
  return t;
}

Tensor& Tensor::fill(double value, const ExecContext& ctx) {
  FRUGAL_REQUIRE(defined(), "Tensor::fill", "tensor is undefined");
  detail::fill(view(), value, ctx);
  return *this;
}

Tensor& Tensor::copy_from(ConstTensorView src, const ExecContext& ctx) {
  FRUGAL_REQUIRE(defined(), "Tensor::copy_from", "destination is undefined");
  detail::copy(src, view(), ctx);
  return *this;
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  FRUGAL_REQUIRE(defined(), "Tensor::to_vector", "tensor is undefined");
  const Tensor host = to(Device::cpu()).to(dtype_of_v<T>).contiguous();
  std::vector<T> out(static_cast<std::size_t>(numel()));
  if (!out.empty()) std::memcpy(out.data(), host.data_ptr(), out.size() * sizeof(T));
  return out;
}

#define FRUGAL_INSTANTIATE(T) template std::vector<T> Tensor::to_vector<T>() const;
FRUGAL_INSTANTIATE(float)
FRUGAL_INSTANTIATE(double)
FRUGAL_INSTANTIATE(Half)
FRUGAL_INSTANTIATE(BFloat16)
FRUGAL_INSTANTIATE(Float8E4M3)
FRUGAL_INSTANTIATE(Float8E5M2)
FRUGAL_INSTANTIATE(int8_t)
FRUGAL_INSTANTIATE(uint8_t)
FRUGAL_INSTANTIATE(int32_t)
FRUGAL_INSTANTIATE(int64_t)
#undef FRUGAL_INSTANTIATE

}  // namespace frugal
