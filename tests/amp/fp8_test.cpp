// FP8 recipes: the scale rule and amax history by hand trace, HYBRID formats, a Linear under
// FP8 against a reference from its quantized operands, the amax all-reduce over two ranks, and a
// small MLP trained under FP8 emulation.
#include "frugal/amp/fp8.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "frugal/amp/cast.hpp"
#include "frugal/core.hpp"
#include "frugal/nn/linear.hpp"
#include "frugal/nn/models.hpp"
#include "frugal/nn/optim.hpp"
#include "frugal/nn/train.hpp"
#include "frugal/parallel/thread_comm.hpp"
#include "support/check.hpp"
#include "support/tolerance.hpp"

namespace frugal::amp {
namespace {

using frugal::testing::all_close;
using frugal::testing::expect_error;
using frugal::testing::random_uniform;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

/// A host f32 tensor whose max |x| is `amax` (other entries smaller).
Tensor with_amax(float amax) {
  return Tensor::from_vector(std::vector<float>{0.5f * amax, -amax}, {2});
}

TEST(Fp8, ScaleRuleIsFp8MaxOverAmaxOverTwoToTheMargin) {
  EXPECT_EQ(fp8_max(DType::kF8E4M3), 448.f);
  EXPECT_EQ(fp8_max(DType::kF8E5M2), 57344.f);
  EXPECT_EQ(fp8_scale_from_amax(2.f, 448.f, 0, 1.f), 224.f);
  EXPECT_EQ(fp8_scale_from_amax(2.f, 448.f, 1, 1.f), 112.f);
  EXPECT_EQ(fp8_scale_from_amax(7.f, 57344.f, 0, 1.f), 8192.f);
  // amax 0, Inf or NaN keeps the previous scale (TE's torch.where guards).
  EXPECT_EQ(fp8_scale_from_amax(0.f, 448.f, 0, 3.f), 3.f);
  EXPECT_EQ(fp8_scale_from_amax(kInf, 448.f, 0, 3.f), 3.f);
  EXPECT_EQ(fp8_scale_from_amax(kNaN, 448.f, 0, 3.f), 3.f);
  expect_error([] { fp8_max(DType::kBF16); }, ErrorCode::kInvalidArgument, "amp::fp8_max");
}

TEST(Fp8, DelayedScalingHistoryRollsByHandTrace) {
  Fp8Recipe r;
  r.amax_history_len = 3;
  r.format = Fp8Format::kE4M3;
  Fp8TensorMeta m;
  // use: amax of x | scale used by that cast | history after it (newest first)
  struct Row {
    float amax, scale;
    std::vector<float> hist;
  };
  const std::vector<Row> trace = {
      {2.f, 1.f, {2, 0, 0}},    // first use: initial scale 1
      {4.f, 224.f, {4, 2, 0}},  // max(2, 0, 0) = 2 -> 448 / 2
      {1.f, 112.f, {1, 4, 2}},  // max(4, 2, 0) = 4
      {1.f, 112.f, {1, 1, 4}},  // max(1, 4, 2) = 4
      {1.f, 112.f, {1, 1, 1}},  // max(1, 1, 4) = 4: the 4 drops out after this
      {1.f, 448.f, {1, 1, 1}},  // max(1, 1, 1) = 1
  };
  for (const Row& row : trace) {
    m.quantize(with_amax(row.amax), DType::kF8E4M3, r);
    EXPECT_EQ(m.scale(), row.scale) << "amax " << row.amax;
    EXPECT_EQ(m.amax_history(), row.hist);
  }
}

TEST(Fp8, MostRecentAmaxUsesTheNewestEntry) {
  Fp8Recipe r;
  r.amax_history_len = 4;
  r.amax_compute = AmaxCompute::kMostRecent;
  Fp8TensorMeta m;
  m.quantize(with_amax(8.f), DType::kF8E4M3, r);
  m.quantize(with_amax(1.f), DType::kF8E4M3, r);  // scale from 8 (the previous step)
  EXPECT_EQ(m.scale(), 56.f);
  m.quantize(with_amax(1.f), DType::kF8E4M3, r);  // most recent: 1, although 8 is in the history
  EXPECT_EQ(m.scale(), 448.f);
}

TEST(Fp8, CurrentScalingUsesTheTensorsOwnAmax) {
  Fp8Recipe r;
  r.scaling = Fp8Scaling::kCurrent;
  r.margin = 1;
  Fp8TensorMeta m;
  const Tensor q = m.quantize(with_amax(7.f), DType::kF8E5M2, r);
  EXPECT_EQ(m.scale(), 57344.f / 7.f / 2.f);
  EXPECT_EQ(q.dtype(), DType::kF8E5M2);
  // -7 * scale = -28672 is exactly representable in E5M2.
  EXPECT_EQ(q.to(DType::kF32).to_vector<float>()[1], -28672.f);
}

TEST(Fp8, HybridIsE4M3ForwardE5M2Backward) {
  Fp8Recipe r;
  EXPECT_EQ(r.forward_dtype(), DType::kF8E4M3);
  EXPECT_EQ(r.backward_dtype(), DType::kF8E5M2);
  r.format = Fp8Format::kE4M3;
  EXPECT_EQ(r.backward_dtype(), DType::kF8E4M3);
  r.amax_history_len = 0;
  expect_error([&] { check_recipe(r); }, ErrorCode::kInvalidArgument, "amp::Fp8Recipe");
  expect_error([&] { Fp8Autocast g(r); }, ErrorCode::kInvalidArgument, "amp::Fp8Recipe");
}

/// fp8 tensor decoded exactly and multiplied by its dequantization factor, in double.
Tensor dequant(const Tensor& q, float scale) {
  std::vector<double> v = q.to(DType::kF64).to_vector<double>();
  for (double& e : v) e /= scale;
  return Tensor::from_vector(v, q.shape());
}

TEST(Fp8, LinearMatchesReferenceFromItsQuantizedOperands) {
  nn::Linear lin(32, 16, true, 1);
  const Tensor x = random_uniform({8, 32}, 2, -3.f, 3.f);
  const Tensor g = random_uniform({8, 16}, 3, -0.01f, 0.01f);
  Fp8Recipe r;
  r.scaling = Fp8Scaling::kCurrent;  // scales known from the tensors themselves
  Tensor y, gx;
  {
    Fp8Autocast fp8(r);
    y = lin.forward(x);
    gx = lin.backward(g);
  }
  const auto quant = [](const Tensor& t, DType d) {
    const float amax = abs_max(t).to_vector<float>()[0];
    const float s = fp8_max(d) / amax;
    CastOptions o;
    o.scale = s;
    return dequant(cast(t, d, o).out, s);
  };
  EXPECT_EQ(lin.input_meta().scale(), 448.f / abs_max(x).to_vector<float>()[0]);
  EXPECT_EQ(lin.grad_meta().scale(), 57344.f / abs_max(g).to_vector<float>()[0]);  // E5M2
  const Tensor xq = quant(x, DType::kF8E4M3);
  const Tensor wq = quant(lin.weight().value, DType::kF8E4M3);
  const Tensor gq = quant(g, DType::kF8E5M2);
  ::frugal::GemmOptions tb;
  tb.trans_b = true;
  std::vector<double> yr = ::frugal::gemm(xq, wq, tb).to_vector<double>();
  const std::vector<float> b = lin.bias()->value.to_vector<float>();
  for (std::size_t i = 0; i < yr.size(); ++i) yr[i] += b[i % 16];
  // Exact fp8 products, fp32 accumulation of 32 terms vs double.
  EXPECT_TRUE(all_close(y, Tensor::from_vector(yr, {8, 16}), 1e-5, 1e-5));
  EXPECT_TRUE(all_close(gx, ::frugal::gemm(gq, wq), 1e-5, 1e-6));
  ::frugal::GemmOptions ta;
  ta.trans_a = true;
  EXPECT_TRUE(all_close(lin.weight().grad, ::frugal::gemm(gq, xq, ta), 1e-5, 1e-6));
}

TEST(Fp8, AmaxIsReducedOverDataParallelRanks) {
  std::vector<float> scales(2, 0.f);
  parallel::run_workers(2, [&](parallel::Communicator& comm) {
    Fp8Recipe r;
    r.scaling = Fp8Scaling::kCurrent;
    r.amax_reduce = &comm;
    Fp8TensorMeta m;
    m.quantize(with_amax(comm.rank() == 0 ? 2.f : 8.f), DType::kF8E4M3, r);
    scales[static_cast<std::size_t>(comm.rank())] = m.scale();
  });
  EXPECT_EQ(scales[0], 56.f);  // 448 / max(2, 8) on both ranks
  EXPECT_EQ(scales[1], 56.f);
}

TEST(Fp8, SmallMlpTrainsUnderFp8Emulation) {
  // Two Gaussian-like blobs in 16 dims (label = sign of the first coordinate's mean shift).
  const int64_t n = 512;
  Tensor xs = random_uniform({n, 16}, 5, -1.f, 1.f);
  std::vector<float> xv = xs.to_vector<float>();
  std::vector<int64_t> lab(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    lab[static_cast<std::size_t>(i)] = i % 2;
    xv[static_cast<std::size_t>(i * 16)] += (i % 2 == 0 ? -1.f : 1.f);
  }
  nn::LabeledData data{Tensor::from_vector(xv, {n, 16}), Tensor::from_vector(lab, {n})};
  auto model = nn::make_mlp({16, 32, 2}, 7);
  nn::AdamW opt(model->named_parameters(), {.lr = 1e-2});
  nn::TrainOptions o;
  o.epochs = 5;
  o.batch_size = 32;
  o.progress = false;
  Fp8Recipe r;
  r.amax_history_len = 16;
  Fp8Autocast fp8(r);
  const nn::TrainResult res = nn::train_classifier(*model, opt, data, data, o);
  // The classes are separable by the sign of x0 (uniform noise of half-width 1 around -1 / +1):
  // fp8 training must find it (fp32 reaches 100%) and the loss must fall.
  EXPECT_GT(res.test_accuracy, 0.95);
  EXPECT_LT(res.loss_history.back(), res.loss_history.front());
  auto& first = dynamic_cast<nn::Linear&>((*model)[0]);
  EXPECT_GT(first.input_meta().uses(), 5);
  EXPECT_GT(first.grad_meta().scale(), 1.f);  // E5M2 scales grew from their initial 1
}

}  // namespace
}  // namespace frugal::amp
