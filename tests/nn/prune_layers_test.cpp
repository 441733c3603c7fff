// nn pruning: masked training, schedules, structured physical removal, SparseLinear, report.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "frugal/nn.hpp"
#include "frugal/prune.hpp"
#include "frugal/ref/prune.hpp"
#include "support/check.hpp"
#include "support/tolerance.hpp"

namespace frugal::nn {
namespace {

using frugal::testing::all_close;
using frugal::testing::expect_error;
using frugal::testing::random_uniform;

constexpr ErrorCode kInvalid = ErrorCode::kInvalidArgument;

std::shared_ptr<Sequential> mlp(DType dt = DType::kF32) {
  auto m = std::make_shared<Sequential>();
  m->add(std::make_shared<Linear>(12, 16, true, 1, dt));
  m->add(std::make_shared<ReLU>());
  m->add(std::make_shared<Linear>(16, 10, true, 2, dt));
  m->add(std::make_shared<ReLU>());
  m->add(std::make_shared<Linear>(10, 4, true, 3, dt));
  return m;
}

int64_t zeros_of(const Tensor& t) {
  int64_t z = 0;
  for (double v : t.to_vector<double>()) z += v == 0.0;
  return z;
}

// One forward / backward with an all-ones output gradient.
void fake_backward(Module& m, const Tensor& x) {
  Tensor y = m.forward(x);
  m.backward(Tensor::full(y.shape(), 1.0, y.dtype()));
}

TEST(PruneLayers, MaskedTrainingKeepsPrunedWeightsZero) {
  auto m = mlp();
  Pruner pr(*m);
  ASSERT_EQ(pr.names(), (std::vector<std::string>{"0.weight", "2.weight", "4.weight"}));
  pr.prune_magnitude(0.5);
  for (const auto& n : pr.names()) {
    EXPECT_EQ(
        prune::mask_sparsity(pr.mask(n)),
        static_cast<double>(prune::pruned_count(0.5, pr.mask(n).numel())) / pr.mask(n).numel());
  }
  SGD opt(m->named_parameters(), SgdOptions{0.1});
  Tensor x = random_uniform(Shape{8, 12}, 5);
  for (int s = 0; s < 3; ++s) {
    m->zero_grad();
    fake_backward(*m, x);
    pr.mask_grads();
    for (auto& np : m->named_parameters()) {
      if (np.name == "0.weight") {
        EXPECT_GE(zeros_of(np.param->grad), 16 * 12 / 2);
      }
    }
    opt.step();
    pr.apply_masks();
  }
  for (auto& np : m->named_parameters()) {
    if (np.name == "0.weight") {
      EXPECT_EQ(zeros_of(np.param->value), 96);
    }
  }
}

TEST(PruneLayers, GlobalScopeAndMasksSaveLoad) {
  auto m = mlp();
  Pruner pr(*m);
  pr.prune_magnitude(0.7, PruneScope::kGlobal);
  const int64_t total = 16 * 12 + 10 * 16 + 4 * 10;
  EXPECT_NEAR(pr.sparsity(), static_cast<double>(std::llround(0.7 * total)) / total, 1e-15);
  const std::string path = ::testing::TempDir() + "prune_masks.safetensors";
  pr.save(path);
  auto m2 = mlp();
  Pruner pr2(*m2);
  pr2.load(path);
  for (const auto& n : pr.names()) {
    EXPECT_EQ(pr2.mask(n).to_vector<uint8_t>(), pr.mask(n).to_vector<uint8_t>());
  }
  std::remove(path.c_str());
  Pruner pr3(*m2, {"0.weight"});
  expect_error([&] { pr3.load_state({}); }, kInvalid, "Pruner::load_state");
}

TEST(PruneLayers, NmPruner) {
  auto m = mlp();
  Pruner pr(*m, {"2.weight"});
  pr.prune_nm(2, 4);
  EXPECT_TRUE(prune::is_nm_sparse(pr.mask("2.weight"), 2, 4));
  EXPECT_DOUBLE_EQ(pr.sparsity(), 0.5);
}

TEST(PruneLayers, GradualScheduleClosedForm) {
  const PruneSchedule s = PruneSchedule::gradual(0.0, 0.9, 10, 5, 4);
  for (int64_t t = 0; t < 40; ++t) {
    const bool event = t >= 10 && (t - 10) % 4 == 0 && (t - 10) / 4 <= 5;
    ASSERT_EQ(s.target_at(t).has_value(), event) << t;
    if (event) {
      EXPECT_NEAR(*s.target_at(t), ref::gradual_sparsity(0.0, 0.9, t, 10, 5, 4), 1e-15);
    }
  }
  EXPECT_NEAR(s.sparsity_at(10 + 4), 0.9 - 0.9 * std::pow(0.8, 3), 1e-15);
  EXPECT_DOUBLE_EQ(s.sparsity_at(1000), 0.9);
  const PruneSchedule it = PruneSchedule::iterative(0.2, 3, 5);
  EXPECT_NEAR(*it.target_at(10), 1 - 0.8 * 0.8 * 0.8, 1e-15);
  EXPECT_FALSE(it.target_at(15).has_value());
  EXPECT_TRUE(PruneSchedule::one_shot(0.5, 3).target_at(3).has_value());
  expect_error([] { PruneSchedule::gradual(0.0, 1.0, 0, 1, 1); }, kInvalid, "PruneSchedule");
}

TEST(PruneLayers, PruneFinetuneGradualAndRewind) {
  auto m = mlp();
  Pruner pr(*m);
  SGD opt(m->named_parameters(), SgdOptions{0.05});
  PruneFinetune drv(*m, opt, pr, PruneSchedule::gradual(0.0, 0.8, 2, 4, 2), PruneScope::kLayer,
                    /*rewind_step=*/1);
  Tensor x = random_uniform(Shape{8, 12}, 6);
  std::map<std::string, Tensor> at1;
  for (int s = 0; s < 12; ++s) {
    m->zero_grad();
    fake_backward(*m, x);
    drv.step();
    if (drv.step_count() == 1) {
      for (auto& np : m->named_parameters()) at1[np.name] = np.param->value.clone();
    }
    for (const auto& n : pr.names()) {
      const int64_t numel = pr.mask(n).numel();
      const double want = PruneSchedule::gradual(0.0, 0.8, 2, 4, 2).sparsity_at(drv.step_count());
      ASSERT_DOUBLE_EQ(prune::mask_sparsity(pr.mask(n)),
                       static_cast<double>(prune::pruned_count(want, numel)) / numel);
    }
  }
  drv.rewind();
  for (auto& np : m->named_parameters()) {
    std::vector<double> want = at1[np.name].to_vector<double>();
    if (np.name.find("weight") != std::string::npos) {
      const auto mk = pr.mask(np.name).to_vector<uint8_t>();
      for (std::size_t i = 0; i < want.size(); ++i) want[i] = mk[i] ? want[i] : 0.0;
    }
    EXPECT_EQ(np.param->value.to_vector<double>(), want) << np.name;
  }
}

// Zeroes the weight rows / bias entries (and BatchNorm affine entries) of the pruned channels.
void mask_channels(Parameter& w, Parameter* b, const std::vector<int64_t>& keep) {
  std::vector<char> kept(w.value.dim(0), 0);
  for (int64_t k : keep) kept[k] = 1;
  std::vector<uint8_t> mk(w.value.numel());
  const int64_t per = w.value.numel() / w.value.dim(0);
  for (int64_t i = 0; i < w.value.numel(); ++i) mk[i] = kept[i / per];
  prune::apply_mask(w.value, Tensor::from_vector<uint8_t>(mk, w.value.shape()));
  if (b) {
    std::vector<uint8_t> bm(kept.begin(), kept.end());
    prune::apply_mask(b->value, Tensor::from_vector<uint8_t>(bm, b->value.shape()));
  }
}

TEST(PruneLayers, LinearPhysicalRemovalEqualsMasking) {
  auto m = mlp(DType::kF64);
  Tensor x = random_uniform(Shape{5, 12}, 7).to(DType::kF64);
  auto res = prune_structured(*m, 2, 0.5, prune::Norm::kL1);
  EXPECT_EQ(res.kept.size(), 5u);
  auto& l2 = dynamic_cast<Linear&>((*res.model)[2]);
  auto& l4 = dynamic_cast<Linear&>((*res.model)[4]);
  EXPECT_EQ(l2.out_features(), 5);
  EXPECT_EQ(l4.in_features(), 5);
  EXPECT_LT(res.model->num_parameters(), m->num_parameters());
  Tensor y_small = res.model->forward(x);
  auto& d2 = dynamic_cast<Linear&>((*m)[2]);
  mask_channels(d2.weight(), d2.bias(), res.kept);
  Tensor y_masked = m->forward(x);
  // f64: the two products differ only by exact zero terms and summation blocking.
  EXPECT_TRUE(all_close(y_small, y_masked, 1e-13, 1e-13));
}

TEST(PruneLayers, ConvBatchNormConvRemovalEqualsMasking) {
  auto m = std::make_shared<Sequential>();
  m->add(std::make_shared<Conv2d>(3, 8, 3, Conv2dOptions{1, 1}, 1, DType::kF64));
  m->add(std::make_shared<BatchNorm2d>(8, 1e-5, 0.1, true, DType::kF64));
  m->add(std::make_shared<ReLU>());
  m->add(std::make_shared<Conv2d>(8, 6, 3, Conv2dOptions{}, 2, DType::kF64));
  m->add(std::make_shared<ReLU>());
  m->add(std::make_shared<Flatten>());
  m->add(std::make_shared<Linear>(6 * 4 * 4, 3, true, 3, DType::kF64));
  Tensor x = random_uniform(Shape{2, 3, 6, 6}, 8).to(DType::kF64);
  // Non-trivial BatchNorm statistics and affine parameters.
  m->train(true);
  m->forward(x);
  auto& bn = dynamic_cast<BatchNorm2d&>((*m)[1]);
  bn.weight()->value.copy_from(random_uniform(Shape{8}, 9, 0.5f, 1.5f).to(DType::kF64));
  bn.bias()->value.copy_from(random_uniform(Shape{8}, 10).to(DType::kF64));
  m->eval();
  auto r1 = prune_structured(*m, 0, 0.25);  // filters of conv 0 (through BatchNorm)
  auto r2 = prune_structured(*r1.model, 3, 0.5, prune::Norm::kL1);  // conv 3 -> Flatten -> Linear
  EXPECT_EQ(dynamic_cast<Conv2d&>((*r2.model)[0]).out_channels(), 6);
  EXPECT_EQ(dynamic_cast<BatchNorm2d&>((*r2.model)[1]).num_features(), 6);
  EXPECT_EQ(dynamic_cast<Conv2d&>((*r2.model)[3]).in_channels(), 6);
  EXPECT_EQ(dynamic_cast<Conv2d&>((*r2.model)[3]).out_channels(), 3);
  EXPECT_EQ(dynamic_cast<Linear&>((*r2.model)[6]).in_features(), 3 * 16);
  Tensor y_small = r2.model->forward(x);
  auto& c0 = dynamic_cast<Conv2d&>((*m)[0]);
  mask_channels(c0.weight(), c0.bias(), r1.kept);
  mask_channels(*bn.weight(), bn.bias(), r1.kept);
  auto& c3 = dynamic_cast<Conv2d&>((*m)[3]);
  mask_channels(c3.weight(), c3.bias(), r2.kept);
  Tensor y_masked = m->forward(x);
  // f64: identical terms up to exact zeros and summation blocking.
  EXPECT_TRUE(all_close(y_small, y_masked, 1e-12, 1e-12));
}

TEST(PruneLayers, SparseLinearMatchesMaskedLinear) {
  Linear l(64, 32, true, 4);
  Tensor mk = prune::magnitude_mask(l.weight().value, 0.9);
  prune::apply_mask(l.weight().value, mk);
  SparseLinear s(l, mk);
  EXPECT_EQ(s.weight().nnz(), 64 * 32 - prune::pruned_count(0.9, 64 * 32));
  Tensor x = random_uniform(Shape{3, 7, 64}, 11);
  Tensor want = l.forward(x);
  Tensor got = s.forward(x);
  EXPECT_EQ(got.shape(), want.shape());
  // f32: both sum at most 64 products; only the summation order differs.
  EXPECT_TRUE(all_close(got, want, 1e-5, 1e-6));
  expect_error([&] { s.backward(got); }, ErrorCode::kUnsupported, "SparseLinear");
  expect_error([&] { s.forward(random_uniform(Shape{3, 63}, 1)); }, kInvalid, "SparseLinear");
}

TEST(PruneLayers, Report) {
  auto m = mlp();
  Pruner pr(*m);
  pr.prune_magnitude(0.5);
  PruneReport r = prune_report(*m);
  ASSERT_EQ(r.layers.size(), 3u);
  EXPECT_EQ(r.layers[0].params, 192);
  EXPECT_EQ(r.layers[0].nonzero, 96);
  EXPECT_EQ(r.params, 192 + 160 + 40);
  EXPECT_EQ(r.nonzero, 96 + 80 + 20);
  EXPECT_EQ(r.dense_bytes, 4 * r.params);
  EXPECT_EQ(r.layers[0].csr_bytes, 96 * 8 + 17 * 4);
  EXPECT_EQ(r.sparse_flops, 2 * r.nonzero);
  EXPECT_NE(r.to_string().find("total"), std::string::npos);
}

TEST(PruneLayers, BadInput) {
  auto m = mlp();
  expect_error([&] { prune_structured(*m, 1, 0.5); }, kInvalid,
               "prune_structured");  // ReLU
  expect_error([&] { prune_structured(*m, 4, 0.5); }, kInvalid,
               "prune_structured");  // no consumer
  expect_error([&] { prune_structured(*m, 0, 1.0); }, kInvalid, "prune_structured");
  expect_error([&] { prune_structured(*m, 0, 0.99); }, kInvalid,
               "prune_structured");  // all 16 neurons
  std::vector<double> nan(16, 1.0);
  nan[3] = std::nan("");
  expect_error(
      [&] {
        prune_structured(*m, 0, 0.5, prune::Norm::kL2, Tensor::from_vector<double>(nan, Shape{16}));
      },
      kInvalid, "prune_structured");
  expect_error([&] { Pruner(*m, {"nope"}); }, kInvalid, "Pruner");
  Pruner pr(*m);
  expect_error([&] { pr.prune_magnitude(1.0); }, kInvalid, "Pruner::prune_magnitude");
  expect_error([&] { pr.set_mask("0.weight", Tensor::zeros(Shape{3}, DType::kU8)); }, kInvalid,
               "Pruner::set_mask");
  SGD opt(m->named_parameters(), SgdOptions{0.1});
  PruneFinetune drv(*m, opt, pr, PruneSchedule::one_shot(0.5), PruneScope::kLayer, 5);
  expect_error([&] { drv.rewind(); }, kInvalid, "PruneFinetune::rewind");
}

TEST(PruneLayers, PruneFinetuneHooksInTrainClassifier) {
  auto m = mlp();
  Pruner pr(*m);
  SGD opt(m->named_parameters(), SgdOptions{0.05});
  const PruneSchedule sched = PruneSchedule::gradual(0.0, 0.75, 2, 3, 2);
  PruneFinetune drv(*m, opt, pr, sched);
  LabeledData train{random_uniform(Shape{40, 12}, 12), Tensor()};
  std::vector<int64_t> labels(40);
  for (int i = 0; i < 40; ++i) labels[i] = i % 4;
  train.labels = Tensor::from_vector<int64_t>(labels, Shape{40});
  TrainOptions o;
  o.epochs = 3;
  o.batch_size = 8;  // 5 steps per epoch, 15 in all: every pruning event (2, 4, 6, 8) happens
  o.progress = false;
  o.hooks = drv.hooks();
  const TrainResult r = train_classifier(*m, opt, train, LabeledData{}, o);
  EXPECT_EQ(r.steps, 15);
  EXPECT_EQ(r.skipped_steps, 0);
  EXPECT_EQ(drv.step_count(), 15);
  for (const auto& n : pr.names()) {
    const Tensor& mk = pr.mask(n);
    EXPECT_DOUBLE_EQ(prune::mask_sparsity(mk),
                     static_cast<double>(prune::pruned_count(0.75, mk.numel())) / mk.numel());
  }
  // The weights where the masks are 0 stayed exactly 0 after the last update.
  for (auto& np : m->named_parameters()) {
    if (np.name.find("weight") == std::string::npos) continue;
    const auto mk = pr.mask(np.name).to_vector<uint8_t>();
    const auto w = np.param->value.to_vector<double>();
    for (std::size_t i = 0; i < w.size(); ++i) {
      if (!mk[i]) {
        ASSERT_EQ(w[i], 0.0) << np.name << " " << i;
      }
    }
  }
}

TEST(PruneLayers, PrunedCheckpointRoundTrip) {
  auto m = mlp();
  Pruner pr(*m);
  AdamW opt(m->named_parameters(), AdamWOptions{});
  Tensor x = random_uniform(Shape{8, 12}, 13);
  fake_backward(*m, x);
  pr.prune_magnitude(0.6);
  pr.mask_grads();
  opt.step();
  pr.apply_masks();
  const std::string path = ::testing::TempDir() + "pruned_ckpt.safetensors";
  TrainState st;
  st.step = 7;
  save_pruned_checkpoint(path, *m, &opt, st, pr);

  auto m2 = mlp();
  Pruner pr2(*m2);
  AdamW opt2(m2->named_parameters(), AdamWOptions{});
  const TrainState got = load_pruned_checkpoint(path, *m2, &opt2, pr2);
  EXPECT_EQ(got.step, 7);
  for (const auto& n : pr.names()) {
    EXPECT_EQ(pr2.mask(n).to_vector<uint8_t>(), pr.mask(n).to_vector<uint8_t>()) << n;
  }
  auto p1 = m->named_parameters();
  auto p2 = m2->named_parameters();
  for (std::size_t i = 0; i < p1.size(); ++i) {
    EXPECT_EQ(p2[i].param->value.to_vector<double>(), p1[i].param->value.to_vector<double>());
  }
  // The plain loader reads the same file (it ignores the masks).
  auto m3 = mlp();
  EXPECT_EQ(load_checkpoint(path, *m3, nullptr).step, 7);

  // A checkpoint without masks: an error naming the missing mask, and nothing assigned.
  const std::string plain = ::testing::TempDir() + "plain_ckpt.safetensors";
  save_checkpoint(plain, *m, nullptr, st);
  auto m4 = mlp();
  const auto before = m4->named_parameters()[0].param->value.to_vector<double>();
  Pruner pr4(*m4);
  expect_error([&] { load_pruned_checkpoint(plain, *m4, nullptr, pr4); }, kInvalid,
               "Pruner::load_state");
  EXPECT_EQ(m4->named_parameters()[0].param->value.to_vector<double>(), before);
  std::remove(path.c_str());
  std::remove(plain.c_str());
}

// Dense reference: conv2d of the masked weight (f64).
Tensor masked_conv(Conv2d& c, const Tensor& mask, const Tensor& x) {
  Tensor w = c.weight().value.clone();
  prune::apply_mask(w, mask);
  return conv2d(x, w, c.bias() ? c.bias()->value.cview() : ConstTensorView{}, c.params());
}

TEST(PruneLayers, SparseConv2dMatchesMaskedConv) {
  struct Case {
    int64_t cin, cout, k, stride, pad, dil;
    bool bias;
  };
  for (const Case& cs : {Case{3, 8, 3, 1, 1, 1, true}, Case{4, 6, 3, 2, 0, 1, false},
                         Case{2, 5, 2, 1, 2, 2, true}, Case{5, 7, 1, 1, 0, 1, true}}) {
    Conv2dOptions opt;
    opt.stride = cs.stride;
    opt.padding = cs.pad;
    opt.dilation = cs.dil;
    opt.bias = cs.bias;
    Conv2d c(cs.cin, cs.cout, cs.k, opt, 21, DType::kF64);
    Tensor mk = prune::magnitude_mask(c.weight().value, 0.7);
    SparseConv2d s(c, mk);
    EXPECT_EQ(s.weight().nnz(),
              c.weight().value.numel() - prune::pruned_count(0.7, c.weight().value.numel()));
    Tensor x = random_uniform(Shape{3, cs.cin, 9, 7}, 22).to(DType::kF64);
    Tensor want = masked_conv(c, mk, x);
    Tensor got = s.forward(x);
    ASSERT_EQ(got.shape(), want.shape());
    // f64: only the summation order differs (and exact zero terms).
    EXPECT_TRUE(all_close(got, want, 1e-12, 1e-13)) << cs.cin << " " << cs.k;
  }
}

TEST(PruneLayers, SparseInferenceModelMatchesMaskedCnn) {
  DigitsCnnConfig cfg;
  cfg.seed = 3;
  auto m = make_digits_cnn(cfg);
  Tensor x = random_uniform(Shape{5, 1, 8, 8}, 23);
  m->forward(x);  // one training-mode pass moves the BatchNorm running statistics
  Pruner pr(*m);
  pr.prune_magnitude(0.9, PruneScope::kGlobal);
  m->eval();
  Tensor want = m->forward(x);
  auto sm = sparse_inference_model(*m, &pr);
  EXPECT_EQ((*sm)[0].type_name(), "SparseConv2d");
  EXPECT_EQ((*sm)[3].type_name(), "SparseConv2d");
  EXPECT_EQ((*sm)[8].type_name(), "SparseLinear");
  Tensor got = sm->forward(x);
  // f32 through two convolutions and a Linear: only the summation order differs.
  EXPECT_TRUE(all_close(got, want, 1e-4, 1e-5));
  // Without a pruner the zeros of the masked weights give the same nonzeros.
  auto sm2 = sparse_inference_model(*m);
  EXPECT_EQ(dynamic_cast<SparseConv2d&>((*sm2)[3]).weight().nnz(),
            dynamic_cast<SparseConv2d&>((*sm)[3]).weight().nnz());
}

TEST(PruneLayers, SparseConv2dBadInput) {
  Conv2d c(3, 4, 3);
  SparseConv2d s(c);
  expect_error([&] { s.forward(random_uniform(Shape{2, 2, 5, 5}, 1)); }, kInvalid, "SparseConv2d");
  expect_error([&] { s.forward(random_uniform(Shape{2, 3, 5}, 1)); }, kInvalid, "SparseConv2d");
  expect_error(
      [&] {
        s.forward(random_uniform(Shape{2, 3, 5, 5}, 1).to(DType::kF64));
      },
      kInvalid, "SparseConv2d");
  expect_error(
      [&] {
        s.backward(random_uniform(Shape{2, 4, 3, 3}, 1));
      },
      ErrorCode::kUnsupported, "SparseConv2d");
  Conv2dOptions g;
  g.groups = 3;
  Conv2d depthwise(3, 3, 3, g);
  expect_error([&] { SparseConv2d bad(depthwise); }, kInvalid, "SparseConv2d");
  expect_error(
      [&] {
        SparseConv2d bad(c, Tensor::zeros(Shape{4, 3}, DType::kU8));
      },
      kInvalid, "SparseConv2d");
}

}  // namespace
}  // namespace frugal::nn
