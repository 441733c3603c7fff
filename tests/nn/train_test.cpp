// Training helpers: the progress bar's text (hand-computed lines), the metrics JSON writer
// (content parsed back with nlohmann, atomic replacement), the model builders (parameter counts
// in closed form) and the training loops against independent checks (a nearest-centroid
// classifier proves the synthetic problem linearly separable; a periodic text has a known
// entropy and a known continuation).
#include "frugal/nn/train.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "frugal/core/error.hpp"
#include "frugal/core/memory.hpp"
#include "frugal/core/ops.hpp"
#include "frugal/nn/models.hpp"
#include "support/check.hpp"

namespace frugal::nn {
namespace {

using frugal::testing::expect_error;

namespace fs = std::filesystem;

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

/// A fresh empty directory under the system temp dir, removed at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() /
           ("frugal_train_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path)) out.push_back(e.path().filename());
    return out;
  }
};

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// ---- progress bar -------------------------------------------------------------------------------

TEST(ProgressBar, FormatLineByHand) {
  ProgressBarOptions o;
  o.mode = ProgressBarOptions::Mode::kPlain;
  ProgressBar bar(100, "fit", o);
  // 50 of 100 steps in 10 s: 5 steps/s (1 sample per step), 50 steps left -> 10 s.
  EXPECT_EQ(bar.format_line(50, {{"loss", 0.25}}, 10.0, true),
            "fit  50% |############------------| 50/100 loss 0.2500 | 5.0 samples/s | ETA 0:10");
  EXPECT_EQ(bar.format_line(50, {{"loss", 0.25}}, 10.0, false),
            "fit  50% 50/100 loss 0.2500 | 5.0 samples/s | ETA 0:10");
  // Done: the total time instead of an ETA; integers print without decimals.
  EXPECT_EQ(bar.format_line(100, {{"epoch", 3}}, 125.0, false),
            "fit 100% 100/100 epoch 3 | 0.8 samples/s | in 2:05");
  // Nothing done yet: no rate, no ETA.
  EXPECT_EQ(bar.format_line(0, {}, 0.0, false), "fit   0% 0/100");
}

TEST(ProgressBar, SamplesPerStepScalesTheRate) {
  ProgressBarOptions o;
  o.mode = ProgressBarOptions::Mode::kPlain;
  o.samples_per_step = 64;
  ProgressBar bar(10, "x", o);
  // 4 steps * 64 samples / 2 s = 128 samples/s (>= 100: no decimals); 6 steps left at 0.5 s each.
  EXPECT_EQ(bar.format_line(4, {}, 2.0, false), "x  40% 4/10 | 128 samples/s | ETA 0:03");
}

TEST(ProgressBar, PlainModeAtMostMaxLines) {
  std::ostringstream out;
  ProgressBarOptions o;
  o.out = &out;  // a caller's stream under kAuto is a log: plain lines
  {
    ProgressBar bar(1000, "run", o);
    EXPECT_FALSE(bar.terminal());
    for (int64_t s = 1; s <= 1000; ++s) bar.update(s, {{"loss", 1.5}});
  }
  const std::string text = out.str();
  EXPECT_EQ(text.find('\r'), std::string::npos);
  const std::vector<std::string> lines = lines_of(text);
  ASSERT_EQ(lines.size(), 10u);  // one per tenth of the total
  const std::regex line_re(
      R"(run +\d+% (\d+)/1000 loss 1\.5000 \| [0-9.]+ samples/s \| (ETA|in) \d+:\d\d)");
  for (std::size_t i = 0; i < lines.size(); ++i) {
    std::smatch m;
    ASSERT_TRUE(std::regex_match(lines[i], m, line_re)) << lines[i];
    EXPECT_EQ(std::stoi(m[1].str()), 100 * static_cast<int>(i + 1));
  }
  EXPECT_NE(lines.back().find("100% 1000/1000"), std::string::npos);
}

TEST(ProgressBar, PlainModeFewSteps) {
  std::ostringstream out;
  ProgressBarOptions o;
  o.out = &out;
  o.max_lines = 10;
  ProgressBar bar(4, "few", o);
  for (int64_t s = 1; s <= 4; ++s) bar.update(s);
  bar.update(9);  // past the end: clamped, prints nothing more
  bar.finish();
  EXPECT_EQ(lines_of(out.str()).size(), 4u);  // every step crosses a tenth
}

TEST(ProgressBar, TerminalModeRedrawsOneLine) {
  std::ostringstream out;
  ProgressBarOptions o;
  o.out = &out;
  o.mode = ProgressBarOptions::Mode::kTerminal;
  o.min_interval_s = 0;
  ProgressBar bar(3, "t", o);
  EXPECT_TRUE(bar.terminal());
  for (int64_t s = 1; s <= 3; ++s) bar.update(s);
  bar.finish();
  bar.finish();  // idempotent
  const std::string text = out.str();
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1);  // only finish ends the line
  EXPECT_EQ(std::count(text.begin(), text.end(), '\r'), 4);  // 3 updates + the final redraw
  EXPECT_NE(text.find("|########################| 3/3"), std::string::npos);
}

TEST(ProgressBar, BadInput) {
  expect_error([] { ProgressBar(0, "x"); }, ErrorCode::kInvalidArgument, "ProgressBar");
  ProgressBarOptions o;
  o.max_lines = 0;
  expect_error([&] { ProgressBar(5, "x", o); }, ErrorCode::kInvalidArgument, "ProgressBar");
  o.max_lines = 10;
  o.samples_per_step = 0;
  expect_error([&] { ProgressBar(5, "x", o); }, ErrorCode::kInvalidArgument, "ProgressBar");
}

TEST(FormatDuration, Cases) {
  EXPECT_EQ(format_duration(0), "0:00");
  EXPECT_EQ(format_duration(61.4), "1:01");
  EXPECT_EQ(format_duration(3725), "1:02:05");
  EXPECT_EQ(format_duration(-1), "?");
  EXPECT_EQ(format_duration(NAN), "?");
}

// ---- metrics JSON -------------------------------------------------------------------------------

TEST(MetricsJson, ContentRoundTrips) {
  TempDir dir;
  const fs::path file = dir.path / "m.json";
  write_metrics_json(file.string(), {{"program", std::string("demo")},
                                     {"result.accuracy", 0.975},
                                     {"result.steps", int64_t{690}},
                                     {"result.loss", std::nan("")},
                                     {"config.cosine", true},
                                     {"result.peak.bytes", int64_t{1} << 40}});
  const auto j = nlohmann::ordered_json::parse(read_file(file));
  EXPECT_EQ(j["program"], "demo");
  EXPECT_DOUBLE_EQ(j["result"]["accuracy"].get<double>(), 0.975);
  EXPECT_EQ(j["result"]["steps"].get<int64_t>(), 690);
  EXPECT_TRUE(j["result"]["loss"].is_null());  // NaN is not JSON
  EXPECT_EQ(j["config"]["cosine"], true);
  EXPECT_EQ(j["result"]["peak"]["bytes"].get<int64_t>(), int64_t{1} << 40);
  // Keys keep their order of first appearance.
  std::vector<std::string> top;
  for (auto it = j.begin(); it != j.end(); ++it) top.push_back(it.key());
  EXPECT_EQ(top, (std::vector<std::string>{"program", "result", "config"}));
  // Nothing but the file is left in the folder.
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"m.json"});
}

TEST(MetricsJson, ReplacesAtomically) {
  TempDir dir;
  const fs::path file = dir.path / "m.json";
  write_metrics_json(file.string(), {{"v", int64_t{1}}});
  write_metrics_json(file.string(), {{"v", int64_t{2}}});
  EXPECT_EQ(nlohmann::json::parse(read_file(file))["v"], 2);
  // Invalid fields: nothing is written, the old file stays.
  expect_error(
      [&] {
        write_metrics_json(file.string(), {{"a", 1.0}, {"a.b", 2.0}});
      },
      ErrorCode::kInvalidArgument, "metrics_json");
  EXPECT_EQ(nlohmann::json::parse(read_file(file))["v"], 2);
  // The rename fails (the target is a non-empty directory): IoError, no temporary file left.
  const fs::path blocked = dir.path / "blocked";
  fs::create_directories(blocked / "inner");
  expect_error(
      [&] {
        write_metrics_json(blocked.string(), {{"v", 3.0}});
      },
      ErrorCode::kIoError, "write_metrics_json");
  EXPECT_TRUE(fs::is_directory(blocked / "inner"));
  auto names = dir.entries();
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"blocked", "m.json"}));
  // A folder that does not exist: IoError.
  expect_error(
      [&] {
        write_metrics_json((dir.path / "no" / "m.json").string(), {{"v", 1.0}});
      },
      ErrorCode::kIoError, "write_metrics_json");
}

TEST(MetricsJson, BadKeys) {
  expect_error([] { metrics_json({{"", 1.0}}); }, ErrorCode::kInvalidArgument, "metrics_json");
  expect_error([] { metrics_json({{"a..b", 1.0}}); }, ErrorCode::kInvalidArgument, "metrics_json");
  expect_error(
      [] {
        metrics_json({{"a.b", 1.0}, {"a", 2.0}});
      },
      ErrorCode::kInvalidArgument, "metrics_json");
}

// ---- models -------------------------------------------------------------------------------------

TEST(Models, MlpShapeAndParameterCount) {
  auto mlp = make_mlp({64, 256, 128, 10}, 3);
  // (64*256 + 256) + (256*128 + 128) + (128*10 + 10).
  EXPECT_EQ(mlp->num_parameters(), 16640 + 32896 + 1290);
  EXPECT_EQ(parameter_bytes(*mlp), 4 * mlp->num_parameters());
  const Tensor y = mlp->forward(Tensor::zeros({5, 64}));
  EXPECT_EQ(y.shape(), Shape({5, 10}));
  expect_error([] { make_mlp({64}); }, ErrorCode::kInvalidArgument, "make_mlp");
  expect_error([] { make_mlp({64, 0, 10}); }, ErrorCode::kInvalidArgument, "make_mlp");
}

TEST(Models, DigitsCnnShapeAndParameterCount) {
  auto cnn = make_digits_cnn({});
  // conv 1*16*9 + bn 2*16 + conv 16*32*9 + bn 2*32 + linear 32*4*4*10 + 10 (no conv bias).
  EXPECT_EQ(cnn->num_parameters(), 144 + 32 + 4608 + 64 + 5120 + 10);
  const Tensor y = cnn->forward(Tensor::zeros({3, 1, 8, 8}));
  EXPECT_EQ(y.shape(), Shape({3, 10}));
  DigitsCnnConfig odd;
  odd.image_size = 7;
  expect_error([&] { make_digits_cnn(odd); }, ErrorCode::kInvalidArgument, "make_digits_cnn");
}

TEST(Models, CharGptPresets) {
  const GPTConfig c = char_gpt_config(65, CharGptSize::kTiny, 4);
  EXPECT_EQ(c.vocab_size, 65);
  EXPECT_EQ(c.seed, 4u);
  EXPECT_EQ(c.n_embd % c.n_head, 0);
  const GPTConfig s = char_gpt_config(65);
  EXPECT_EQ(s.n_embd % s.n_head, 0);
  expect_error([] { char_gpt_config(0); }, ErrorCode::kInvalidArgument, "char_gpt_config");
}

// ---- evaluation, split
// ---------------------------------------------------------------------------

TEST(EvaluateAccuracy, KnownAnswer) {
  // An identity Linear (no bias) predicts argmax of the input row.
  auto lin = std::make_shared<Linear>(3, 3, false);
  lin->weight().value = Tensor::from_vector(std::vector<float>{1, 0, 0, 0, 1, 0, 0, 0, 1}, {3, 3});
  Sequential model({lin});
  const Tensor x = Tensor::from_vector(
      std::vector<float>{5, 0, 0, 0, 5, 0, 0, 0, 5, 5, 0, 0, 0, 5, 0}, {5, 3});  // argmax 0 1 2 0 1
  const Tensor t = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 2, 2}, {5});  // 3 of 5 right
  DataLoaderOptions o;
  o.batch_size = 2;
  DataLoader loader(std::make_shared<TensorDataset>(x, t), o);
  model.train();
  EXPECT_DOUBLE_EQ(evaluate_accuracy(model, loader), 0.6);
  EXPECT_TRUE(model.is_training());  // the mode comes back
  // An output that is not (B, classes).
  Sequential bad({std::make_shared<Flatten>(0)});
  expect_error([&] { evaluate_accuracy(bad, loader); }, ErrorCode::kInvalidArgument,
               "evaluate_accuracy");
}

TEST(SplitData, SizesAndRows) {
  const LabeledData d = make_classification(50, 3, 2, 1);
  const TrainTestData s = split_data(d, 0.2, 7);
  EXPECT_EQ(s.test.inputs.dim(0), 10);  // ceil(0.2 * 50)
  EXPECT_EQ(s.train.inputs.dim(0), 40);
  EXPECT_EQ(s.train.labels.numel(), 40);
  EXPECT_EQ(s.test.inputs.dim(1), 3);
}

// ---- training loops -----------------------------------------------------------------------------

/// Nearest-centroid accuracy on `d` with centroids from `d` itself: 1.0 means the classes are
/// separated by the (linear) bisector planes of their centroids.
double nearest_centroid_accuracy(const LabeledData& d, int64_t classes) {
  const int64_t n = d.inputs.dim(0), f = d.inputs.dim(1);
  const std::vector<float> x = d.inputs.to_vector<float>();
  const std::vector<int64_t> y = d.labels.to_vector<int64_t>();
  std::vector<double> c(static_cast<std::size_t>(classes * f), 0.0);
  std::vector<int64_t> count(static_cast<std::size_t>(classes), 0);
  for (int64_t i = 0; i < n; ++i) {
    ++count[static_cast<std::size_t>(y[i])];
    for (int64_t k = 0; k < f; ++k) c[y[i] * f + k] += x[i * f + k];
  }
  for (int64_t k = 0; k < classes * f; ++k) c[k] /= static_cast<double>(count[k / f]);
  int64_t right = 0;
  for (int64_t i = 0; i < n; ++i) {
    int64_t best = 0;
    double best_d = INFINITY;
    for (int64_t cl = 0; cl < classes; ++cl) {
      double dist = 0;
      for (int64_t k = 0; k < f; ++k) {
        const double e = x[i * f + k] - c[cl * f + k];
        dist += e * e;
      }
      if (dist < best_d) best_d = dist, best = cl;
    }
    right += best == y[i] ? 1 : 0;
  }
  return static_cast<double>(right) / static_cast<double>(n);
}

TrainResult fit_blobs(int threads) {
  const LabeledData d = make_classification(240, 4, 3, 11, 10.0);
  const TrainTestData s = split_data(d, 0.25, 0);
  auto model = make_mlp({4, 3}, 5);  // one Linear layer: a linear classifier
  SGD opt(model->named_parameters(), {.lr = 0.1, .momentum = 0.9});
  TrainOptions o;
  o.epochs = 15;
  o.batch_size = 16;
  o.seed = 2;
  o.num_threads = threads;
  o.progress = false;
  return train_classifier(*model, opt, s.train, s.test, o);
}

TEST(TrainClassifier, SeparableBlobsReachFullAccuracy) {
  const LabeledData d = make_classification(240, 4, 3, 11, 10.0);
  // The independent check that the problem is linearly separable.
  ASSERT_EQ(nearest_centroid_accuracy(d, 3), 1.0);
  const TrainResult r = fit_blobs(1);
  EXPECT_EQ(r.train_accuracy, 1.0);
  EXPECT_EQ(r.test_accuracy, 1.0);
  EXPECT_EQ(r.epochs, 15);
  EXPECT_EQ(r.steps, 15 * ((180 + 15) / 16));  // ceil(180 / 16) batches per epoch
  EXPECT_EQ(r.samples, 15 * 180);
  EXPECT_EQ(r.num_parameters, 4 * 3 + 3);
  EXPECT_EQ(r.parameter_bytes, 4 * r.num_parameters);
  EXPECT_GT(r.peak_host_bytes, 0);
  ASSERT_EQ(r.loss_history.size(), 15u);
  EXPECT_LT(r.loss_history.back(), r.loss_history.front());
  EXPECT_GT(r.samples_per_second, 0);
  EXPECT_DOUBLE_EQ(r.seconds_per_epoch, r.train_seconds / 15);
  EXPECT_TRUE(std::isnan(r.val_loss));  // not a GPT run
}

TEST(TrainClassifier, DeterministicAcrossThreadCounts) {
  const TrainResult a = fit_blobs(1);
  const TrainResult b = fit_blobs(2);
  EXPECT_EQ(a.loss_history, b.loss_history);  // bit-identical: reductions in a fixed order
}

TrainResult fit_blobs_hooked(const StepHooks& hooks, Module** model_out = nullptr) {
  const LabeledData d = make_classification(240, 4, 3, 11, 10.0);
  const TrainTestData s = split_data(d, 0.25, 0);
  static std::shared_ptr<Sequential> model;
  model = make_mlp({4, 3}, 5);
  if (model_out != nullptr) *model_out = model.get();
  SGD opt(model->named_parameters(), {.lr = 0.1});  // plain SGD: the update is linear in grad
  TrainOptions o;
  o.epochs = 3;
  o.batch_size = 16;
  o.seed = 2;
  o.progress = false;
  o.hooks = hooks;
  return train_classifier(*model, opt, s.train, s.test, o);
}

TEST(TrainClassifier, LossScaleHookAndUnscalingBeforeTheStepGiveTheSameRun) {
  const TrainResult plain = fit_blobs_hooked({});
  Module* model = nullptr;
  StepHooks h;
  h.loss_scale = [] { return 4.f; };
  // Dividing every gradient by the same power of two undoes the scaling exactly, so the run is
  // bit-identical to the unscaled one only if the loss gradient really was multiplied by 4 and
  // before_step really ran before the update.
  h.before_step = [&](int64_t) {
    for (const NamedParameter& np : model->named_parameters()) {
      np.param->grad.copy_from(frugal::scale(np.param->grad.cview(), 0.25).cview());
    }
    return true;
  };
  std::vector<int64_t> after;
  h.after_step = [&](int64_t step) { after.push_back(step); };
  const TrainResult scaled = fit_blobs_hooked(h, &model);
  EXPECT_EQ(scaled.loss_history, plain.loss_history);
  EXPECT_EQ(scaled.skipped_steps, 0);
  ASSERT_EQ(static_cast<int64_t>(after.size()), scaled.steps);
  for (std::size_t i = 0; i < after.size(); ++i) EXPECT_EQ(after[i], static_cast<int64_t>(i));
}

TEST(TrainClassifier, SkippedStepsLeaveTheWeightsUnchanged) {
  Module* model = nullptr;
  auto fresh = make_mlp({4, 3}, 5);
  std::vector<std::vector<float>> before;
  for (const NamedParameter& np : fresh->named_parameters()) {
    before.push_back(np.param->value.to_vector<float>());
  }
  StepHooks h;
  h.before_step = [](int64_t) { return false; };
  int after_calls = 0;
  h.after_step = [&](int64_t) { ++after_calls; };
  const TrainResult r = fit_blobs_hooked(h, &model);
  EXPECT_EQ(r.skipped_steps, r.steps);
  EXPECT_EQ(after_calls, 0);
  std::size_t i = 0;
  for (const NamedParameter& np : model->named_parameters()) {
    EXPECT_EQ(np.param->value.to_vector<float>(), before[i++]) << np.name;
  }
}

TEST(TrainClassifier, BadInput) {
  auto model = make_mlp({4, 3});
  SGD opt(model->named_parameters(), {});
  const LabeledData d = make_classification(20, 4, 3, 1);
  TrainOptions o;
  o.progress = false;
  o.epochs = 0;
  expect_error([&] { train_classifier(*model, opt, d, {}, o); }, ErrorCode::kInvalidArgument,
               "train_classifier");
  o.epochs = 1;
  o.batch_size = 0;
  expect_error([&] { train_classifier(*model, opt, d, {}, o); }, ErrorCode::kInvalidArgument,
               "train_classifier");
  o.batch_size = 4;
  LabeledData f32_labels{d.inputs, d.labels.to(DType::kF32)};
  expect_error([&] { train_classifier(*model, opt, f32_labels, {}, o); },
               ErrorCode::kInvalidArgument, "train_classifier");
}

TEST(TrainCharGpt, LearnsAPeriodicText) {
  // "abcd" repeated: unigram entropy ln 4, but each next character is determined by the last.
  std::string text;
  for (int i = 0; i < 2000; ++i) text += "abcd";
  const CharCorpus corpus = CharCorpus::from_string(text);
  EXPECT_NEAR(corpus.unigram_entropy(), std::log(4.0), 1e-12);  // four equally frequent bytes
  GPT model(char_gpt_config(corpus.vocab_size(), CharGptSize::kTiny, 1));
  AdamW opt(model.named_parameters(), {.lr = 1e-2, .weight_decay = 0.0});
  TrainOptions o;
  o.steps = 60;
  o.batch_size = 4;
  o.seq_len = 16;
  o.warmup_steps = 5;
  o.clip_grad_norm = 1.0;
  o.eval_batches = 2;
  o.progress = false;
  const TrainResult r = train_char_gpt(model, opt, corpus, o);
  EXPECT_EQ(r.steps, 60);
  EXPECT_EQ(r.samples, 240);
  EXPECT_EQ(r.loss_history.size(), 60u);
  // A deterministic text: the loss must fall far below the unigram entropy (1.386 nats).
  EXPECT_LT(r.val_loss, 0.1);
  EXPECT_LT(r.final_train_loss, 0.1);
  EXPECT_DOUBLE_EQ(r.tokens_per_second, 16 * r.samples_per_second);
  // Greedy sampling continues the period.
  EXPECT_EQ(sample_chars(model, corpus, "abcdab", 8, 0.0, 0), "cdabcdab");
  // Temperature sampling draws only corpus symbols and is reproducible by seed.
  const std::string s1 = sample_chars(model, corpus, "a", 20, 1.0, 9);
  EXPECT_EQ(s1, sample_chars(model, corpus, "a", 20, 1.0, 9));
  EXPECT_EQ(s1.find_first_not_of("abcd"), std::string::npos);
}

TEST(TrainCharGpt, BadInput) {
  const CharCorpus corpus = CharCorpus::from_string(std::string(200, 'a') + std::string(200, 'b'));
  GPT model(char_gpt_config(corpus.vocab_size(), CharGptSize::kTiny));
  AdamW opt(model.named_parameters(), {});
  TrainOptions o;
  o.progress = false;
  o.seq_len = 1000;  // > block_size
  expect_error([&] { train_char_gpt(model, opt, corpus, o); }, ErrorCode::kInvalidArgument,
               "train_char_gpt");
  o.seq_len = 8;
  o.steps = 0;
  expect_error([&] { train_char_gpt(model, opt, corpus, o); }, ErrorCode::kInvalidArgument,
               "train_char_gpt");
}

}  // namespace
}  // namespace frugal::nn
