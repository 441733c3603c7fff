// DLPack import and export: zero-copy round trips, ownership (the deleter runs exactly once, after
// the last Tensor), strided and offset imports, read-only imports and every rejection.
#include <dlpack/dlpack.h>
#include <gtest/gtest.h>

#include <array>
#include <numeric>
#include <vector>

#include "frugal/core.hpp"

namespace frugal {
namespace {

/// A hand-built DLManagedTensor over caller memory whose deleter counts its calls.
struct Producer {
  std::vector<float> data;
  std::array<int64_t, 8> shape{};
  std::array<int64_t, 8> strides{};
  DLManagedTensor managed{};
  int deleted = 0;

  Producer(std::vector<float> values, std::vector<int64_t> dims, std::vector<int64_t> st = {})
      : data(std::move(values)) {
    std::copy(dims.begin(), dims.end(), shape.begin());
    std::copy(st.begin(), st.end(), strides.begin());
    DLTensor& t = managed.dl_tensor;
    t.data = data.data();
    t.device = DLDevice{kDLCPU, 0};
    t.ndim = static_cast<int>(dims.size());
    t.dtype = DLDataType{kDLFloat, 32, 1};
    t.shape = shape.data();
    t.strides = st.empty() ? nullptr : strides.data();
    t.byte_offset = 0;
    managed.manager_ctx = this;
    managed.deleter = [](DLManagedTensor* self) {
      ++static_cast<Producer*>(self->manager_ctx)->deleted;
    };
  }
};

std::vector<float> iota(int n) {
  std::vector<float> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0.f);
  return v;
}

/// Expects from_dlpack(t) to throw `code` with a message starting "[from_dlpack]", and not to
/// take ownership (the deleter is not called).
void expect_import_rejected(Producer& p, ErrorCode code = ErrorCode::kInvalidArgument) {
  try {
    from_dlpack(&p.managed);
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_EQ(std::string(e.what()).rfind("[from_dlpack]", 0), 0u) << e.what();
  }
  EXPECT_EQ(p.deleted, 0);
}

TEST(DLPack, ImportIsZeroCopyAndDeletesOnceAfterTheLastTensor) {
  Producer p(iota(6), {2, 3});
  {
    Tensor a = from_dlpack(&p.managed);
    EXPECT_EQ(a.data_ptr(), p.data.data());
    EXPECT_EQ(a.shape(), (Shape{2, 3}));
    EXPECT_EQ(a.strides(), (Strides{3, 1}));
    EXPECT_EQ(a.dtype(), DType::kF32);
    EXPECT_TRUE(a.device().is_cpu());
    Tensor view = a.slice(0, 1, 2);
    a = Tensor();
    EXPECT_EQ(p.deleted, 0);  // the slice still shares the storage
    EXPECT_EQ(view.to_vector<float>(), (std::vector<float>{3, 4, 5}));
    // Writes reach the producer's memory.
    view.fill(9.0);
    EXPECT_EQ(p.data[4], 9.0f);
  }
  EXPECT_EQ(p.deleted, 1);
}

TEST(DLPack, ImportsStridedViewsAndByteOffsets) {
  // The transpose of the row-major 2x3 matrix [[0 1 2] [3 4 5]], described by strides.
  Producer p(iota(6), {3, 2}, {1, 3});
  {
    Tensor t = from_dlpack(&p.managed);
    EXPECT_FALSE(t.is_contiguous());
    EXPECT_EQ(t.strides(), (Strides{1, 3}));
    EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  }
  EXPECT_EQ(p.deleted, 1);

  // Row 1 of the 2x3 matrix, reached through byte_offset.
  Producer q(iota(6), {3});
  q.managed.dl_tensor.byte_offset = 3 * sizeof(float);
  {
    Tensor t = from_dlpack(&q.managed);
    EXPECT_EQ(t.data_ptr(), q.data.data() + 3);
    EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{3, 4, 5}));
  }
  EXPECT_EQ(q.deleted, 1);
}

TEST(DLPack, ImportsScalarsEmptyTensorsAndPinnedHostMemory) {
  Producer s(std::vector<float>{7}, {});
  EXPECT_EQ(from_dlpack(&s.managed).to_vector<float>(), (std::vector<float>{7}));
  EXPECT_EQ(s.deleted, 1);

  Producer e({}, {0, 4});
  e.managed.dl_tensor.data = nullptr;
  EXPECT_EQ(from_dlpack(&e.managed).numel(), 0);
  EXPECT_EQ(e.deleted, 1);

  Producer h(iota(2), {2});
  h.managed.dl_tensor.device = DLDevice{kDLCUDAHost, 0};
  EXPECT_TRUE(from_dlpack(&h.managed).device().is_cpu());
  EXPECT_EQ(h.deleted, 1);

  // A producer without a deleter keeps ownership.
  Producer n(iota(2), {2});
  n.managed.deleter = nullptr;
  EXPECT_EQ(from_dlpack(&n.managed).to_vector<float>(), (std::vector<float>{0, 1}));
}

TEST(DLPack, ImportMapsEveryDType) {
  struct Case {
    uint8_t code, bits;
    DType dtype;
  };
  const Case cases[] = {{kDLFloat, 16, DType::kF16},       {kDLFloat, 32, DType::kF32},
                        {kDLFloat, 64, DType::kF64},       {kDLBfloat, 16, DType::kBF16},
                        {kDLInt, 8, DType::kI8},           {kDLInt, 32, DType::kI32},
                        {kDLInt, 64, DType::kI64},         {kDLUInt, 8, DType::kU8},
                        {6 /* kDLBool */, 8, DType::kBool}};
  for (const Case& c : cases) {
    Producer p(iota(2), {1});
    p.managed.dl_tensor.dtype = DLDataType{c.code, c.bits, 1};
    EXPECT_EQ(from_dlpack(&p.managed).dtype(), c.dtype) << int{c.code} << "/" << int{c.bits};
    // The exported code and bits are the same ones.
    Tensor t = Tensor::zeros({1}, c.dtype);
    DLManagedTensor* m = to_dlpack(t);
    EXPECT_EQ(m->dl_tensor.dtype.code, c.code);
    EXPECT_EQ(m->dl_tensor.dtype.bits, c.bits);
    EXPECT_EQ(m->dl_tensor.dtype.lanes, 1);
    m->deleter(m);
  }
}

TEST(DLPack, ReadOnlyImportRefusesMutableAccess) {
  Producer p(iota(4), {4});
  {
    const Tensor t = from_dlpack(&p.managed, /*read_only=*/true);
    EXPECT_TRUE(t.read_only());
    EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{0, 1, 2, 3}));
    Tensor m = t;
    EXPECT_THROW(m.data_ptr(), Error);
    EXPECT_THROW(m.fill(1.0), Error);
    EXPECT_EQ(p.data[0], 0.0f);
    // Export of a read-only tensor needs the caller's word that nobody will write.
    try {
      to_dlpack(t);
      ADD_FAILURE() << "exported a read-only tensor";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      EXPECT_EQ(std::string(e.what()).rfind("[to_dlpack]", 0), 0u) << e.what();
    }
    DLManagedTensor* out = to_dlpack(t, /*allow_read_only=*/true);
    EXPECT_EQ(out->dl_tensor.data, p.data.data());
    out->deleter(out);
  }
  EXPECT_EQ(p.deleted, 1);
}

TEST(DLPack, ExportIsZeroCopyAndKeepsTheStorageAlive) {
  DLManagedTensor* m = nullptr;
  const void* data = nullptr;
  {
    Tensor a = Tensor::from_vector(iota(12), {3, 4});
    Tensor view = a.slice(1, 1, 3).t();  // (2, 3), strides (1, 4), element offset 1
    data = view.data_ptr();
    m = to_dlpack(view);
  }
  // The tensors are gone; the export still owns the storage.
  const DLTensor& t = m->dl_tensor;
  EXPECT_EQ(t.data, data);
  EXPECT_EQ(t.byte_offset, 0u);
  EXPECT_EQ(t.device.device_type, kDLCPU);
  EXPECT_EQ(t.ndim, 2);
  EXPECT_EQ(t.shape[0], 2);
  EXPECT_EQ(t.shape[1], 3);
  EXPECT_EQ(t.strides[0], 1);
  EXPECT_EQ(t.strides[1], 4);
  const auto* f = static_cast<const float*>(t.data);
  // Element (i, j) of the view is a[j][1 + i] = 4 j + 1 + i.
  EXPECT_EQ(f[0 * 1 + 2 * 4], 9.0f);
  EXPECT_EQ(f[1 * 1 + 1 * 4], 6.0f);

  // Round trip back into frugal: same memory, and the export's deleter runs when it dies.
  {
    Tensor back = from_dlpack(m);
    EXPECT_EQ(back.data_ptr(), data);
    EXPECT_EQ(back.to_vector<float>(), (std::vector<float>{1, 5, 9, 2, 6, 10}));
  }
}

TEST(DLPack, ExportOfAScalarHasUsablePointers) {
  Tensor s = Tensor::full({}, 4.0, DType::kF64);
  DLManagedTensor* m = to_dlpack(s);
  EXPECT_EQ(m->dl_tensor.ndim, 0);
  EXPECT_EQ(*static_cast<const double*>(m->dl_tensor.data), 4.0);
  m->deleter(m);
}

TEST(DLPack, ExportRejectsUndefinedPackedAndFp8) {
  auto expect_export_rejected = [](const Tensor& t, ErrorCode code) {
    try {
      DLManagedTensor* m = to_dlpack(t);
      m->deleter(m);
      ADD_FAILURE() << "exported";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), code) << e.what();
      EXPECT_EQ(std::string(e.what()).rfind("[to_dlpack]", 0), 0u) << e.what();
    }
  };
  expect_export_rejected(Tensor(), ErrorCode::kInvalidArgument);
  expect_export_rejected(Tensor::zeros({4}, DType::kI4), ErrorCode::kUnsupported);
  expect_export_rejected(Tensor::zeros({4}, DType::kU4), ErrorCode::kUnsupported);
  expect_export_rejected(Tensor::zeros({4}, DType::kF8E4M3), ErrorCode::kUnsupported);
  expect_export_rejected(Tensor::zeros({4}, DType::kF8E5M2), ErrorCode::kUnsupported);
}

TEST(DLPack, ImportRejectsInvalidTensors) {
  try {
    from_dlpack(nullptr);
    ADD_FAILURE() << "accepted null";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(std::string(e.what()).rfind("[from_dlpack]", 0), 0u) << e.what();
  }
  const DLDataType bad_types[] = {
      {kDLFloat, 32, 4},  // vector lanes
      {kDLFloat, 8, 1},    {kDLFloat, 128, 1},       {kDLBfloat, 32, 1},
      {kDLInt, 16, 1},     {kDLInt, 4, 1},           {kDLUInt, 32, 1},
      {kDLComplex, 64, 1}, {kDLOpaqueHandle, 64, 1}, {6, 1, 1},  // bool with 1 bit
      {42, 32, 1}};
  for (const DLDataType& dt : bad_types) {
    Producer p(iota(2), {2});
    p.managed.dl_tensor.dtype = dt;
    SCOPED_TRACE(int{dt.code});
    expect_import_rejected(p);
  }
  {
    Producer p(iota(4), {2, 2}, {-2, 1});
    expect_import_rejected(p);
  }
  {
    Producer p(iota(1), {});
    p.managed.dl_tensor.ndim = 9;
    expect_import_rejected(p);
    p.managed.dl_tensor.ndim = -1;
    expect_import_rejected(p);
  }
  {
    Producer p(iota(2), {2});
    p.managed.dl_tensor.shape = nullptr;
    expect_import_rejected(p);
  }
  {
    Producer p(iota(2), {2});
    p.managed.dl_tensor.shape[0] = -2;
    expect_import_rejected(p);
  }
  {
    Producer p(iota(2), {2});
    p.managed.dl_tensor.data = nullptr;
    expect_import_rejected(p);
  }
  {
    Producer p(iota(2), {2});
    p.managed.dl_tensor.shape[0] = int64_t{1} << 62;  // spans more bytes than int64 counts
    expect_import_rejected(p);
  }
  for (DLDeviceType dev : {kDLOpenCL, kDLVulkan, kDLMetal, kDLROCM, kDLCUDAManaged}) {
    Producer p(iota(2), {2});
    p.managed.dl_tensor.device = DLDevice{dev, 0};
    expect_import_rejected(p);
  }
  if (!FRUGAL_HAS_CUDA) {
    Producer p(iota(2), {2});
    p.managed.dl_tensor.device = DLDevice{kDLCUDA, 0};
    expect_import_rejected(p, ErrorCode::kNotCompiled);
  }
}

}  // namespace
}  // namespace frugal
