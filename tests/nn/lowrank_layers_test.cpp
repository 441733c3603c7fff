// Factorized Linear / Conv2d layers against their reconstructed dense layers, the model rewrite,
// and LoRA (finite differences in double, frozen base, merge equivalence).
#include "frugal/nn/lowrank_layers.hpp"

#include <gtest/gtest.h>

#include <cmath>

#include "basic_test_util.hpp"
#include "frugal/lowrank/svd.hpp"
#include "frugal/nn/models.hpp"
#include "frugal/ref/lowrank.hpp"

namespace frugal::nn {
namespace {

using frugal::testing::all_close;
using testing::expect_error;
using testing::numeric_grad;
using testing::random_f64;

/// x W^T + b in double on the host (the dense reference layer).
Tensor dense_linear(const Tensor& x, const std::vector<double>& w, const Tensor& b, int64_t out) {
  const int64_t n = x.dim(-1), rows = x.numel() / n;
  std::vector<double> y =
      ref::matmul(x.to_vector<double>(), ref::transpose(w, out, n), rows, n, out);
  if (b.defined()) {
    const std::vector<double> bv = b.to_vector<double>();
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < out; ++j)
        y[static_cast<std::size_t>(r * out + j)] += bv[static_cast<std::size_t>(j)];
  }
  return Tensor::from_vector(y, {rows, out});
}

TEST(FactorizeLinear, MatchesReconstructedDenseLayer) {
  const int64_t in = 12, out = 9, r = 4;
  Linear lin(in, out, true, 3, DType::kF64);
  auto seq = factorize_linear(lin, r);
  ASSERT_EQ(seq->size(), 2u);
  EXPECT_EQ(seq->type_name(), "LowRankLinear");
  auto& l1 = dynamic_cast<Linear&>((*seq)[0]);
  auto& l2 = dynamic_cast<Linear&>((*seq)[1]);
  EXPECT_EQ(l1.weight().value.shape(), (Shape{r, in}));
  EXPECT_EQ(l1.bias(), nullptr);
  EXPECT_EQ(l2.weight().value.shape(), (Shape{out, r}));
  // The reconstructed dense weight W2 W1 is the rank-4 truncated SVD of W (Eckart-Young).
  const std::vector<double> w21 = ref::matmul(l2.weight().value.to_vector<double>(),
                                              l1.weight().value.to_vector<double>(), out, r, in);
  const lowrank::SvdResult t = lowrank::svd_truncated(lin.weight().value, r);
  EXPECT_TRUE(all_close(Tensor::from_vector(w21, {out, in}), lowrank::reconstruct(t.u, t.s, t.vt),
                        0.0, 1e-13));  // f64 rounding of O(1) products
  // sqrt(S) split evenly: both factors have the same spectrum sqrt(s_i).
  const Tensor x = random_f64({5, in}, 1);
  EXPECT_TRUE(all_close(seq->forward(x), dense_linear(x, w21, lin.bias()->value, out), 0.0,
                        1e-13));  // same sums in another order
  // Full rank reproduces the layer itself.
  auto full = factorize_linear(lin, std::min(in, out));
  EXPECT_TRUE(all_close(full->forward(x), lin.forward(x), 0.0, 1e-13));  // f64 rounding
}

TEST(FactorizeLinear, FactorsShareTheSingularValues) {
  Linear lin(10, 8, false, 5, DType::kF64);
  auto seq = factorize_linear(lin, 3);
  const Tensor s1 = lowrank::singular_values(dynamic_cast<Linear&>((*seq)[0]).weight().value);
  const Tensor s2 = lowrank::singular_values(dynamic_cast<Linear&>((*seq)[1]).weight().value);
  EXPECT_TRUE(all_close(s1, s2, 1e-12, 0.0));  // both sqrt(s_i) up to rounding
}

Tensor dense_conv(const Tensor& x, const Tensor& w, Conv2d& c) {
  return conv2d(x, w, c.bias() != nullptr ? c.bias()->value.cview() : ConstTensorView{},
                c.params());
}

TEST(FactorizeConv, Tucker2MatchesReconstructedDenseConv) {
  Conv2d conv(4, 6, Size2{3, 3}, Conv2dOptions{.stride = 2, .padding = 1}, 7, DType::kF64);
  auto seq = factorize_conv_tucker2(conv, 3, 2);
  ASSERT_EQ(seq->size(), 3u);
  EXPECT_EQ(seq->type_name(), "Tucker2Conv2d");
  const lowrank::Tucker2Result t = lowrank::tucker2(conv.weight().value, 3, 2);
  const Tensor x = random_f64({2, 4, 7, 6}, 2);
  const Tensor want = dense_conv(x, lowrank::tucker2_reconstruct(t), conv);
  EXPECT_TRUE(all_close(seq->forward(x), want, 0.0, 1e-12));  // f64, different summation order
  // Full ranks reproduce the layer.
  auto full = factorize_conv_tucker2(conv, 6, 4);
  EXPECT_TRUE(all_close(full->forward(x), conv.forward(x), 0.0, 1e-12));  // f64 rounding
}

TEST(FactorizeConv, CpMatchesReconstructedDenseConv) {
  // Different stride, padding and dilation per axis, so the separable split is exercised.
  Conv2d conv(3, 5, Size2{3, 2},
              Conv2dOptions{.stride = Size2{2, 1}, .padding = Size2{1, 2}, .dilation = Size2{1, 2}},
              9, DType::kF64);
  auto seq = factorize_conv_cp(conv, 4);
  ASSERT_EQ(seq->size(), 4u);
  EXPECT_EQ(seq->type_name(), "CPConv2d");
  auto& dw = dynamic_cast<Conv2d&>((*seq)[1]);
  EXPECT_EQ(dw.params().groups, 4);
  const lowrank::CpResult cp = lowrank::cp_als(conv.weight().value, 4);
  const Tensor x = random_f64({2, 3, 8, 7}, 3);
  const Tensor want = dense_conv(x, lowrank::cp_reconstruct(cp), conv);
  EXPECT_TRUE(all_close(seq->forward(x), want, 0.0, 1e-12));  // f64, different summation order
}

TEST(FactorizeModel, RewritesEligibleLayersAndReports) {
  auto model = make_mlp({32, 64, 64, 10}, 1, DType::kF64);
  const Tensor x = random_f64({4, 32}, 4);
  const int64_t before = model->num_parameters();
  // Keep every layer at full rank energy first: rank min(m, n) saves nothing on square-ish
  // layers, so nothing is replaced and outputs are unchanged.
  const auto reports0 = factorize_model(*model, lowrank::RankPolicy::energy(1.0));
  ASSERT_EQ(reports0.size(), 3u);
  for (const auto& r : reports0) EXPECT_FALSE(r.factorized) << r.name;
  EXPECT_EQ(model->num_parameters(), before);

  const auto reports =
      factorize_model(*model, lowrank::RankPolicy::fixed(4), FactorizeOptions{.skip = {"4"}});
  ASSERT_EQ(reports.size(), 2u);  // layer "4" (the classifier) skipped
  for (const auto& r : reports) {
    EXPECT_TRUE(r.factorized) << r.name;
    EXPECT_EQ(r.rank, 4);
    EXPECT_EQ(r.method, "svd");
    EXPECT_LT(r.params_after, r.params_before);
    EXPECT_LT(r.flops_after, r.flops_before);
    EXPECT_GT(r.relative_error, 0.0);
  }
  EXPECT_EQ(reports[0].name, "0");
  EXPECT_EQ(reports[0].params_before, 32 * 64 + 64);
  EXPECT_EQ(reports[0].params_after, 4 * (32 + 64) + 64);
  EXPECT_EQ((*model)[0].type_name(), "LowRankLinear");
  EXPECT_EQ((*model)[4].type_name(), "Linear");
  EXPECT_EQ(model->num_parameters(), before - (reports[0].params_before - reports[0].params_after) -
                                         (reports[1].params_before - reports[1].params_after));
  EXPECT_EQ(model->forward(x).shape(), (Shape{4, 10}));
  // A second rewrite leaves factorized layers alone.
  const auto again = factorize_model(*model, lowrank::RankPolicy::fixed(2));
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].name, "4");
}

TEST(FactorizeModel, ConvolutionsAndNestedSequentials) {
  auto body = std::make_shared<Sequential>();
  body->add(
      std::make_shared<Conv2d>(8, 8, Size2{3, 3}, Conv2dOptions{.padding = 1}, 1, DType::kF64));
  Sequential model;
  model.add(
      std::make_shared<Conv2d>(3, 8, Size2{3, 3}, Conv2dOptions{.padding = 1}, 2, DType::kF64));
  model.add(std::make_shared<Residual>(body));
  model.add(std::make_shared<Conv2d>(8, 8, Size2{1, 1}, Conv2dOptions{}, 3, DType::kF64));
  const auto reports = factorize_model(model, lowrank::RankPolicy::fixed(2));
  ASSERT_EQ(reports.size(), 3u);
  EXPECT_EQ(reports[0].name, "0");
  EXPECT_EQ(reports[1].name, "1.body.0");
  EXPECT_TRUE(reports[1].factorized);
  EXPECT_EQ(reports[1].method, "tucker2");
  EXPECT_EQ(reports[1].params_after, 8 * 2 + 2 * 2 * 9 + 2 * 8 + 8);
  EXPECT_EQ((*body)[0].type_name(), "Tucker2Conv2d");
  EXPECT_FALSE(reports[2].factorized);  // 1x1
  EXPECT_EQ(reports[2].reason, "1x1 convolution");
  const Tensor x = random_f64({1, 3, 5, 5}, 5);
  EXPECT_EQ(model.forward(x).shape(), (Shape{1, 8, 5, 5}));
  // CP on a fresh model.
  Sequential m2;
  m2.add(std::make_shared<Conv2d>(8, 16, Size2{3, 3}, Conv2dOptions{.padding = 1}, 4, DType::kF64));
  const auto cp = factorize_model(m2, lowrank::RankPolicy::compression(4.0),
                                  FactorizeOptions{.conv = ConvFactorization::kCp});
  ASSERT_EQ(cp.size(), 1u);
  EXPECT_TRUE(cp[0].factorized);
  EXPECT_EQ(cp[0].rank, 8 * 16 * 9 / 4 / (8 + 16 + 3 + 3));  // largest R within a quarter
  EXPECT_EQ(m2[0].type_name(), "CPConv2d");
}

TEST(FactorizeModel, GptMlpLayersMatchTheirReconstructedDenseWeights) {
  GPTConfig cfg{.vocab_size = 11,
                .block_size = 8,
                .n_layer = 2,
                .n_head = 2,
                .n_embd = 8,
                .seed = 3,
                .dtype = DType::kF64};
  GPT model(cfg);
  GPT dense(cfg);  // same seed: same weights; gets the reconstructed W2 W1 below
  const int64_t r = 3;
  const auto reports = factorize_model(model, lowrank::RankPolicy::fixed(r));
  // Only the MLPs' c_fc / c_proj are replaceable (the attention holds its layers as members).
  ASSERT_EQ(reports.size(), 4u);
  EXPECT_EQ(reports[0].name, "h.0.mlp.c_fc");
  EXPECT_EQ(reports[1].name, "h.0.mlp.c_proj");
  EXPECT_EQ(reports[3].name, "h.1.mlp.c_proj");
  for (int64_t b = 0; b < cfg.n_layer; ++b) {
    for (std::size_t k : {0u, 2u}) {
      Module& f = *model.block(b).mlp().children()[k].second;
      ASSERT_EQ(f.type_name(), "LowRankLinear");
      auto& seq = dynamic_cast<Sequential&>(f);
      auto& l1 = dynamic_cast<Linear&>(seq[0]);
      auto& l2 = dynamic_cast<Linear&>(seq[1]);
      auto& d = dynamic_cast<Linear&>(*dense.block(b).mlp().children()[k].second);
      const int64_t out = l2.out_features(), in = l1.in_features();
      d.weight().value.copy_from(
          Tensor::from_vector(ref::matmul(l2.weight().value.to_vector<double>(),
                                          l1.weight().value.to_vector<double>(), out, r, in),
                              {out, in}));
      EXPECT_TRUE(all_close(l2.bias()->value, d.bias()->value, 0.0, 0.0));  // bias kept as is
    }
  }
  const Tensor tokens = Tensor::from_vector(std::vector<int64_t>{1, 4, 2, 9, 0, 3, 3, 10}, {2, 4});
  EXPECT_TRUE(all_close(model.forward(tokens), dense.forward(tokens), 0.0,
                        1e-12));  // f64, the factor products summed in another order
  // Backward runs through the factors and fills their gradients.
  model.zero_grad();
  const Tensor logits = model.forward(tokens);
  model.backward(random_f64(logits.shape(), 5));
  auto& l1 = dynamic_cast<Linear&>(dynamic_cast<Sequential&>(model.block(0).mlp().c_fc())[0]);
  EXPECT_GT(frugal::testing::dot(l1.weight().grad, l1.weight().grad), 0.0);
  const LowRankSummary sum = summarize(reports);
  EXPECT_EQ(sum.layers, 4);
  EXPECT_EQ(sum.params_before, 2 * (2 * 8 * 32 + 32 + 8));
  EXPECT_EQ(sum.params_after, 2 * (2 * r * (8 + 32) + 32 + 8));
  EXPECT_DOUBLE_EQ(sum.param_ratio, static_cast<double>(sum.params_before) / sum.params_after);
}

TEST(FactorizeModel, SummaryCountsOnlyReplacedLayers) {
  std::vector<LowRankLayerReport> reps(3);
  auto set = [&](std::size_t i, bool f, int64_t pb, int64_t pa, int64_t fb, int64_t fa) {
    reps[i].factorized = f;
    reps[i].params_before = pb;
    reps[i].params_after = pa;
    reps[i].flops_before = fb;
    reps[i].flops_after = fa;
  };
  set(0, true, 100, 40, 8, 2);
  set(1, false, 50, 50, 6, 6);
  set(2, true, 20, 20, 4, 4);
  const LowRankSummary s = summarize(reps);
  EXPECT_EQ(s.layers, 2);
  EXPECT_EQ(s.params_before, 120);
  EXPECT_EQ(s.params_after, 60);
  EXPECT_DOUBLE_EQ(s.param_ratio, 2.0);
  EXPECT_EQ(s.flops_before, 12);
  EXPECT_EQ(s.flops_after, 6);
  EXPECT_DOUBLE_EQ(summarize({}).param_ratio, 1.0);
}

/// 200 points of a 4-class problem in 16 dimensions whose class means differ (learnable).
TrainTestData toy_classes() {
  const int64_t n = 200, d = 16;
  std::vector<double> x = random_f64({n, d}, 21).to_vector<double>();
  std::vector<int64_t> y(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    y[static_cast<std::size_t>(i)] = i % 4;
    x[static_cast<std::size_t>(i * d + (i % 4))] += 3.0;
  }
  return split_data(
      LabeledData{Tensor::from_vector(x, {n, d}).to(DType::kF32), Tensor::from_vector(y, {n})},
      0.25, 0);
}

TEST(FineTuneFactorized, ClassifierFactorizesMeasuresThenTrainsTheFactors) {
  const TrainTestData data = toy_classes();
  TrainOptions o;
  o.epochs = 2;
  o.batch_size = 32;
  o.num_threads = 1;
  o.progress = false;
  const AdamWOptions adamw{.lr = 1e-2};
  // Reference: the same pre-trained model factorized by factorize_model, measured directly.
  auto train_base = [&] {
    auto m = make_mlp({16, 32, 32, 4}, 2);
    AdamW opt(m->named_parameters(), adamw);
    train_classifier(*m, opt, data.train, data.test, o);
    return m;
  };
  auto ref_model = train_base();
  factorize_model(*ref_model, lowrank::RankPolicy::fixed(4), FactorizeOptions{.skip = {"4"}});
  DataLoaderOptions eo;
  eo.batch_size = 256;  // as train_classifier evaluates
  const double want_before = evaluate_accuracy(
      *ref_model,
      DataLoader(std::make_shared<TensorDataset>(data.test.inputs, data.test.labels), eo));

  auto model = train_base();
  const LowRankFineTuneResult r = fine_tune_factorized_classifier(
      *model, lowrank::RankPolicy::fixed(4), FactorizeOptions{.skip = {"4"}}, data.train, data.test,
      adamw, o);
  ASSERT_EQ(r.layers.size(), 2u);
  EXPECT_EQ(r.summary.layers, 2);
  EXPECT_EQ(r.summary.params_before, 16 * 32 + 32 + 32 * 32 + 32);
  EXPECT_EQ(r.summary.params_after, 4 * 48 + 32 + 4 * 64 + 32);
  EXPECT_DOUBLE_EQ(r.accuracy_before_fine_tune, want_before);
  EXPECT_TRUE(std::isnan(r.val_loss_before_fine_tune));
  EXPECT_EQ(r.fine_tune.epochs, 2);
  EXPECT_EQ(r.fine_tune.num_parameters, model->num_parameters());
  // The factors were trained: they moved away from the reconstruction of the truncated SVD.
  auto& f0 = dynamic_cast<Linear&>(dynamic_cast<Sequential&>((*model)[0])[0]);
  auto& g0 = dynamic_cast<Linear&>(dynamic_cast<Sequential&>((*ref_model)[0])[0]);
  EXPECT_FALSE(frugal::testing::all_equal(f0.weight().value, g0.weight().value));
  EXPECT_GT(r.fine_tune.test_accuracy, 0.5);  // 4 well-separated classes: far above chance
}

TEST(FineTuneFactorized, CharGptMeasuresTheValidationLossAsTrainCharGpt) {
  std::string text;
  for (int i = 0; i < 4; ++i) text += "the cat sat on the mat; the dog sat on the log. a cat. ";
  const CharCorpus corpus = CharCorpus::from_string(text);  // 10% = 22 validation characters
  const GPTConfig cfg = char_gpt_config(corpus.vocab_size(), CharGptSize::kTiny, 1);
  TrainOptions o;
  o.steps = 2;
  o.batch_size = 2;
  o.seq_len = 8;
  o.seed = 4;
  o.eval_batches = 2;
  o.num_threads = 1;
  o.progress = false;
  GPT ref_model(cfg);
  factorize_model(ref_model, lowrank::RankPolicy::fixed(4));
  // train_char_gpt's evaluation windows (char_eval_seed).
  const double want =
      estimate_char_loss(ref_model, corpus, CorpusSplit::kVal, 2, 2, 8, char_eval_seed(o));
  GPT model(cfg);
  const LowRankFineTuneResult r = fine_tune_factorized_char_gpt(
      model, lowrank::RankPolicy::fixed(4), {}, corpus, AdamWOptions{.lr = 1e-3}, o);
  EXPECT_EQ(r.summary.layers, 2 * cfg.n_layer);
  EXPECT_DOUBLE_EQ(r.val_loss_before_fine_tune, want);
  EXPECT_EQ(r.fine_tune.steps, 2);
  EXPECT_TRUE(std::isfinite(r.fine_tune.val_loss));
  EXPECT_TRUE(std::isnan(r.accuracy_before_fine_tune));
}

// ---- LoRA -----------------------------------------------------------------------------------

TEST(LoRALinear, ForwardIsBasePlusScaledLowRankUpdate) {
  auto base = std::make_shared<Linear>(6, 5, true, 1, DType::kF64);
  LoRALinear lora(base, 2, 4.0, 3);
  EXPECT_EQ(lora.scaling(), 2.0);
  EXPECT_FALSE(base->weight().trainable);
  const Tensor x = random_f64({3, 6}, 7);
  // B starts at zero: the adapter is the identity change.
  EXPECT_TRUE(all_close(lora.forward(x), base->forward(x), 0.0, 0.0));
  lora.lora_b().value.copy_from(random_f64({5, 2}, 8));
  // W + s B A as one dense layer.
  std::vector<double> w = base->weight().value.to_vector<double>();
  const std::vector<double> ba = ref::matmul(lora.lora_b().value.to_vector<double>(),
                                             lora.lora_a().value.to_vector<double>(), 5, 2, 6);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] += 2.0 * ba[i];
  EXPECT_TRUE(all_close(lora.forward(x), dense_linear(x, w, base->bias()->value, 5), 0.0,
                        1e-14));  // f64 rounding
}

TEST(LoRALinear, BackwardMatchesFiniteDifferencesAndOnlyAdaptersLearn) {
  auto base = std::make_shared<Linear>(6, 5, true, 1, DType::kF64);
  LoRALinear lora(base, 3, 6.0, 3);
  lora.lora_b().value.copy_from(random_f64({5, 3}, 8));
  Tensor x = random_f64({2, 2, 6}, 9);  // leading dims are flattened
  const Tensor wout = random_f64({2, 2, 5}, 10);
  lora.forward(x);
  lora.zero_grad();
  const Tensor gx = lora.backward(wout);
  auto f = [&] { return lora.forward(x); };
  // Central differences in double: error ~1e-10 (basic_test_util.hpp).
  EXPECT_TRUE(all_close(gx, numeric_grad(x, f, wout), 1e-7, 1e-8));
  EXPECT_TRUE(
      all_close(lora.lora_a().grad, numeric_grad(lora.lora_a().value, f, wout), 1e-7, 1e-8));
  EXPECT_TRUE(
      all_close(lora.lora_b().grad, numeric_grad(lora.lora_b().value, f, wout), 1e-7, 1e-8));
  // The frozen base accumulates nothing.
  EXPECT_TRUE(frugal::testing::all_equal(base->weight().grad, Tensor::zeros({5, 6}, DType::kF64)));
  EXPECT_TRUE(frugal::testing::all_equal(base->bias()->grad, Tensor::zeros({5}, DType::kF64)));
  // An optimizer over every parameter updates A and B only.
  const Tensor w0 = base->weight().value.clone(), b0 = base->bias()->value.clone();
  const Tensor a0 = lora.lora_a().value.clone(), bb0 = lora.lora_b().value.clone();
  SGD opt(lora.named_parameters(), SgdOptions{.lr = 0.1});
  opt.step();
  EXPECT_TRUE(frugal::testing::all_equal(base->weight().value, w0));
  EXPECT_TRUE(frugal::testing::all_equal(base->bias()->value, b0));
  EXPECT_FALSE(frugal::testing::all_equal(lora.lora_a().value, a0));
  EXPECT_FALSE(frugal::testing::all_equal(lora.lora_b().value, bb0));
}

TEST(LoRALinear, MergeIsEquivalentAndReversible) {
  auto base = std::make_shared<Linear>(7, 4, true, 2, DType::kF64);
  LoRALinear lora(base, 2, 8.0, 5);
  lora.lora_b().value.copy_from(random_f64({4, 2}, 11));
  const Tensor x = random_f64({3, 7}, 12);
  const Tensor before = lora.forward(x);
  const Tensor w0 = base->weight().value.clone();
  lora.merge();
  EXPECT_TRUE(lora.merged());
  EXPECT_TRUE(all_close(lora.forward(x), before, 0.0, 1e-14));   // same sums, other order
  EXPECT_TRUE(all_close(base->forward(x), before, 0.0, 1e-14));  // the base alone carries it
  lora.unmerge();
  EXPECT_TRUE(all_close(base->weight().value, w0, 0.0, 1e-15));  // W + dW - dW, rounding
  EXPECT_TRUE(all_close(lora.forward(x), before, 0.0, 1e-14));
}

TEST(LowRankLayers, BadInput) {
  Linear lin(6, 4, true, 1, DType::kF64);
  expect_error([&] { factorize_linear(lin, 0); }, ErrorCode::kInvalidArgument, "factorize_linear");
  expect_error([&] { factorize_linear(lin, 5); }, ErrorCode::kInvalidArgument, "factorize_linear");
  auto base = std::make_shared<Linear>(6, 4, true, 1, DType::kF64);
  expect_error([&] { LoRALinear(base, 0, 1.0); }, ErrorCode::kInvalidArgument, "LoRALinear");
  expect_error([&] { LoRALinear(base, 5, 1.0); }, ErrorCode::kInvalidArgument, "LoRALinear");
  expect_error([&] { LoRALinear(base, 2, 0.0); }, ErrorCode::kInvalidArgument, "LoRALinear");
  expect_error([&] { LoRALinear(nullptr, 2, 1.0); }, ErrorCode::kInvalidArgument, "LoRALinear");
  LoRALinear lora(base, 2, 1.0);
  expect_error(
      [&] {
        lora.backward(random_f64({3, 4}, 1));
      },
      ErrorCode::kInvalidArgument, "Linear::backward");
  Conv2d dw(4, 4, Size2{3, 3}, Conv2dOptions{.groups = 4}, 1, DType::kF64);
  expect_error([&] { factorize_conv_tucker2(dw, 2, 2); }, ErrorCode::kInvalidArgument,
               "factorize_conv_tucker2");
  expect_error([&] { factorize_conv_cp(dw, 2); }, ErrorCode::kInvalidArgument, "factorize_conv_cp");
  Sequential model;
  model.add(std::make_shared<Linear>(6, 4, true, 1, DType::kF64));
  expect_error([&] { factorize_model(model, lowrank::RankPolicy::energy(0.0)); },
               ErrorCode::kInvalidArgument, "select_rank");
  const TrainTestData data = toy_classes();
  TrainOptions quiet;
  quiet.progress = false;
  expect_error(
      [&] {
        fine_tune_factorized_classifier(model, lowrank::RankPolicy::energy(1.5), {}, data.train,
                                        data.test, {}, quiet);
      },
      ErrorCode::kInvalidArgument, "select_rank");
}

}  // namespace
}  // namespace frugal::nn
