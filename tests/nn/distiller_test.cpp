// nn::Distiller, TeacherCache and FeatureAdapter: a tiny teacher / student on synthetic blobs where
// distillation helps, the cache round trip (identical losses with and without it), a feature hint
// through an adapter, and bad input.
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <string>

#include "frugal/core.hpp"
#include "frugal/distill.hpp"
#include "frugal/nn.hpp"

namespace frugal::nn {
namespace {

std::shared_ptr<Sequential> mlp(int64_t in, int64_t hidden, int64_t out, uint64_t seed) {
  auto m = std::make_shared<Sequential>();
  m->add(std::make_shared<Linear>(in, hidden, true, seed));
  m->add(std::make_shared<ReLU>());
  m->add(std::make_shared<Linear>(hidden, out, true, seed + 1));
  return m;
}

double accuracy(Module& model, const LabeledData& d) {
  model.eval();
  const Tensor logits = model.forward(d.inputs);
  model.train();
  const auto pred = argmax(logits, 1).to_vector<int64_t>();
  const auto y = d.labels.to_vector<int64_t>();
  int64_t ok = 0;
  for (std::size_t i = 0; i < y.size(); ++i) ok += pred[i] == y[i];
  return static_cast<double>(ok) / static_cast<double>(y.size());
}

/// Plain cross-entropy training (the baseline and the teacher).
void train_ce(Module& model, const LabeledData& d, int epochs, double lr, uint64_t seed) {
  AdamWOptions o;
  o.lr = lr;
  o.weight_decay = 0.0;
  AdamW opt(model.named_parameters(), o);
  SoftmaxCrossEntropy ce;
  DataLoaderOptions lo;
  lo.batch_size = 32;
  lo.shuffle = true;
  lo.seed = seed;
  DataLoader loader(std::make_shared<TensorDataset>(d.inputs, d.labels), lo);
  for (int e = 0; e < epochs; ++e) {
    loader.set_epoch(e);
    for (const Batch& b : loader) {
      opt.zero_grad();
      ce.forward(model.forward(b.input), b.target);
      model.backward(ce.backward());
      opt.step();
    }
  }
}

LabeledData rows(const LabeledData& d, int64_t lo, int64_t hi) {
  return {d.inputs.slice(0, lo, hi).contiguous(), d.labels.slice(0, lo, hi).contiguous()};
}

struct Split {
  LabeledData train, labeled, test;
};

Split blobs() {
  // 8 classes in 16 dimensions with centres in [-1.5, 1.5]: overlapping, so 64 labels are few.
  const LabeledData all = make_classification(1400, 16, 8, 7, 1.5);
  return {rows(all, 0, 1000), rows(all, 0, 64), rows(all, 1000, 1400)};
}

TEST(Distiller, KdOnUnlabeledTransferDataBeatsTheLabelsAlone) {
  // The teacher (wide MLP) learns from 1000 labeled examples. Both students (narrow MLPs, same
  // initialisation, same number of updates) see the same inputs; the baseline only has the 64
  // labels it is given, the distilled student also gets the teacher's soft labels on the other
  // 936 inputs (alpha = 1 there: the hard labels of the transfer set are never used). This is
  // distillation as label transfer, the setting where it most reliably helps.
  const Split s = blobs();
  auto teacher = mlp(16, 128, 8, 100);
  train_ce(*teacher, s.train, 30, 3e-3, 1);
  const double teacher_acc = accuracy(*teacher, s.test);

  auto baseline = mlp(16, 8, 8, 200);
  train_ce(*baseline, s.labeled, 30 * 1000 / 64, 3e-3, 2);  // the same number of updates
  const double base_acc = accuracy(*baseline, s.test);

  auto student = mlp(16, 8, 8, 200);
  AdamWOptions o;
  o.lr = 3e-3;
  o.weight_decay = 0.0;
  AdamW opt(student->named_parameters(), o);
  DistillerOptions dopt;
  dopt.temperature = 2.0;
  dopt.alpha = 1.0;
  Distiller distiller(student, teacher, opt, dopt);
  DataLoaderOptions lo;
  lo.batch_size = 32;
  lo.shuffle = true;
  lo.seed = 3;
  DataLoader loader(std::make_shared<TensorDataset>(s.train.inputs, s.train.labels), lo);
  double first = 0.0, last = 0.0;
  for (int e = 0; e < 30; ++e) {
    loader.set_epoch(e);
    for (const Batch& b : loader) {
      const DistillStepResult r = distiller.step(b);
      if (e == 0 && first == 0.0) first = r.kd;
      last = r.kd;
    }
  }
  const double kd_acc = accuracy(*student, s.test);
  RecordProperty("teacher_accuracy", std::to_string(teacher_acc));
  RecordProperty("baseline_accuracy", std::to_string(base_acc));
  RecordProperty("kd_accuracy", std::to_string(kd_acc));
  EXPECT_LT(last, first);
  EXPECT_GT(teacher_acc, 0.8) << "teacher " << teacher_acc;
  EXPECT_GT(kd_acc, base_acc + 0.02)
      << "kd " << kd_acc << " baseline " << base_acc << " teacher " << teacher_acc;
}

TEST(Distiller, CacheRoundTripGivesIdenticalLosses) {
  const Split s = blobs();
  auto teacher = mlp(16, 32, 8, 300);
  train_ce(*teacher, s.train, 2, 3e-3, 4);
  const auto dir = std::filesystem::temp_directory_path() / "frugal_distiller_cache_test";
  std::filesystem::remove_all(dir);
  auto data = std::make_shared<TensorDataset>(s.train.inputs, s.train.labels);
  DataLoaderOptions lo;
  lo.batch_size = 50;  // the cache is built with the same batches: bit-identical teacher GEMMs
  TeacherCacheOptions co;
  co.batch_size = 50;
  co.shard_size = 300;  // 4 shards, the last one partial
  const auto dense = std::make_shared<TeacherCache>(
      TeacherCache::build(*teacher, *data, (dir / "dense").string(), co));
  co.top_k = 8;  // all classes: must equal the dense loss
  const auto top = std::make_shared<TeacherCache>(
      TeacherCache::build(*teacher, *data, (dir / "top").string(), co));
  EXPECT_EQ(dense->size(), 1000);
  EXPECT_EQ(TeacherCache::open((dir / "dense").string()).num_classes(), 8);

  auto run = [&](std::shared_ptr<const TeacherCache> cache) {
    auto student = mlp(16, 8, 8, 400);
    SgdOptions so;
    so.lr = 0.1;
    SGD opt(student->named_parameters(), so);
    DistillerOptions dopt;
    dopt.alpha = 0.7;
    Distiller d(student, teacher, opt, dopt);
    if (cache) d.set_cache(cache);
    DataLoader loader(data, lo);
    std::vector<double> losses;
    for (int64_t i = 0; i < loader.num_batches(); ++i)
      losses.push_back(d.step(loader.batch(i)).loss);
    return losses;
  };
  const auto live = run(nullptr);
  const auto cached = run(dense);
  const auto topk = run(top);
  ASSERT_EQ(live.size(), 20u);
  for (std::size_t i = 0; i < live.size(); ++i) {
    EXPECT_EQ(cached[i], live[i]) << i;  // the same f32 teacher logits, bit for bit
    // k = C: the same terms in another order (the row gradients differ by rounding only).
    EXPECT_NEAR(topk[i], live[i], 1e-5 * live[i]) << i;
  }
  std::filesystem::remove_all(dir);
}

TEST(Distiller, FeatureHintThroughAnAdapter) {
  const Split s = blobs();
  auto teacher = mlp(16, 32, 8, 500);
  train_ce(*teacher, s.train, 5, 3e-3, 5);
  auto student = mlp(16, 8, 8, 600);
  auto adapter = FeatureAdapter::linear(8, 32, 601);
  // The optimizer holds the student's and the adapter's parameters.
  std::vector<NamedParameter> params = student->named_parameters("student.");
  for (const NamedParameter& p : adapter->named_parameters("adapter.")) params.push_back(p);
  AdamWOptions o;
  o.lr = 3e-3;
  AdamW opt(params, o);
  DistillerOptions dopt;
  dopt.hint_student_layer = 1;  // after the ReLU
  dopt.hint_teacher_layer = 1;
  dopt.hint_weight = 0.5;
  dopt.adapter = adapter;
  Distiller d(student, teacher, opt, dopt);
  DataLoaderOptions lo;
  lo.batch_size = 100;
  DataLoader loader(std::make_shared<TensorDataset>(s.train.inputs, s.train.labels), lo);
  const double first = d.step(loader.batch(0)).hint;
  double last = first;
  for (int e = 0; e < 20; ++e) {
    for (const Batch& b : loader) last = d.step(b).hint;
  }
  EXPECT_GT(first, 0.0);
  EXPECT_LT(last, 0.5 * first);  // the adapter and the student learn the teacher's features
}

TEST(Distiller, BadInput) {
  auto student = mlp(4, 4, 3, 1);
  auto teacher = mlp(4, 4, 3, 2);
  SGD opt(student->named_parameters(), SgdOptions{});
  auto expect_invalid = [](auto&& fn, const std::string& op) {
    try {
      fn();
      ADD_FAILURE() << "no exception from [" << op << "]";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
      EXPECT_EQ(std::string(e.what()).rfind("[" + op + "]", 0), 0u) << e.what();
    }
  };
  DistillerOptions bad;
  bad.alpha = 1.5;
  expect_invalid([&] { Distiller(student, teacher, opt, bad); }, "Distiller");
  bad = {};
  bad.temperature = 0.0;
  expect_invalid([&] { Distiller(student, teacher, opt, bad); }, "Distiller");
  bad = {};
  bad.hint_student_layer = 5;
  bad.hint_teacher_layer = 0;
  expect_invalid([&] { Distiller(student, teacher, opt, bad); }, "Distiller");
  bad = {};
  bad.hint_student_layer = 0;
  bad.hint_teacher_layer = 0;
  auto linear_teacher = std::make_shared<Linear>(4, 3);
  expect_invalid([&] { Distiller(student, linear_teacher, opt, bad); }, "Distiller");
  Distiller no_teacher(student, nullptr, opt, {});
  Batch b{Tensor::zeros({2, 4}), Tensor::zeros({2}, DType::kI64), {0, 1}};
  expect_invalid([&] { no_teacher.step(b); }, "Distiller::step");
  try {
    TeacherCache::open("/nonexistent/frugal_cache");
    ADD_FAILURE() << "opened a missing cache";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kIoError);
  }
}

}  // namespace
}  // namespace frugal::nn
