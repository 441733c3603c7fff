// MixedPrecision hooks in the training loop: fp16 loss scaling surviving an injected Inf gradient
// (hand-computed trace, weights unchanged by the skipped step), scaler state in checkpoints, the
// Inf-in-master-weights error, bf16 training without a scaler, and AdamW's bf16 moments.
#include "frugal/amp/mixed_precision.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "frugal/amp/autocast.hpp"
#include "frugal/core.hpp"
#include "frugal/core/philox.hpp"
#include "frugal/nn/checkpoint.hpp"
#include "frugal/nn/linear.hpp"
#include "frugal/nn/models.hpp"
#include "frugal/nn/optim.hpp"
#include "frugal/nn/train.hpp"
#include "support/check.hpp"
#include "support/tolerance.hpp"

namespace frugal::amp {
namespace {

using frugal::testing::all_close;
using frugal::testing::expect_error;
using frugal::testing::random_uniform;
using frugal::testing::same_bits;

constexpr float kInf = std::numeric_limits<float>::infinity();

/// n examples in `dim` dims, separable by the sign of coordinate 0 (shifted by -1 / +1).
nn::LabeledData blobs(int64_t n, int64_t dim, uint32_t seed) {
  std::vector<float> x = random_uniform({n, dim}, seed).to_vector<float>();
  std::vector<int64_t> y(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    y[static_cast<std::size_t>(i)] = i % 2;
    x[static_cast<std::size_t>(i * dim)] += i % 2 == 0 ? -1.f : 1.f;
  }
  return {Tensor::from_vector(x, {n, dim}), Tensor::from_vector(y, {n})};
}

TEST(MixedPrecision, Fp16SurvivesInjectedInfGradientByHandTrace) {
  auto model = nn::make_mlp({4, 3}, 1);
  nn::SGD opt(model->named_parameters(), {.lr = 0.1});
  MixedPrecisionOptions mo;
  mo.dtype = DType::kF16;
  mo.scaler.init_scale = 8.f;
  mo.scaler.growth_interval = 2;
  MixedPrecision mp(opt, mo);
  ASSERT_TRUE(mp.loss_scaling());
  nn::StepHooks h = mp.hooks();
  std::vector<float> scales;  // the loss scale each step used
  Tensor w_at_skip;
  bool checked_unchanged = false;
  const auto inner = h.before_step;
  h.before_step = [&](int64_t step) {
    Tensor& w = model->named_parameters()[0].param->value;
    if (step == 3) {
      // Nothing touched the master weights since the skipped step 2 saw them.
      EXPECT_TRUE(same_bits(w, w_at_skip));
      checked_unchanged = true;
    }
    scales.push_back(mp.loss_scale());
    if (step == 2) {
      w_at_skip = w.clone();
      Tensor& g = model->named_parameters()[0].param->grad;
      std::vector<float> gv = g.to_vector<float>();
      gv[5] = kInf;  // the injected overflow
      g.copy_from(Tensor::from_vector(gv, g.shape()));
    }
    return inner(step);
  };
  nn::TrainOptions o;
  o.epochs = 3;
  o.batch_size = 4;
  o.progress = false;
  o.hooks = h;
  const nn::LabeledData d = blobs(8, 4, 2);
  AmpContext ac(mp.policy());
  const nn::TrainResult r = nn::train_classifier(*model, opt, d, d, o);
  // Hand trace (init 8, growth x2 after 2 finite steps, backoff x0.5, hysteresis 1):
  // step 0 finite (1), step 1 finite (2: grow to 16), step 2 Inf (skip, 16 -> 8),
  // step 3 finite (1), step 4 finite (2: grow to 16), step 5 finite (1).
  EXPECT_EQ(scales, (std::vector<float>{8, 8, 16, 8, 8, 16}));
  EXPECT_EQ(mp.loss_scale(), 16.f);
  EXPECT_TRUE(checked_unchanged);
  EXPECT_EQ(r.skipped_steps, 1);
  ASSERT_EQ(mp.skipped().size(), 1u);
  EXPECT_EQ(mp.skipped()[0].step, 2);
  EXPECT_EQ(mp.skipped()[0].first_nonfinite, "0.weight");
  EXPECT_EQ(mp.skipped()[0].num_nonfinite_tensors, 1);
  EXPECT_EQ(mp.skipped()[0].scale_before, 16.f);
  EXPECT_EQ(mp.skipped()[0].scale_after, 8.f);
  EXPECT_EQ(opt.step_count(), 5);  // 6 steps, one skipped
  for (const nn::NamedParameter& np : model->named_parameters()) {
    for (float v : np.param->value.to_vector<float>()) EXPECT_TRUE(std::isfinite(v));
  }
}

TEST(MixedPrecision, ScalerStateIsSavedInCheckpoints) {
  auto model = nn::make_mlp({4, 2}, 3);
  nn::SGD opt(model->named_parameters(), {.lr = 0.1});
  MixedPrecisionOptions mo;
  mo.dtype = DType::kF16;
  mo.scaler.hysteresis = 2;
  MixedPrecision mp(opt, mo);
  // One finite step, then an overflow that consumes one hysteresis: state (65536, 0, 1).
  mp.unscale_and_update(0);
  model->named_parameters()[1].param->grad.fill(kInf);
  EXPECT_FALSE(mp.unscale_and_update(1));
  EXPECT_EQ(mp.last_unscale().first_nonfinite, "0.bias");
  nn::TrainState st;
  mp.save_state(st);
  const std::string path =
      (std::filesystem::temp_directory_path() / "frugal_amp_scaler_ckpt.safetensors").string();
  nn::save_checkpoint(path, *model, &opt, st);
  MixedPrecision fresh(opt, mo);
  fresh.load_state(nn::load_checkpoint(path, *model, &opt));
  std::filesystem::remove(path);
  EXPECT_EQ(fresh.scaler().state().scale, 65536.f);
  EXPECT_EQ(fresh.scaler().state().growth_tracker, 0);
  EXPECT_EQ(fresh.scaler().state().hysteresis_left, 1);
  nn::TrainState bad;
  bad.extra["amp.loss_scale"] = "x";
  expect_error([&] { fresh.load_state(bad); }, ErrorCode::kInvalidArgument, "amp::MixedPrecision");
}

TEST(MixedPrecision, InfInMasterWeightsAfterAStepIsAnError) {
  auto model = nn::make_mlp({3, 2}, 4);
  nn::SGD opt(model->named_parameters(), {.lr = 1.0});
  MixedPrecision mp(opt);  // bf16: no loss scaling, so an Inf gradient reaches the update
  EXPECT_FALSE(mp.loss_scaling());
  nn::StepHooks h = mp.hooks();
  EXPECT_FALSE(static_cast<bool>(h.loss_scale));
  model->named_parameters()[0].param->grad.fill(kInf);
  ASSERT_TRUE(h.before_step(0));
  opt.step();
  expect_error([&] { h.after_step(0); }, ErrorCode::kInvalidArgument, "amp::MixedPrecision");
}

TEST(MixedPrecision, BadOptions) {
  auto model = nn::make_mlp({3, 2}, 4);
  nn::SGD opt(model->named_parameters(), {.lr = 1.0});
  MixedPrecisionOptions mo;
  mo.dtype = DType::kF32;
  expect_error([&] { MixedPrecision mp(opt, mo); }, ErrorCode::kInvalidArgument,
               "amp::MixedPrecision");
  nn::Linear l64(3, 2, true, 0, DType::kF64);
  nn::SGD opt64(l64.named_parameters(), {.lr = 1.0});
  expect_error([&] { MixedPrecision mp(opt64); }, ErrorCode::kInvalidArgument,
               "amp::MixedPrecision");
}

TEST(MixedPrecision, Bf16TrainingOfAnMlpMatchesFp32Accuracy) {
  const nn::LabeledData d = blobs(512, 16, 9);
  double acc[2];
  for (int low = 0; low < 2; ++low) {
    auto model = nn::make_mlp({16, 32, 2}, 7);
    nn::AdamW opt(model->named_parameters(), {.lr = 1e-2});
    MixedPrecision mp(opt);
    nn::TrainOptions o;
    o.epochs = 3;
    o.batch_size = 32;
    o.progress = false;
    o.hooks = mp.hooks();
    AutocastPolicy p = mp.policy();
    if (low == 0) p.low_precision.clear(), p.low_saved_activations = false;
    AmpContext ac(p);
    acc[low] = nn::train_classifier(*model, opt, d, d, o).test_accuracy;
  }
  EXPECT_GT(acc[0], 0.95);  // separable data
  EXPECT_GT(acc[1], 0.95);
}

// ---- AdamW with bf16 moments -------------------------------------------------------------

/// Runs `steps` AdamW steps on a (64) parameter with fixed pseudo-random gradients.
std::vector<Tensor> run_adamw(const nn::AdamWOptions& o, int steps) {
  nn::Parameter p{random_uniform({64}, 1), Tensor::zeros({64}), true};
  nn::AdamW opt({{"p", &p}}, o);
  for (int s = 0; s < steps; ++s) {
    p.grad.copy_from(random_uniform({64}, 100 + static_cast<uint32_t>(s), -0.1f, 0.1f));
    opt.step();
  }
  const nn::OptimizerState st = opt.state();
  return {p.value, st.tensors.at("p.exp_avg").clone(), st.tensors.at("p.exp_avg_sq").clone()};
}

TEST(AdamWBf16Moments, FirstStepStoresTheFp32MomentsRoundedToNearestEven) {
  nn::AdamWOptions f32;
  nn::AdamWOptions b16 = f32;
  b16.moments_dtype = DType::kBF16;
  const std::vector<Tensor> a = run_adamw(f32, 1), b = run_adamw(b16, 1);
  EXPECT_EQ(b[1].dtype(), DType::kBF16);
  EXPECT_TRUE(same_bits(b[1], a[1].to(DType::kBF16)));
  EXPECT_TRUE(same_bits(b[2], a[2].to(DType::kBF16)));
  // The first update is computed from the fp32 values in registers: identical parameters.
  EXPECT_TRUE(same_bits(b[0], a[0]));
}

TEST(AdamWBf16Moments, FiftyStepsStayCloseToTheFp32Reference) {
  nn::AdamWOptions f32;
  f32.lr = 1e-3;
  for (bool stochastic : {false, true}) {
    nn::AdamWOptions b16 = f32;
    b16.moments_dtype = DType::kBF16;
    b16.stochastic_rounding = stochastic;
    const std::vector<Tensor> a = run_adamw(f32, 50), b = run_adamw(b16, 50);
    // Each stored moment has relative error <= 2^-8 (stochastic) or 2^-9 (nearest), so each
    // update m / sqrt(v) is off by < 1%: 50 updates of size <= lr stay within 50 * lr * 1%.
    EXPECT_TRUE(all_close(b[0], a[0], 0.0, 50 * 1e-3 * 1e-2)) << "stochastic " << stochastic;
  }
}

TEST(AdamWBf16Moments, StochasticRoundingFollowsTheDocumentedPhiloxStream) {
  // docs/amp.md: element i of exp_avg takes bits [16 (i % 8), +16) of Philox(counter = i / 8 +
  // offset, key = seed) (x | y << 32 | z << 64 | w << 96); exp_avg_sq starts at offset +
  // ceil(n / 8); a step consumes 2 ceil(n / 8) counters (offset 0 at the first step). The
  // reference rounds by hand: add the 16 bits to the fp32 bits and truncate.
  const int64_t n = 37;  // not a multiple of 8
  const uint64_t seed = 7;
  nn::Parameter p{Tensor::zeros({n}), random_uniform({n}, 5, -1.f, 1.f), true};
  nn::AdamWOptions o;
  o.moments_dtype = DType::kBF16;
  o.stochastic_rounding = true;
  o.seed = seed;
  nn::AdamW opt({{"p", &p}}, o);
  const std::vector<float> g = p.grad.to_vector<float>();
  const auto bits16 = [&](uint64_t offset, uint64_t i) {
    const Uint4 b = Philox4x32::generate(philox_counter(i / 8, offset), seed);
    const uint32_t words[4] = {b.x, b.y, b.z, b.w};
    return (words[(i % 8) / 2] >> (16 * (i % 2))) & 0xFFFFu;
  };
  const auto sr = [](float x, uint32_t r) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    return static_cast<uint16_t>((u + r) >> 16);  // no overflow for these magnitudes
  };
  const uint64_t blocks = (static_cast<uint64_t>(n) + 7) / 8;
  opt.step();
  const nn::OptimizerState st = opt.state();
  const Tensor m = st.tensors.at("p.exp_avg"), v = st.tensors.at("p.exp_avg_sq");
  const auto* mb = static_cast<const uint16_t*>(m.data_ptr());
  const auto* vb = static_cast<const uint16_t*>(v.data_ptr());
  for (int64_t i = 0; i < n; ++i) {
    const auto e = static_cast<uint64_t>(i);
    const float gi = g[static_cast<std::size_t>(i)];
    // First step from zero moments: m = (1 - beta1) g, v = (1 - beta2) g^2, one rounding each
    // in fp32 whether or not the compiler fuses the multiply-adds (the addends are 0).
    const float mi = static_cast<float>(1.0 - 0.9) * gi;
    const float vi = static_cast<float>(1.0 - 0.999) * (gi * gi);
    EXPECT_EQ(mb[i], sr(mi, bits16(0, e))) << i;
    EXPECT_EQ(vb[i], sr(vi, bits16(blocks, e))) << i;
  }
}

TEST(AdamWBf16Moments, StochasticRoundingIsUnbiased) {
  // 4096 equal gradients: after one step m = 0.1 g for every element; stochastic rounding
  // stores one of the two bf16 neighbours with probabilities that average to the exact value.
  nn::Parameter p{Tensor::zeros({4096}), Tensor::full({4096}, 1.0 / 3.0), true};
  nn::AdamWOptions o;
  o.moments_dtype = DType::kBF16;
  o.stochastic_rounding = true;
  o.seed = 42;
  nn::AdamW opt({{"p", &p}}, o);
  opt.step();
  const std::vector<float> m =
      opt.state().tensors.at("p.exp_avg").to(DType::kF32).to_vector<float>();
  const float exact = 0.f + static_cast<float>(1.0 - 0.9) * (1.f / 3.f);
  const float lo = static_cast<float>(BFloat16::from_bits(BFloat16(exact).bits));
  double mean = 0;
  int distinct_hi = 0;
  for (float v : m) {
    mean += v;
    distinct_hi += v != lo;
  }
  mean /= static_cast<double>(m.size());
  const double ulp = std::ldexp(1.0, std::ilogb(exact) - 7);  // bf16 spacing at `exact`
  // The mean of 4096 Bernoulli choices: std <= 0.5 / 64 ulp; allow 5 sigma.
  EXPECT_NEAR(mean, exact, 5 * 0.5 / 64 * ulp);
  EXPECT_GT(distinct_hi, 0);  // both neighbours occur
  expect_error(
      [] {
        nn::AdamWOptions bad;
        bad.moments_dtype = DType::kF16;
        nn::Parameter q{Tensor::zeros({2}), Tensor::zeros({2}), true};
        nn::AdamW a({{"q", &q}}, bad);
      },
      ErrorCode::kInvalidArgument, "AdamW");
}

}  // namespace
}  // namespace frugal::amp
