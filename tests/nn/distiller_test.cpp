// nn::Distiller, TeacherCache and FeatureAdapter: a tiny teacher / student on synthetic blobs where
// distillation helps, the cache round trip (identical losses with and without it), a feature hint
// through an adapter, the bf16 teacher option, distillation inside the library training loops
// (DistilledStudent, DistilledGpt), and bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <set>
#include <string>

#include "frugal/core.hpp"
#include "frugal/distill.hpp"
#include "frugal/nn.hpp"
#include "support/check.hpp"
#include "support/tolerance.hpp"

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

/// Passes its input through and keeps the gradient it receives (to read what a wrapper passes).
class GradProbe : public Module {
 public:
  Tensor forward(const Tensor& input) override { return input; }
  Tensor backward(const Tensor& grad_output) override {
    grad = grad_output.contiguous();
    return grad_output;
  }
  std::string type_name() const override { return "GradProbe"; }
  Tensor grad;
};

/// Copies of every parameter value and gradient of `m` (to check that training leaves a teacher
/// unchanged).
std::vector<Tensor> snapshot(Module& m) {
  std::vector<Tensor> out;
  for (const NamedParameter& p : m.named_parameters()) {
    out.push_back(p.param->value.to(DType::kF64));
    out.push_back(p.param->grad.defined() ? p.param->grad.to(DType::kF64) : Tensor());
  }
  return out;
}

bool unchanged(Module& m, const std::vector<Tensor>& before) {
  const std::vector<Tensor> now = snapshot(m);
  for (std::size_t i = 0; i < now.size(); ++i) {
    if (now[i].defined() != before[i].defined()) return false;
    if (now[i].defined() && !testing::same_bits(now[i], before[i])) return false;
  }
  return true;
}

TEST(TeacherCache, BuiltInBf16HoldsTheBf16TeachersLogits) {
  const Split s = blobs();
  auto teacher = mlp(16, 32, 8, 700);
  train_ce(*teacher, s.train, 2, 3e-3, 7);
  const Tensor x = s.test.inputs.slice(0, 0, 64).contiguous();
  auto data = std::make_shared<TensorDataset>(x, s.test.labels.slice(0, 0, 64).contiguous());
  const auto dir = std::filesystem::temp_directory_path() / "frugal_teacher_cache_bf16_test";
  std::filesystem::remove_all(dir);
  TeacherCacheOptions co;
  co.batch_size = 64;  // one batch, as the direct forwards below: bit-identical GEMMs
  co.teacher_precision = DType::kBF16;
  const TeacherCache bf16 = TeacherCache::build(*teacher, *data, (dir / "bf16").string(), co);
  co.teacher_precision = DType::kF32;
  const TeacherCache f32 = TeacherCache::build(*teacher, *data, (dir / "f32").string(), co);
  std::vector<int64_t> all(64);
  for (int64_t i = 0; i < 64; ++i) all[static_cast<std::size_t>(i)] = i;
  EXPECT_TRUE(testing::same_bits(bf16.logits(all),
                                 teacher_forward(*teacher, x, DType::kBF16).to(DType::kF32)));
  EXPECT_TRUE(testing::same_bits(f32.logits(all), teacher_forward(*teacher, x)));
  EXPECT_FALSE(testing::same_bits(bf16.logits(all), f32.logits(all)));
  co.teacher_precision = DType::kI64;
  testing::expect_error([&] { TeacherCache::build(*teacher, *data, (dir / "bad").string(), co); },
                        ErrorCode::kInvalidArgument, "TeacherCache::build");
  std::filesystem::remove_all(dir);
}

TEST(Distiller, TeacherInBf16IsCloseToTheF32Teacher) {
  const Split s = blobs();
  auto teacher = mlp(16, 32, 8, 700);
  train_ce(*teacher, s.train, 3, 3e-3, 7);
  const Tensor x = s.test.inputs.slice(0, 0, 64).contiguous();
  const Tensor f32 = teacher_forward(*teacher, x);
  const Tensor bf16 = teacher_forward(*teacher, x, DType::kBF16);
  ASSERT_EQ(f32.shape(), bf16.shape());
  // bf16 keeps 8 significant bits (relative rounding 2^-9): inputs and weights rounded in two
  // GEMMs of K <= 32 move logits of size ~3 by a few 1e-2 at most.
  EXPECT_TRUE(testing::all_close(bf16.to(DType::kF32), f32, 2e-2, 5e-2));
  // Linear follows the autocast policy, so the bf16 teacher really ran on rounded operands.
  EXPECT_FALSE(testing::same_bits(bf16.to(DType::kF32), f32));
  double worst = 0.0;
  const auto a = bf16.to_vector<double>(), b = f32.to_vector<double>();
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]));
  RecordProperty("bf16_max_abs_logit_error", std::to_string(worst));
  EXPECT_TRUE(teacher->is_training());  // the mode is restored

  // The Distiller option: the same step with a bf16 teacher gives a KD loss within bf16 error.
  auto run = [&](DType precision) {
    auto student = mlp(16, 8, 8, 800);
    SGD opt(student->named_parameters(), SgdOptions{});
    DistillerOptions o;
    o.teacher_precision = precision;
    Distiller d(student, teacher, opt, o);
    Batch b{x, s.test.labels.slice(0, 0, 64).contiguous(), {}};
    return d.step(b);
  };
  const DistillStepResult r32 = run(DType::kF32), r16 = run(DType::kBF16);
  // The KD term is T^2 KL of softened distributions: logit errors of a few 1e-2 / T move it by
  // about 1e-2 relative; the CE term does not depend on the teacher at all.
  EXPECT_NEAR(r16.kd, r32.kd, 2e-2 * r32.kd + 1e-3);
  EXPECT_EQ(r16.ce, r32.ce);
}

TEST(Distiller, StepOnSequenceLogitsTreatsEveryPositionAsARow) {
  // A GPT student and teacher: logits (B, T, V), labels (B, T). The step's losses equal kd_loss
  // on the (B T, V) rows.
  const CharCorpus corpus =
      CharCorpus::from_string("the cat sat on the mat; the dog sat on the log. ");
  GPTConfig tc = char_gpt_config(corpus.vocab_size(), CharGptSize::kTiny, 1);
  auto teacher = std::make_shared<GPT>(tc);
  GPTConfig sc = tc;
  sc.n_layer = 1;
  sc.n_embd = 16;
  sc.seed = 2;
  auto student = std::make_shared<GPT>(sc);
  const TokenBatch tb = corpus.sample(CorpusSplit::kTrain, 3, 8, 0, 0);
  teacher->eval();
  const Tensor t = teacher->forward(tb.input).reshape({24, corpus.vocab_size()});
  const Tensor z = student->forward(tb.input).reshape({24, corpus.vocab_size()});
  const distill::KdResult want = distill::kd_loss(z, t, tb.target.reshape({24}), 3.0, 0.7);
  SGD opt(student->named_parameters(), SgdOptions{});
  DistillerOptions o;
  o.temperature = 3.0;
  o.alpha = 0.7;
  Distiller d(student, teacher, opt, o);
  const DistillStepResult r = d.step(Batch{tb.input, tb.target, {}});
  EXPECT_EQ(r.kd, want.kd);  // the same op on the same rows
  EXPECT_EQ(r.ce, want.ce);
}

TEST(DistilledStudent, AlphaZeroIsThePlainTrainingLoop) {
  // With alpha = 0 the wrapper passes the loop's gradient through unchanged: training through it
  // gives bit-identical weights to training the student alone, so the KD comparison of the cost
  // report runs exactly the same loop, data order and schedule.
  const Split s = blobs();
  auto teacher = mlp(16, 32, 8, 900);
  train_ce(*teacher, s.train, 2, 3e-3, 9);
  TrainOptions o;
  o.epochs = 2;
  o.batch_size = 50;
  o.progress = false;
  auto plain = mlp(16, 8, 8, 901);
  AdamW opt_plain(plain->named_parameters(), AdamWOptions{});
  train_classifier(*plain, opt_plain, s.train, s.test, o);

  auto student = mlp(16, 8, 8, 901);
  DistillerOptions d;
  d.alpha = 0.0;
  auto wrapped = std::make_shared<DistilledStudent>(student, teacher, d);
  AdamW opt(wrapped->named_parameters(), AdamWOptions{});
  const std::vector<Tensor> before = snapshot(*teacher);
  const TrainResult r = train_classifier(*wrapped, opt, s.train, s.test, o);
  const auto a = plain->named_parameters(), b = student->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(testing::same_bits(a[i].param->value, b[i].param->value)) << a[i].name;
  }
  EXPECT_GT(wrapped->last_kd(), 0.0);
  EXPECT_EQ(r.num_parameters, plain->num_parameters());  // the teacher is not counted
  EXPECT_TRUE(unchanged(*teacher, before));
}

TEST(DistilledStudent, PassesTheKdLossGradient) {
  // The student's output layer receives d kd_loss(s, t, y, T, alpha) / ds (times the loss scale)
  // when the loop hands the wrapper the cross-entropy gradient.
  const Split s = blobs();
  auto teacher = mlp(16, 32, 8, 1000);
  auto probe = std::make_shared<GradProbe>();
  auto student = mlp(16, 8, 8, 1001);
  student->add(probe);
  DistillerOptions d;
  d.temperature = 3.0;
  d.alpha = 0.6;
  const float loss_scale = 4.0f;
  DistilledStudent wrapped(student, teacher, d, [&] { return loss_scale; });
  const Tensor x = s.train.inputs.slice(0, 0, 40).contiguous();
  const Tensor y = s.train.labels.slice(0, 0, 40).contiguous();
  wrapped.train();
  const Tensor z = wrapped.forward(x);
  SoftmaxCrossEntropy ce;
  ce.forward(z, y);
  wrapped.backward(scale(ce.backward(), loss_scale));
  const Tensor t = teacher_forward(*teacher, x);
  const distill::KdResult want = distill::kd_loss(z, t, y, 3.0, 0.6);
  // Two f32 roundings apart (the wrapper adds alpha T (p - q) / N and (1 - alpha) g separately).
  EXPECT_TRUE(testing::all_close(probe->grad, scale(want.grad_student, loss_scale), 1e-5, 1e-7));
  EXPECT_NEAR(wrapped.last_kd(), want.kd, 1e-12 * want.kd);
  // Evaluation mode is the student alone; a backward without a training forward is an error.
  wrapped.eval();
  EXPECT_TRUE(testing::same_bits(wrapped.forward(x), student->forward(x)));
  testing::expect_error([&] { wrapped.backward(z); }, ErrorCode::kInvalidArgument,
                        "DistilledStudent");
}

TEST(DistilledStudent, FeatureHintMatchesTheDistillerStep) {
  // The same hint configuration through the loop wrapper and through Distiller::step gives the
  // same student and adapter gradients (SGD with lr 0 leaves them in place after the step).
  const Split s = blobs();
  auto teacher = mlp(16, 32, 8, 1100);
  train_ce(*teacher, s.train, 2, 3e-3, 11);
  const Tensor x = s.train.inputs.slice(0, 0, 50).contiguous();
  const Tensor y = s.train.labels.slice(0, 0, 50).contiguous();
  auto make = [&](std::shared_ptr<Sequential>& student, std::shared_ptr<FeatureAdapter>& adapter,
                  DistillerOptions& o) {
    student = mlp(16, 8, 8, 1101);
    adapter = FeatureAdapter::linear(8, 32, 1102);
    o.temperature = 3.0;
    o.alpha = 0.7;
    o.hint_student_layer = 1;
    o.hint_teacher_layer = 1;
    o.hint_weight = 0.5;
    o.adapter = adapter;
  };
  std::shared_ptr<Sequential> s1, s2;
  std::shared_ptr<FeatureAdapter> a1, a2;
  DistillerOptions o1, o2;
  make(s1, a1, o1);
  make(s2, a2, o2);
  std::vector<NamedParameter> p1 = s1->named_parameters("student.");
  for (const NamedParameter& p : a1->named_parameters("adapter.")) p1.push_back(p);
  SgdOptions lr0;
  lr0.lr = 0.0;
  SGD opt1(p1, lr0);
  Distiller d(s1, teacher, opt1, o1);
  const DistillStepResult r = d.step(Batch{x, y, {}});

  DistilledStudent wrapped(s2, teacher, o2);
  const auto p2 = wrapped.named_parameters();
  ASSERT_EQ(p1.size(), p2.size());  // the adapter's parameters come with the wrapper's
  wrapped.zero_grad();
  wrapped.train();
  SoftmaxCrossEntropy ce;
  ce.forward(wrapped.forward(x), y);
  wrapped.backward(ce.backward());
  EXPECT_NEAR(wrapped.last_hint(), r.hint, 1e-6 * r.hint);  // the same f32 op on the same data
  for (std::size_t i = 0; i < p1.size(); ++i) {
    // The wrapper adds the KD and CE gradients in two f32 steps, the step in one kernel.
    EXPECT_TRUE(testing::all_close(p2[i].param->grad, p1[i].param->grad, 1e-4, 1e-7)) << p1[i].name;
  }
}

TEST(DistilledGpt, TrainsInTheGptLoopAndLeavesTheTeacherUntouched) {
  std::string text;
  for (int i = 0; i < 8; ++i)
    text += "the cat sat on the mat; the dog sat on the log. a cat, a dog. ";
  const CharCorpus corpus = CharCorpus::from_string(text);
  auto teacher = std::make_shared<GPT>(char_gpt_config(corpus.vocab_size(), CharGptSize::kTiny, 3));
  GPTConfig sc = char_gpt_config(corpus.vocab_size(), CharGptSize::kTiny, 4);
  sc.n_layer = 1;
  sc.n_embd = 16;
  TrainOptions o;
  o.steps = 3;
  o.batch_size = 4;
  o.seq_len = 8;
  o.eval_batches = 1;
  o.progress = false;
  GPT plain(sc);
  AdamW opt_plain(plain.named_parameters(), AdamWOptions{});
  const TrainResult rp = train_char_gpt(plain, opt_plain, corpus, o);

  DistillerOptions d;
  d.alpha = 0.0;  // the plain loop, bit for bit
  DistilledGpt same(sc, teacher, d);
  AdamW opt_same(same.named_parameters(), AdamWOptions{});
  const TrainResult rs = train_char_gpt(same, opt_same, corpus, o);
  EXPECT_EQ(rs.val_loss, rp.val_loss);

  d.alpha = 0.5;
  DistilledGpt distilled(sc, teacher, d);
  AdamW opt(distilled.named_parameters(), AdamWOptions{});
  const std::vector<Tensor> before = snapshot(*teacher);
  const TrainResult r = train_char_gpt(distilled, opt, corpus, o);
  EXPECT_TRUE(std::isfinite(r.val_loss));
  EXPECT_NE(r.val_loss, rp.val_loss);  // the KD gradient changed the updates
  EXPECT_GT(distilled.last_kd(), 0.0);
  EXPECT_EQ(r.num_parameters, plain.num_parameters());
  EXPECT_TRUE(unchanged(*teacher, before));
}

TEST(DistilledStudent, BadInput) {
  auto student = mlp(4, 4, 3, 1);
  auto teacher = mlp(4, 4, 3, 2);
  DistillerOptions o;
  o.teacher_precision = DType::kF64;
  testing::expect_error([&] { DistilledStudent(student, teacher, o); }, ErrorCode::kInvalidArgument,
                        "DistilledStudent");
  SGD opt(student->named_parameters(), SgdOptions{});
  testing::expect_error([&] { Distiller(student, teacher, opt, o); }, ErrorCode::kInvalidArgument,
                        "Distiller");
  testing::expect_error(
      [&] {
        teacher_forward(*teacher, Tensor::zeros({2, 4}), DType::kI64);
      },
      ErrorCode::kInvalidArgument, "teacher_forward");
  testing::expect_error([&] { DistilledStudent(student, nullptr); }, ErrorCode::kInvalidArgument,
                        "DistilledStudent");
  testing::expect_error([&] { DistilledStudent(nullptr, teacher); }, ErrorCode::kInvalidArgument,
                        "DistilledStudent");
  o = {};
  o.hint_student_layer = 0;
  o.hint_teacher_layer = 0;
  testing::expect_error([&] { DistilledStudent(student, std::make_shared<Linear>(4, 3), o); },
                        ErrorCode::kInvalidArgument, "DistilledStudent");
  testing::expect_error([&] { DistilledGpt(char_gpt_config(8, CharGptSize::kTiny), teacher, o); },
                        ErrorCode::kInvalidArgument, "DistilledGpt");
  o.hint_student_layer = 3;
  testing::expect_error([&] { DistilledStudent(student, teacher, o); }, ErrorCode::kInvalidArgument,
                        "DistilledStudent");
  o = {};
  o.alpha = -0.1;
  testing::expect_error([&] { DistilledGpt(char_gpt_config(8, CharGptSize::kTiny), teacher, o); },
                        ErrorCode::kInvalidArgument, "DistilledGpt");
  // A teacher with another number of classes.
  DistilledStudent wrong(student, mlp(4, 4, 5, 3));
  wrong.train();
  const Tensor z = wrong.forward(Tensor::zeros({2, 4}));
  testing::expect_error([&] { wrong.backward(z); }, ErrorCode::kInvalidArgument,
                        "DistilledStudent");
}

TEST(TeacherCache, UniformTailStoresTheLseAndIsTiedToItsTemperature) {
  const Split s = blobs();
  auto teacher = mlp(16, 32, 8, 310);
  train_ce(*teacher, s.train, 2, 3e-3, 5);
  const auto dir = std::filesystem::temp_directory_path() / "frugal_distiller_uniform_cache_test";
  std::filesystem::remove_all(dir);
  auto data = std::make_shared<TensorDataset>(s.train.inputs, s.train.labels);
  TeacherCacheOptions co;
  co.batch_size = 50;
  co.shard_size = 300;
  co.top_k = 3;
  co.tail = distill::TopKTail::kUniform;
  co.temperature = 2.0;
  TeacherCache::build(*teacher, *data, dir.string(), co);
  const auto cache = std::make_shared<TeacherCache>(TeacherCache::open(dir.string()));
  EXPECT_EQ(cache->tail(), distill::TopKTail::kUniform);
  EXPECT_EQ(cache->temperature(), 2.0);
  // Rows 0..49 (the first build batch): the live teacher's top-k and lse, bit for bit (f32).
  std::vector<int64_t> idx(50);
  for (int64_t i = 0; i < 50; ++i) idx[static_cast<std::size_t>(i)] = i;
  const distill::TopKLogits got = cache->topk(idx);
  const distill::TopKLogits want =
      distill::topk_teacher(teacher_forward(*teacher, s.train.inputs.slice(0, 0, 50)), 3, 2.0);
  EXPECT_EQ(got.tail, distill::TopKTail::kUniform);
  EXPECT_EQ(got.lse_temperature, 2.0);
  EXPECT_TRUE(frugal::testing::all_equal(got.values, want.values));
  EXPECT_TRUE(frugal::testing::all_equal(got.indices, want.indices));
  EXPECT_TRUE(frugal::testing::all_equal(got.lse, want.lse));
  // A Distiller at the cache's T trains from it; at another T the step refuses with both T.
  DataLoaderOptions lo;
  lo.batch_size = 50;
  DataLoader loader(data, lo);
  for (double temp : {2.0, 4.0}) {
    auto student = mlp(16, 8, 8, 410);
    SGD opt(student->named_parameters(), SgdOptions{});
    DistillerOptions d;
    d.temperature = temp;
    Distiller dist(student, nullptr, opt, d);
    dist.set_cache(cache);
    if (temp == 2.0) {
      const DistillStepResult r = dist.step(loader.batch(0));
      EXPECT_TRUE(std::isfinite(r.loss) && r.loss > 0.0);
    } else {
      try {
        dist.step(loader.batch(0));
        ADD_FAILURE() << "a uniform-tail cache used at another T";
      } catch (const Error& e) {
        const std::string w = e.what();
        EXPECT_EQ(w.rfind("[Distiller::step]", 0), 0u) << w;
        EXPECT_NE(w.find("T = 2"), std::string::npos) << w;
        EXPECT_NE(w.find("T = 4"), std::string::npos) << w;
      }
    }
  }
  // A uniform-tail cache whose lse_temperature is not a number: an IoError.
  {
    const std::string first = (dir / "teacher_0.safetensors").string();
    SafetensorsFile f = load_safetensors(first);
    f.metadata["lse_temperature"] = "two";
    save_safetensors(first, f);
    try {
      TeacherCache::open(dir.string());
      ADD_FAILURE() << "opened a cache with a bad lse_temperature";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kIoError) << e.what();
    }
  }
  co.temperature = 0.0;  // uniform without a temperature
  EXPECT_THROW(TeacherCache::build(*teacher, *data, dir.string(), co), Error);
  std::filesystem::remove_all(dir);
}

TEST(TeacherEnsemble, ForwardIsTheMeanOfTheMembers) {
  auto a = mlp(4, 6, 3, 501);
  auto b = mlp(4, 6, 3, 502);
  auto c = mlp(4, 6, 3, 503);
  TeacherEnsemble ens({a, b, c});
  EXPECT_EQ(ens.size(), 3u);
  const Tensor x = frugal::testing::random_uniform({5, 4}, 504);
  const auto ya = a->forward(x).to_vector<float>(), yb = b->forward(x).to_vector<float>(),
             yc = c->forward(x).to_vector<float>();
  std::vector<double> want(ya.size());
  for (std::size_t i = 0; i < ya.size(); ++i) {
    want[i] = (static_cast<double>(ya[i]) + yb[i] + yc[i]) / 3.0;
  }
  // f32 sums of three and a scale: a few ulps.
  EXPECT_TRUE(frugal::testing::all_close(ens.forward(x).to_vector<double>(), want, 1e-6, 1e-7));
  ens.eval();
  EXPECT_FALSE(a->is_training());  // members are children: modes propagate
  EXPECT_EQ(ens.named_parameters().size(), 12u);
  frugal::testing::expect_error(
      [&] {
        ens.backward(Tensor::zeros({5, 3}));
      },
      ErrorCode::kUnsupported, "TeacherEnsemble");
  frugal::testing::expect_error([&] { TeacherEnsemble({}); }, ErrorCode::kInvalidArgument,
                                "TeacherEnsemble");
  frugal::testing::expect_error(
      [&] {
        TeacherEnsemble({a, nullptr});
      },
      ErrorCode::kInvalidArgument, "TeacherEnsemble");
  TeacherEnsemble mixed({a, mlp(4, 6, 5, 505)});
  frugal::testing::expect_error([&] { mixed.forward(x); }, ErrorCode::kInvalidArgument,
                                "TeacherEnsemble");
}

/// Returns its input (and the gradient unchanged): what RandomShift feeds the model.
class Probe : public Module {
 public:
  Tensor forward(const Tensor& input) override { return input; }
  Tensor backward(const Tensor& grad_output) override { return grad_output; }
  std::string type_name() const override { return "Probe"; }
};

TEST(RandomShift, MovesEachExampleByAtMostMaxShiftWithZeroFill) {
  const int64_t n = 40, h = 5, w = 6;
  const Tensor x = frugal::testing::random_uniform({n, 2, h, w}, 601, 1.f, 2.f);  // no zeros
  RandomShift a(std::make_shared<Probe>(), 1, 7);
  RandomShift b(std::make_shared<Probe>(), 1, 7);
  const Tensor ya = a.forward(x);
  EXPECT_TRUE(frugal::testing::all_equal(ya, b.forward(x)));  // same seed, same shifts
  EXPECT_EQ(a.drawn(), static_cast<uint64_t>(n));
  EXPECT_FALSE(frugal::testing::all_equal(a.forward(x), ya));  // fresh draws on the next call
  const auto xv = x.to_vector<float>(), yv = ya.to_vector<float>();
  std::set<int> seen;
  for (int64_t j = 0; j < n; ++j) {
    int found = -1;
    for (int dy = -1; dy <= 1 && found < 0; ++dy) {
      for (int dx = -1; dx <= 1 && found < 0; ++dx) {
        bool ok = true;
        for (int64_t p = 0; p < 2 && ok; ++p) {
          for (int64_t y = 0; y < h && ok; ++y) {
            for (int64_t xx = 0; xx < w && ok; ++xx) {
              const int64_t sy = y - dy, sx = xx - dx;
              const float want = sy >= 0 && sy < h && sx >= 0 && sx < w
                                     ? xv[((j * 2 + p) * h + sy) * w + sx]
                                     : 0.f;
              ok = yv[((j * 2 + p) * h + y) * w + xx] == want;
            }
          }
        }
        if (ok) found = (dy + 1) * 3 + (dx + 1);
      }
    }
    ASSERT_GE(found, 0) << "example " << j << " is not a shift of its input";
    seen.insert(found);
  }
  EXPECT_GE(seen.size(), 5u);  // 40 draws over 9 shifts: most of them appear
  // backward is the adjoint of the shift: <S x, g> = <x, S^T g>.
  const Tensor g = frugal::testing::random_uniform({n, 2, h, w}, 602);
  RandomShift c(std::make_shared<Probe>(), 2, 8);
  const Tensor sx = c.forward(x);
  const Tensor stg = c.backward(g);
  double lhs = 0.0, rhs = 0.0;
  const auto sxv = sx.to_vector<double>(), gv = g.to_vector<double>(),
             stgv = stg.to_vector<double>(), x64 = x.to_vector<double>();
  for (std::size_t i = 0; i < gv.size(); ++i) {
    lhs += sxv[i] * gv[i];
    rhs += x64[i] * stgv[i];
  }
  EXPECT_NEAR(lhs, rhs, 1e-9 * std::abs(lhs));  // the same products in another order
  // Eval mode: the model alone.
  c.eval();
  EXPECT_TRUE(frugal::testing::all_equal(c.forward(x), x));
  frugal::testing::expect_error([] { RandomShift(nullptr, 1); }, ErrorCode::kInvalidArgument,
                                "RandomShift");
  frugal::testing::expect_error([] { RandomShift(std::make_shared<Probe>(), -1); },
                                ErrorCode::kInvalidArgument, "RandomShift");
  RandomShift d(std::make_shared<Probe>(), 1);
  frugal::testing::expect_error(
      [&] {
        d.forward(Tensor::zeros({3, 4}));
      },
      ErrorCode::kInvalidArgument, "RandomShift");
  frugal::testing::expect_error(
      [&] {
        d.forward(Tensor::zeros({3, 4, 4}, DType::kI32));
      },
      ErrorCode::kInvalidArgument, "RandomShift");
}

}  // namespace
}  // namespace frugal::nn
