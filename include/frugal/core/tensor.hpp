#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "frugal/core/device.hpp"
#include "frugal/core/dtype.hpp"
#include "frugal/core/error.hpp"
#include "frugal/core/exec_context.hpp"
#include "frugal/core/shape.hpp"

namespace frugal {

/// Non-owning, trivially copyable view of tensor memory. Kernels take views.
/// Strides are in elements. Packed dtypes (i4/u4) must be contiguous and start on a byte.
struct TensorView {
  void* data = nullptr;  ///< address of element 0 (already offset)
  Shape shape;
  Strides strides;
  DType dtype = DType::kF32;
  Device device = Device::cpu();

  int rank() const { return shape.rank(); }
  int64_t numel() const { return shape.numel(); }
  int64_t dim(int i) const { return shape[i < 0 ? i + shape.rank() : i]; }
  bool is_contiguous() const { return strides == contiguous_strides(shape) || numel() <= 1; }
  int64_t nbytes() const { return dtype_nbytes(dtype, numel()); }
  template <class T>
  T* data_as() const {
    return static_cast<T*>(data);
  }
};

/// Read-only counterpart of TensorView; a TensorView converts to it implicitly.
struct ConstTensorView {
  const void* data = nullptr;
  Shape shape;
  Strides strides;
  DType dtype = DType::kF32;
  Device device = Device::cpu();

  ConstTensorView() = default;
  ConstTensorView(const void* d, Shape sh, Strides st, DType t, Device dev)
      : data(d), shape(sh), strides(st), dtype(t), device(dev) {}
  ConstTensorView(const TensorView& v)  // NOLINT: implicit by design
      : data(v.data), shape(v.shape), strides(v.strides), dtype(v.dtype), device(v.device) {}

  int rank() const { return shape.rank(); }
  int64_t numel() const { return shape.numel(); }
  int64_t dim(int i) const { return shape[i < 0 ? i + shape.rank() : i]; }
  bool is_contiguous() const { return strides == contiguous_strides(shape) || numel() <= 1; }
  int64_t nbytes() const { return dtype_nbytes(dtype, numel()); }
  template <class T>
  const T* data_as() const {
    return static_cast<const T*>(data);
  }
};

/// A block of memory on one device, freed by its deleter.
class Storage {
 public:
  using Deleter = std::function<void(void*)>;
  Storage(void* data, int64_t nbytes, Device device, Deleter deleter)
      : data_(data), nbytes_(nbytes), device_(device), deleter_(std::move(deleter)) {}
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage();

  /// Allocates `nbytes` on `device` (64-byte aligned host memory; cudaMallocAsync on ctx.stream).
  static std::shared_ptr<Storage> allocate(int64_t nbytes, Device device,
                                           const ExecContext& ctx = {});

  void* data() const { return data_; }
  int64_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_;
  int64_t nbytes_;
  Device device_;
  Deleter deleter_;
};

/// An owning tensor: shared storage plus shape, element strides and an element offset.
/// Copies share storage (like torch.Tensor); use clone() for a deep copy.
class Tensor {
 public:
  Tensor() = default;

  /// Uninitialised tensor on `device`.
  static Tensor empty(Shape shape, DType dtype = DType::kF32, Device device = Device::cpu(),
                      const ExecContext& ctx = {});
  static Tensor zeros(Shape shape, DType dtype = DType::kF32, Device device = Device::cpu(),
                      const ExecContext& ctx = {});
  /// Tensor filled with `value` (converted to `dtype`).
  static Tensor full(Shape shape, double value, DType dtype = DType::kF32,
                     Device device = Device::cpu(), const ExecContext& ctx = {});
  /// Host tensor holding a copy of `values`.
  template <class T>
  static Tensor from_vector(std::span<const T> values, Shape shape);
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, Shape shape) {
    return from_vector(std::span<const T>(values), shape);
  }
  /// Copy-free wrap of caller memory (contiguous). `deleter`, if any, runs when the last
  /// Tensor sharing it is gone; without one the caller keeps ownership.
  static Tensor wrap(void* data, Shape shape, DType dtype, Device device = Device::cpu(),
                     Storage::Deleter deleter = nullptr);
  /// Copy-free wrap with explicit element strides.
  static Tensor wrap_strided(void* data, Shape shape, Strides strides, DType dtype, Device device,
                             Storage::Deleter deleter = nullptr);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Strides& strides() const { return strides_; }
  int rank() const { return shape_.rank(); }
  int64_t dim(int i) const { return shape_[i < 0 ? i + rank() : i]; }
  int64_t numel() const { return shape_.numel(); }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::cpu(); }
  int64_t offset() const { return offset_; }
  int64_t nbytes() const { return dtype_nbytes(dtype_, numel()); }
  bool is_contiguous() const { return strides_ == contiguous_strides(shape_) || numel() <= 1; }
  /// A read-only tensor (e.g. imported through DLPack as read-only) refuses mutable access.
  bool read_only() const { return read_only_; }
  Tensor& set_read_only(bool ro) {
    read_only_ = ro;
    return *this;
  }
  const std::shared_ptr<Storage>& storage() const { return storage_; }

  /// Address of element 0. Throws on a read-only tensor.
  void* data_ptr();
  const void* data_ptr() const;
  template <class T>
  T* data() {
    check_element_type(dtype_of_v<T>);
    return static_cast<T*>(data_ptr());
  }
  template <class T>
  const T* data() const {
    check_element_type(dtype_of_v<T>);
    return static_cast<const T*>(data_ptr());
  }

  /// Mutable view (throws on read-only) and const view.
  TensorView view();
  ConstTensorView view() const;
  ConstTensorView cview() const { return view(); }
  operator TensorView() { return view(); }             // NOLINT: implicit by design
  operator ConstTensorView() const { return view(); }  // NOLINT: implicit by design

  // Views sharing storage.
  /// Same elements, new shape; one extent may be -1. Needs a contiguous tensor.
  Tensor reshape(Shape shape) const;
  /// Elements [start, end) along `axis` (negative indices count from the end).
  Tensor slice(int axis, int64_t start, int64_t end) const;
  /// Swaps two axes.
  Tensor transpose(int a, int b) const;
  /// The matrix transpose of a rank-2 tensor.
  Tensor t() const { return transpose(0, 1); }

  // Copies.
  /// This tensor if contiguous, otherwise a contiguous copy.
  Tensor contiguous(const ExecContext& ctx = {}) const;
  /// Deep contiguous copy on the same device.
  Tensor clone(const ExecContext& ctx = {}) const;
  /// Copy on `device` (this tensor if already there).
  Tensor to(Device device, const ExecContext& ctx = {}) const;
  /// Converted copy (round-to-nearest-even, saturating for f8_e4m3; this tensor if same dtype).
  Tensor to(DType dtype, const ExecContext& ctx = {}) const;
  /// Sets every element to `value`.
  Tensor& fill(double value, const ExecContext& ctx = {});
  /// Copies `src` (same shape; any dtype, device, strides) into this tensor.
  Tensor& copy_from(ConstTensorView src, const ExecContext& ctx = {});

  /// Host copy of the elements as T (converted), in row-major order. For tests and I/O.
  template <class T>
  std::vector<T> to_vector() const;

 private:
  void check_element_type(DType t) const;

  std::shared_ptr<Storage> storage_;
  Shape shape_;
  Strides strides_;
  int64_t offset_ = 0;  // in elements
  DType dtype_ = DType::kF32;
  bool read_only_ = false;
};

}  // namespace frugal
