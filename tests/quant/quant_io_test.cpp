// save / load of QTensors in safetensors: round trips for every code storage, metadata, and bad
// files.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "frugal/core.hpp"
#include "frugal/quant.hpp"
#include "frugal/ref/quant.hpp"
#include "support/tolerance.hpp"

namespace frugal::quant {
namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("frugal_quant_io_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

void expect_same(const QTensor& a, const QTensor& b) {
  EXPECT_EQ(a.shape, b.shape);
  EXPECT_EQ(a.spec.bits, b.spec.bits);
  EXPECT_EQ(a.spec.is_signed, b.spec.is_signed);
  EXPECT_EQ(a.spec.symmetric, b.spec.symmetric);
  EXPECT_EQ(a.spec.narrow_range, b.spec.narrow_range);
  EXPECT_EQ(a.spec.granularity, b.spec.granularity);
  EXPECT_EQ(a.spec.axis, b.spec.axis);
  EXPECT_EQ(a.spec.group_size, b.spec.group_size);
  EXPECT_EQ(a.spec.rounding, b.spec.rounding);
  EXPECT_EQ(b.codes.dtype(), a.codes.dtype());
  EXPECT_EQ(ref::unpack_codes(a), ref::unpack_codes(b));
  EXPECT_TRUE(testing::all_equal(a.qparams.scale, b.qparams.scale));
  EXPECT_TRUE(testing::all_equal(a.qparams.zero_point, b.qparams.zero_point));
  EXPECT_TRUE(testing::all_equal(dequantize(a), dequantize(b)));
}

TEST(QuantIo, RoundTripEveryStorage) {
  const Tensor w = testing::random_uniform({8, 64}, 1, -1.f, 1.f);
  QuantSpec s8;
  QuantSpec s4;
  s4.bits = 4;
  s4.symmetric = false;
  QuantSpec s2;
  s2.bits = 2;
  s2.is_signed = false;
  s2.symmetric = false;
  s2.narrow_range = false;
  QuantSpec s3;
  s3.bits = 3;
  s3.narrow_range = true;
  s3.rounding = Rounding::kStochastic;
  std::map<std::string, QTensor> qs = {
      {"w.per_channel_i8", quantize_per_channel(w, 0, s8)},
      {"w.group_i4", quantize_per_group(w, 1, 32, s4)},
      {"w.tensor_u2", quantize_per_tensor(w.slice(1, 0, 63), s2)},  // 504 codes: odd bytes
      {"w.tensor_i3", quantize_per_tensor(w, s3)},
  };
  const std::string path = temp_path("roundtrip.safetensors");
  save_qtensors(path, qs, {{"model", "digits"}});
  std::map<std::string, std::string> meta;
  const auto back = load_qtensors(path, &meta);
  ASSERT_EQ(back.size(), qs.size());
  for (const auto& [name, q] : qs) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(back.count(name));
    expect_same(q, back.at(name));
  }
  EXPECT_EQ(meta.at("model"), "digits");
  EXPECT_EQ(meta.size(), 1u);

  save_qtensor(path, qs.at("w.group_i4"));
  expect_same(qs.at("w.group_i4"), load_qtensor(path));
  std::filesystem::remove(path);
}

TEST(QuantIo, BadFiles) {
  const std::string path = temp_path("bad.safetensors");
  const QTensor q = quantize_per_tensor(testing::random_uniform({4, 4}, 2));
  EXPECT_THROW(save_qtensors(path, {{"q", q}}, {{"frugal.x", "y"}}), Error);
  // A record whose codes tensor is missing.
  save_safetensors(path, {{"q.scale", q.qparams.scale}, {"q.zero_point", q.qparams.zero_point}},
                   {{"frugal.quant.q", R"({"format":"linear","bits":8,"symmetric":true,
                     "signed":true,"narrow_range":false,"granularity":"per_tensor","axis":0,
                     "group_size":0,"rounding":"half_even","shape":[4,4]})"}});
  try {
    load_qtensors(path);
    ADD_FAILURE() << "expected IoError";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kIoError);
    EXPECT_EQ(std::string(e.what()).rfind("[load_qtensors]", 0), 0u) << e.what();
  }
  // Inconsistent records: wrong bits for the codes dtype, bad JSON, a negative scale.
  for (const std::string& rec :
       {std::string(R"({"format":"linear","bits":4,"symmetric":true,"signed":true,)"
                    R"("narrow_range":false,"granularity":"per_tensor","axis":0,"group_size":0,)"
                    R"("rounding":"half_even","shape":[4,4]})"),
        std::string("{not json")}) {
    save_safetensors(path,
                     {{"q.codes", q.codes},
                      {"q.scale", q.qparams.scale},
                      {"q.zero_point", q.qparams.zero_point}},
                     {{"frugal.quant.q", rec}});
    try {
      load_qtensors(path);
      ADD_FAILURE() << "expected IoError for " << rec;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kIoError) << e.what();
    }
  }
  QTensor neg = q;
  neg.qparams.scale = Tensor::full({}, -1.0);
  save_qtensor(path, neg);
  EXPECT_THROW(load_qtensor(path), Error);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace frugal::quant
