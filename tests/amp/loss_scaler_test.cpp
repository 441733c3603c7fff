// DynamicLossScaler: the scale sequence against hand-computed traces, exact unscaling, the
// first-non-finite report, checkpoint state and bad input.
#include "frugal/amp/loss_scaler.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "frugal/core.hpp"
#include "support/check.hpp"
#include "support/tolerance.hpp"

namespace frugal::amp {
namespace {

using testing::expect_error;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

struct Row {
  bool found_inf;
  float scale_after;
  bool skip, backed_off, grew;
};

void run_trace(const LossScalerOptions& opt, const std::vector<Row>& trace) {
  DynamicLossScaler s(opt);
  float before = opt.init_scale;
  for (size_t i = 0; i < trace.size(); ++i) {
    const StepDecision d = s.update(trace[i].found_inf);
    EXPECT_EQ(d.scale_before, before) << "step " << i + 1;
    EXPECT_EQ(d.scale_after, trace[i].scale_after) << "step " << i + 1;
    EXPECT_EQ(s.scale(), trace[i].scale_after) << "step " << i + 1;
    EXPECT_EQ(d.skip_step, trace[i].skip) << "step " << i + 1;
    EXPECT_EQ(d.backed_off, trace[i].backed_off) << "step " << i + 1;
    EXPECT_EQ(d.grew, trace[i].grew) << "step " << i + 1;
    before = trace[i].scale_after;
  }
}

TEST(LossScaler, PyTorchRuleTrace) {
  // Hand-computed: growth x2 after 2 finite steps, backoff x0.5 on every overflow (hysteresis
  // 1), an overflow resets the growth count.
  LossScalerOptions opt;
  opt.growth_interval = 2;
  constexpr bool F = false, I = true;
  run_trace(opt, {
                     // found_inf, scale after, skip, backed_off, grew
                     {F, 65536.f, false, false, false},
                     {F, 131072.f, false, false, true},
                     {I, 65536.f, true, true, false},
                     {F, 65536.f, false, false, false},
                     {I, 32768.f, true, true, false},  // the finite step before does not count
                     {F, 32768.f, false, false, false},
                     {F, 65536.f, false, false, true},
                 });
}

TEST(LossScaler, HysteresisAndMinScaleTrace) {
  // Hand-computed with init 8, growth x2 every 3 finite steps, backoff x0.5, hysteresis 2 (the
  // first overflow after a growth is tolerated), min_scale 2.
  LossScalerOptions opt;
  opt.init_scale = 8.f;
  opt.growth_interval = 3;
  opt.hysteresis = 2;
  opt.min_scale = 2.f;
  constexpr bool F = false, I = true;
  run_trace(opt, {
                     {F, 8.f, false, false, false},
                     {F, 8.f, false, false, false},
                     {F, 16.f, false, false, true},  // 3 finite steps: grow
                     {I, 16.f, true, false, false},  // tolerated (hysteresis 2 -> 1)
                     {F, 16.f, false, false, false},
                     {I, 8.f, true, true, false},  // hysteresis used up: back off
                     {I, 4.f, true, true, false},  // stays used up until the next growth
                     {I, 2.f, true, true, false},
                     {I, 2.f, true, false, false},  // clamped at min_scale
                     {F, 2.f, false, false, false},
                     {F, 2.f, false, false, false},
                     {F, 4.f, false, false, true},  // growth restores the hysteresis
                     {I, 4.f, true, false, false},  // tolerated again
                     {F, 4.f, false, false, false},
                     {F, 4.f, false, false, false},
                     {F, 8.f, false, false, true},
                     {I, 8.f, true, false, false},
                     {I, 4.f, true, true, false},
                 });
}

TEST(LossScaler, GrowthStopsBeforeFloatOverflow) {
  LossScalerOptions opt;
  opt.init_scale = 0x1p127f;
  opt.growth_interval = 1;
  DynamicLossScaler s(opt);
  const StepDecision d = s.update(false);
  EXPECT_FALSE(d.grew);
  EXPECT_EQ(s.scale(), 0x1p127f);
}

TEST(LossScaler, UnscaleIsExactForPowerOfTwoScales) {
  DynamicLossScaler s;  // 2^16
  Tensor a = testing::random_uniform(Shape{1000, 131}, 3, -1e4f, 1e4f);
  const std::vector<float> a0 = a.to_vector<float>();
  const UnscaleResult r = s.unscale_and_check({{"a", a.view()}});
  EXPECT_FALSE(r.found_inf);
  EXPECT_EQ(r.first_nonfinite, "");
  const std::vector<float> a1 = a.to_vector<float>();
  for (size_t i = 0; i < a0.size(); ++i) {
    ASSERT_EQ(static_cast<double>(a1[i]), static_cast<double>(a0[i]) / 65536.0) << i;
  }
}

TEST(LossScaler, UnscaleMultipliesByTheRoundedInverse) {
  LossScalerOptions opt;
  opt.init_scale = 3.f;
  DynamicLossScaler s(opt);
  Tensor a = testing::random_uniform(Shape{777}, 4);
  const std::vector<float> a0 = a.to_vector<float>();
  s.unscale_and_check({{"a", a.view()}});
  const float inv = static_cast<float>(1.0 / 3.0);
  const std::vector<float> a1 = a.to_vector<float>();
  // One float multiply by float(1/3), correctly rounded: compare with the product in double
  // rounded once to float.
  for (size_t i = 0; i < a0.size(); ++i) {
    ASSERT_EQ(a1[i], static_cast<float>(static_cast<double>(a0[i]) * inv)) << i;
  }
}

TEST(LossScaler, NamesTheFirstNonFiniteTensorAndUnscalesAll) {
  DynamicLossScaler s;
  Tensor a = Tensor::full(Shape{300000}, 2.f);
  Tensor b = Tensor::full(Shape{5, 7}, 4.f);
  Tensor c = Tensor::full(Shape{200000}, 8.f);
  Tensor d = Tensor::full(Shape{0}, 8.f);
  c.view().data_as<float>()[199999] = kNaN;
  b.view().data_as<float>()[20] = -kInf;
  const UnscaleResult r = s.unscale_and_check({{"layer0.w", a.view()},
                                               {"layer1.w", b.view()},
                                               {"empty", d.view()},
                                               {"layer2.b", c.view()}});
  EXPECT_TRUE(r.found_inf);
  EXPECT_EQ(r.first_nonfinite, "layer1.w");
  EXPECT_EQ(r.num_nonfinite_tensors, 2);
  EXPECT_EQ(a.to_vector<float>()[0], 2.f / 65536.f);
  EXPECT_EQ(c.to_vector<float>()[0], 8.f / 65536.f);
  // Only a NaN in the last element of a large tensor: still found.
  Tensor e = Tensor::full(Shape{1 << 20}, 1.f);
  e.view().data_as<float>()[(1 << 20) - 1] = kInf;
  const UnscaleResult r2 = s.unscale_and_check({{"a", a.view()}, {"e", e.view()}});
  EXPECT_EQ(r2.first_nonfinite, "e");
  EXPECT_FALSE(s.unscale_and_check({}).found_inf);
}

// Many tensors in one multi-tensor pass (sizes from 0 to several 64K chunks): every element is
// the correctly rounded product, and the flags are those of a scalar scan of the inputs, on 1 and
// 2 threads.
TEST(LossScaler, MultiTensorPassFlagsExactlyTheNonFiniteTensors) {
  LossScalerOptions opt;
  opt.init_scale = 3.f;  // 1/3 is inexact: every product is rounded
  DynamicLossScaler s(opt);
  const float inv = static_cast<float>(1.0 / 3.0);
  for (const int nthreads : {1, 2}) {
    std::vector<Tensor> ts;
    std::vector<std::pair<std::string, TensorView>> grads;
    std::vector<std::vector<float>> before;
    std::string first_bad;
    int64_t num_bad = 0;
    for (int t = 0; t < 60; ++t) {
      const int64_t n = t % 7 == 0 ? 0 : (t * 7919) % 200000 + (t % 3 == 0 ? 131072 : 1);
      Tensor x = testing::random_uniform(Shape{n}, static_cast<uint64_t>(100 + t), -1e3f, 1e3f);
      if (n > 0 && t % 5 == 2) {
        const float bad = t % 2 == 0 ? kNaN : -kInf;
        x.view().data_as<float>()[(t * 104729) % n] = bad;
      }
      before.push_back(x.to_vector<float>());
      bool has_bad = false;
      for (const float v : before.back()) has_bad = has_bad || !std::isfinite(v);
      if (has_bad && first_bad.empty()) first_bad = testing::numbered('g', t);
      num_bad += has_bad;
      ts.push_back(x);
      grads.emplace_back(testing::numbered('g', t), ts.back().view());
    }
    const UnscaleResult r = s.unscale_and_check(grads, testing::threads(nthreads));
    EXPECT_TRUE(r.found_inf);
    EXPECT_EQ(r.first_nonfinite, first_bad);
    EXPECT_EQ(r.num_nonfinite_tensors, num_bad);
    for (size_t t = 0; t < ts.size(); ++t) {
      const std::vector<float> after = ts[t].to_vector<float>();
      for (size_t i = 0; i < after.size(); ++i) {
        const float want = static_cast<float>(static_cast<double>(before[t][i]) * inv);
        if (std::isnan(want)) {
          ASSERT_TRUE(std::isnan(after[i])) << t << " " << i;
        } else {
          ASSERT_EQ(after[i], want) << t << " " << i;
        }
      }
    }
  }
}

TEST(LossScaler, StateRoundTrips) {
  LossScalerOptions opt;
  opt.hysteresis = 3;
  DynamicLossScaler a(opt);
  a.update(false);
  a.update(true);
  a.update(false);
  const LossScalerState st = a.state();
  EXPECT_EQ(st.scale, 65536.f);
  EXPECT_EQ(st.growth_tracker, 1);
  EXPECT_EQ(st.hysteresis_left, 2);
  DynamicLossScaler b(opt);
  b.load_state(st);
  for (bool f : {true, true, false, true}) {
    const StepDecision da = a.update(f), db = b.update(f);
    EXPECT_EQ(da.scale_after, db.scale_after);
  }
  EXPECT_EQ(a.state().growth_tracker, b.state().growth_tracker);
  EXPECT_EQ(a.state().hysteresis_left, b.state().hysteresis_left);
}

TEST(LossScaler, BadInput) {
  const std::string op = "amp::DynamicLossScaler";
  auto with = [](auto f) {
    LossScalerOptions o;
    f(o);
    return o;
  };
  expect_error([&] { DynamicLossScaler(with([](auto& o) { o.init_scale = 0.f; })); },
               ErrorCode::kInvalidArgument, op);
  expect_error([&] { DynamicLossScaler(with([](auto& o) { o.init_scale = kNaN; })); },
               ErrorCode::kInvalidArgument, op);
  expect_error([&] { DynamicLossScaler(with([](auto& o) { o.growth_factor = 1.f; })); },
               ErrorCode::kInvalidArgument, op);
  expect_error([&] { DynamicLossScaler(with([](auto& o) { o.backoff_factor = 1.f; })); },
               ErrorCode::kInvalidArgument, op);
  expect_error([&] { DynamicLossScaler(with([](auto& o) { o.growth_interval = 0; })); },
               ErrorCode::kInvalidArgument, op);
  expect_error([&] { DynamicLossScaler(with([](auto& o) { o.hysteresis = 0; })); },
               ErrorCode::kInvalidArgument, op);
  expect_error([&] { DynamicLossScaler(with([](auto& o) { o.min_scale = 1e6f; })); },
               ErrorCode::kInvalidArgument, op);
  DynamicLossScaler s;
  expect_error([&] { s.load_state({kInf, 0, 1}); }, ErrorCode::kInvalidArgument, op);
  expect_error([&] { s.load_state({1.f, -1, 1}); }, ErrorCode::kInvalidArgument, op);
  expect_error([&] { s.load_state({1.f, 0, 2}); }, ErrorCode::kInvalidArgument, op);
  Tensor g64 = Tensor::zeros(Shape{4}, DType::kF64);
  expect_error(
      [&] {
        s.unscale_and_check({{"g", g64.view()}});
      },
      ErrorCode::kInvalidArgument, "amp::unscale_and_check");
  Tensor g = Tensor::zeros(Shape{4, 3});
  Tensor gt = g.transpose(0, 1);
  expect_error(
      [&] {
        s.unscale_and_check({{"g", gt.view()}});
      },
      ErrorCode::kInvalidArgument, "amp::unscale_and_check");
}

}  // namespace
}  // namespace frugal::amp
