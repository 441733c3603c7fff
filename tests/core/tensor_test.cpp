// Tensor construction, views and copies on the CPU, checked against values written by hand.
#include <gtest/gtest.h>

#include <numeric>

#include "frugal/core.hpp"
#include "support/tolerance.hpp"

namespace frugal {
namespace {

std::vector<float> iota(int64_t n) {
  std::vector<float> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0.f);
  return v;
}

TEST(Tensor, EmptyHasContiguousStridesAndAlignedData) {
  Tensor t = Tensor::empty({2, 3, 4});
  EXPECT_EQ(t.rank(), 3);
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.strides(), (Strides{12, 4, 1}));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data_ptr()) % kHostAlignment, 0u);
  EXPECT_TRUE(t.is_contiguous());
}

TEST(Tensor, FullAndZeros) {
  EXPECT_EQ(Tensor::full({5}, 2.5).to_vector<float>(), std::vector<float>(5, 2.5f));
  EXPECT_EQ(Tensor::zeros({3}, DType::kI32).to_vector<int32_t>(), std::vector<int32_t>(3, 0));
}

TEST(Tensor, TransposeIsAViewAndContiguousCopies) {
  Tensor a = Tensor::from_vector(iota(6), {2, 3});
  Tensor t = a.t();
  EXPECT_EQ(t.shape(), (Shape{3, 2}));
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(t.data_ptr(), a.data_ptr());
  // Row-major read of the transpose of [[0 1 2] [3 4 5]].
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  Tensor c = t.contiguous();
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_NE(c.data_ptr(), a.data_ptr());
}

TEST(Tensor, SliceAndReshape) {
  Tensor a = Tensor::from_vector(iota(12), {3, 4});
  Tensor rows = a.slice(0, 1, 3);
  EXPECT_EQ(rows.to_vector<float>(), (std::vector<float>{4, 5, 6, 7, 8, 9, 10, 11}));
  Tensor cols = a.slice(1, -2, 4);
  EXPECT_EQ(cols.to_vector<float>(), (std::vector<float>{2, 3, 6, 7, 10, 11}));
  EXPECT_EQ(a.reshape({2, -1}).shape(), (Shape{2, 6}));
  EXPECT_THROW(cols.reshape({6}), Error);  // not contiguous
}

TEST(Tensor, WritesThroughAViewReachTheOwner) {
  Tensor a = Tensor::zeros({2, 2});
  Tensor col = a.slice(1, 1, 2);
  col.fill(7.0);
  EXPECT_EQ(a.to_vector<float>(), (std::vector<float>{0, 7, 0, 7}));
}

TEST(Tensor, WrapIsCopyFreeAndRunsTheDeleter) {
  std::vector<float> buf = {1, 2, 3, 4};
  bool deleted = false;
  {
    Tensor t = Tensor::wrap(buf.data(), {2, 2}, DType::kF32, Device::cpu(),
                            [&](void*) { deleted = true; });
    EXPECT_EQ(t.data_ptr(), buf.data());
    t.fill(9.0);
    Tensor copy = t;  // shares the storage
    (void)copy;
  }
  EXPECT_TRUE(deleted);
  EXPECT_EQ(buf, std::vector<float>(4, 9.f));
}

TEST(Tensor, ReadOnlyRefusesMutableAccess) {
  Tensor t = Tensor::full({2}, 1.0);
  t.set_read_only(true);
  EXPECT_THROW(t.data_ptr(), Error);
  EXPECT_THROW(t.fill(2.0), Error);
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{1, 1}));  // reads still work
  EXPECT_FALSE(t.clone().read_only());
}

TEST(Tensor, ConversionsRoundHalfToEvenAndSaturate) {
  Tensor x = Tensor::from_vector(std::vector<float>{0.5f, 1.5f, 2.5f, -0.5f, 300.f, -300.f,
                                                    std::nanf("")},
                                 {7});
  EXPECT_EQ(x.to(DType::kI8).to_vector<int8_t>(),
            (std::vector<int8_t>{0, 2, 2, 0, 127, -128, 0}));
  EXPECT_EQ(x.to(DType::kU8).to_vector<uint8_t>(),
            (std::vector<uint8_t>{0, 2, 2, 0, 255, 0, 0}));
}

TEST(Tensor, PackedInt4RoundTripsAndSaturates) {
  Tensor x = Tensor::from_vector(std::vector<float>{-8, -1, 0, 7, 9, -20, 3}, {7});
  Tensor q = x.to(DType::kI4);
  EXPECT_EQ(q.nbytes(), 4);
  EXPECT_EQ(q.to_vector<int8_t>(), (std::vector<int8_t>{-8, -1, 0, 7, 7, -8, 3}));
  Tensor u = x.to(DType::kU4);
  EXPECT_EQ(u.to_vector<uint8_t>(), (std::vector<uint8_t>{0, 0, 0, 7, 9, 0, 3}));
  Tensor f = Tensor::full({3}, 5.0, DType::kI4);
  EXPECT_EQ(f.to_vector<int8_t>(), (std::vector<int8_t>{5, 5, 5}));
}

TEST(Tensor, LowPrecisionFloatsConvertThroughCopy) {
  Tensor x = Tensor::from_vector(std::vector<float>{1.f, 0.1f, 448.f, 1000.f}, {4});
  // bf16 keeps 8 significant bits: 0.1 -> 0.10009765625 (0x3DCD).
  EXPECT_EQ(x.to(DType::kBF16).to_vector<float>()[1], 0.10009765625f);
  // e4m3 saturates at 448 (OCP FP8, satfinite conversion).
  EXPECT_EQ(x.to(DType::kF8E4M3).to_vector<float>()[3], 448.f);
}

TEST(Tensor, BadInputIsRejectedWithTheOpName) {
  try {
    Tensor::empty({2, -1});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("[Tensor::empty]"), std::string::npos);
  }
  Tensor a = Tensor::zeros({2, 3});
  EXPECT_THROW(a.slice(0, 1, 5), Error);
  EXPECT_THROW(a.slice(2, 0, 1), Error);
  EXPECT_THROW(a.transpose(0, 3), Error);
  EXPECT_THROW(a.reshape({4, 2}), Error);
  EXPECT_THROW(a.data<double>(), Error);
  EXPECT_THROW(Tensor::from_vector(std::vector<float>{1, 2}, {3}), Error);
  EXPECT_THROW(Tensor::zeros({3}).copy_from(a), Error);
  EXPECT_THROW(Tensor::wrap(nullptr, {2}, DType::kF32), Error);
  EXPECT_THROW(Tensor().clone(), Error);
}

TEST(Tensor, CudaWithoutDeviceIsAClearError) {
  if (cuda_available()) GTEST_SKIP() << "a CUDA device is present";
  try {
    Tensor::empty({4}, DType::kF32, Device::cuda());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("no usable CUDA device"), std::string::npos);
  }
}

TEST(Memory, HostHighWaterMarkTracksAllocations) {
  reset_host_peak();
  const int64_t before = host_allocated_bytes();
  {
    Tensor big = Tensor::empty({1 << 20});  // 4 MiB
    EXPECT_GE(host_allocated_bytes() - before, 4 << 20);
  }
  EXPECT_EQ(host_allocated_bytes(), before);
  EXPECT_GE(host_peak_bytes() - before, 4 << 20);
}

TEST(ExecContext, RunsInAnArenaOfTheRequestedSize) {
  ExecContext ctx;
  ctx.num_threads = 1;
  Tensor a = Tensor::full({100000}, 3.0);
  Tensor b = Tensor::empty({100000});
  b.copy_from(a, ctx);
  EXPECT_EQ(b.to_vector<float>(), std::vector<float>(100000, 3.f));
}

}  // namespace
}  // namespace frugal
