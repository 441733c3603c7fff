// Training helpers (frugal/nn/train.hpp): progress bar, metrics JSON, the classifier and
// character-GPT training loops, accuracy and loss estimates, sampling.
#include "frugal/nn/train.hpp"

#include "frugal/core/io.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <span>

#include "frugal/core/error.hpp"
#include "frugal/core/memory.hpp"
#include "frugal/core/ops.hpp"
#include "frugal/core/philox.hpp"
#include "frugal/nn/loss.hpp"
#include "frugal/nn/models.hpp"

namespace frugal::nn {
namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string format_number(double v, const char* fmt) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), fmt, v);
  return buf;
}

/// A metric value: 4 significant digits, integers as integers ("epoch 3", not "epoch 3.000").
std::string format_metric(double v) {
  if (!std::isfinite(v)) return std::isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf");
  if (v == std::round(v) && std::fabs(v) < 1e9) return format_number(v, "%.0f");
  return format_number(v, std::fabs(v) >= 1e4 || std::fabs(v) < 1e-3 ? "%.3e" : "%.4f");
}

/// The learning-rate schedule of a training loop: the caller's, or cosine / constant with
/// warm-up from the optimizer's current lr.
class LoopSchedule {
 public:
  LoopSchedule(const TrainOptions& o, double base_lr, int64_t total_steps) : given_(o.schedule) {
    if (given_ != nullptr) return;
    const int64_t warmup = std::min(o.warmup_steps, total_steps);
    const double floor = o.cosine ? o.min_lr_ratio * base_lr : base_lr;
    own_ = std::make_unique<CosineWithWarmup>(base_lr, warmup, total_steps, floor);
  }
  double lr_at(int64_t step) const { return (given_ ? given_ : own_.get())->lr_at(step); }

 private:
  const LrSchedule* given_;
  std::unique_ptr<CosineWithWarmup> own_;
};

void check_options(const TrainOptions& o, const char* op) {
  FRUGAL_REQUIRE(o.batch_size > 0, op, "batch_size ", o.batch_size, " is not positive");
  FRUGAL_REQUIRE(o.num_threads >= 0, op, "num_threads ", o.num_threads, " is negative");
  FRUGAL_REQUIRE(o.warmup_steps >= 0, op, "warmup_steps ", o.warmup_steps, " is negative");
  FRUGAL_REQUIRE(o.min_lr_ratio >= 0 && o.min_lr_ratio <= 1, op, "min_lr_ratio ", o.min_lr_ratio,
                 " is outside [0, 1]");
  FRUGAL_REQUIRE(o.clip_grad_norm >= 0, op, "clip_grad_norm ", o.clip_grad_norm, " is negative");
}

/// A progress bar when options.progress is on, else nothing.
std::unique_ptr<ProgressBar> make_bar(const TrainOptions& o, int64_t total, double per_step) {
  if (!o.progress) return nullptr;
  ProgressBarOptions po = o.progress_options;
  po.samples_per_step = per_step;
  return std::make_unique<ProgressBar>(total, o.label, po);
}

/// Number of positions where argmax(logits (B, C), 1) equals targets (B).
int64_t count_correct(const Tensor& logits, const Tensor& targets) {
  FRUGAL_REQUIRE(logits.rank() == 2 && logits.dim(0) == targets.numel(), "evaluate_accuracy",
                 "model output ", logits.shape(), " is not (B, classes) for ", targets.numel(),
                 " targets");
  const std::vector<int64_t> pred = argmax(logits, 1).to(Device::cpu()).to_vector<int64_t>();
  const std::vector<int64_t> want = targets.to(Device::cpu()).to_vector<int64_t>();
  int64_t correct = 0;
  for (std::size_t i = 0; i < pred.size(); ++i) correct += pred[i] == want[i] ? 1 : 0;
  return correct;
}

/// Restores a module's training mode on scope exit.
class ModeGuard {
 public:
  explicit ModeGuard(Module& m) : m_(m), was_(m.is_training()) {}
  ~ModeGuard() { m_.train(was_); }
  ModeGuard(const ModeGuard&) = delete;
  ModeGuard& operator=(const ModeGuard&) = delete;

 private:
  Module& m_;
  bool was_;
};

/// Runs `fn` inside an arena of `threads` threads (0: the caller's arena), so every op inside
/// uses that many threads.
template <class Fn>
void in_arena(int threads, Fn&& fn) {
  ExecContext ctx;
  ctx.num_threads = threads;
  ctx.run([&] { fn(); });
}

}  // namespace

// ---- ProgressBar -------------------------------------------------------------------------------

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<int64_t>(std::llround(seconds));
  char buf[48];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof(buf), "%lld:%02lld", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  }
  return buf;
}

ProgressBar::ProgressBar(int64_t total, std::string label, ProgressBarOptions options)
    : total_(total), label_(std::move(label)), options_(options) {
  FRUGAL_REQUIRE(total > 0, "ProgressBar", "total ", total, " is not positive");
  FRUGAL_REQUIRE(options_.max_lines > 0, "ProgressBar", "max_lines ", options_.max_lines,
                 " is not positive");
  FRUGAL_REQUIRE(options_.samples_per_step > 0, "ProgressBar", "samples_per_step ",
                 options_.samples_per_step, " is not positive");
  using Mode = ProgressBarOptions::Mode;
  if (options_.mode == Mode::kAuto) {
    // Only stderr itself can be a terminal; a caller's stream is taken as a log.
    terminal_ = options_.out == nullptr && ::isatty(STDERR_FILENO) == 1;
  } else {
    terminal_ = options_.mode == Mode::kTerminal;
  }
  start_s_ = now_seconds();
}

ProgressBar::~ProgressBar() {
  try {
    finish();
  } catch (...) {  // a destructor never throws; a failed write to stderr is not worth more
  }
}

std::string ProgressBar::format_line(int64_t step, const std::vector<Metric>& metrics,
                                     double elapsed_s, bool with_bar) const {
  const int64_t done = std::clamp<int64_t>(step, 0, total_);
  const double frac = static_cast<double>(done) / static_cast<double>(total_);
  std::string s = label_;
  s.append(" ").append(format_number(100.0 * frac, "%3.0f")).append("%");
  if (with_bar) {
    constexpr int kWidth = 24;
    const int filled = static_cast<int>(frac * kWidth);
    s.append(" |")
        .append(static_cast<std::size_t>(filled), '#')
        .append(static_cast<std::size_t>(kWidth - filled), '-')
        .append("|");
  }
  s.append(" ").append(std::to_string(done)).append("/").append(std::to_string(total_));
  for (const Metric& m : metrics)
    s.append(" ").append(m.name).append(" ").append(format_metric(m.value));
  if (done > 0 && elapsed_s > 0) {
    const double rate = static_cast<double>(done) * options_.samples_per_step / elapsed_s;
    s.append(" | ").append(format_number(rate, rate >= 100 ? "%.0f" : "%.1f")).append(" samples/s");
    const double left = elapsed_s * static_cast<double>(total_ - done) / static_cast<double>(done);
    s.append(done < total_ ? " | ETA " : " | in ")
        .append(format_duration(done < total_ ? left : elapsed_s));
  }
  return s;
}

void ProgressBar::update(int64_t step, const std::vector<Metric>& metrics) {
  if (finished_) return;
  std::ostream& out = options_.out ? *options_.out : std::cerr;
  step = std::clamp<int64_t>(step, 0, total_);
  last_step_ = step;
  last_metrics_ = metrics;
  const double elapsed = now_seconds() - start_s_;
  if (terminal_) {
    if (step < total_ && last_draw_s_ >= 0 && elapsed - last_draw_s_ < options_.min_interval_s) {
      return;
    }
    last_draw_s_ = elapsed;
    out << "\r" << format_line(step, metrics, elapsed, true) << "\x1b[K" << std::flush;
    return;
  }
  // Plain: a line each time the step crosses another 1/max_lines of the total.
  const int bucket = static_cast<int>(step * options_.max_lines / total_);
  if (bucket > last_bucket_) {
    last_bucket_ = bucket;
    last_draw_s_ = elapsed;
    out << format_line(step, metrics, elapsed, false) << "\n" << std::flush;
  }
}

void ProgressBar::finish() {
  if (finished_) return;
  finished_ = true;
  std::ostream& out = options_.out ? *options_.out : std::cerr;
  if (terminal_) {
    out << "\r" << format_line(last_step_, last_metrics_, now_seconds() - start_s_, true)
        << "\x1b[K\n"
        << std::flush;
  }
}

// ---- metrics JSON ------------------------------------------------------------------------------

std::string metrics_json(const MetricFields& fields) {
  using Json = nlohmann::ordered_json;
  const char* op = "metrics_json";
  Json root = Json::object();
  for (const auto& [key, value] : fields) {
    FRUGAL_REQUIRE(!key.empty(), op, "empty key");
    Json* node = &root;
    std::size_t begin = 0;
    while (true) {
      const std::size_t dot = key.find('.', begin);
      const std::string part = key.substr(begin, dot == std::string::npos ? dot : dot - begin);
      FRUGAL_REQUIRE(!part.empty(), op, "key '", key, "' has an empty part");
      if (dot == std::string::npos) {
        FRUGAL_REQUIRE(!node->contains(part) || !(*node)[part].is_object(), op, "key '", key,
                       "' is already an object");
        Json v;
        std::visit(
            [&](const auto& x) {
              using T = std::decay_t<decltype(x)>;
              if constexpr (std::is_same_v<T, double>) {
                v = std::isfinite(x) ? Json(x) : Json(nullptr);
              } else {
                v = Json(x);
              }
            },
            value);
        (*node)[part] = std::move(v);
        break;
      }
      if (!node->contains(part)) (*node)[part] = Json::object();
      FRUGAL_REQUIRE((*node)[part].is_object(), op, "key '", key, "': '", part,
                     "' is already a value");
      node = &(*node)[part];
      begin = dot + 1;
    }
  }
  return root.dump(2) + "\n";
}

void write_metrics_json(const std::string& path, const MetricFields& fields) {
  write_file_atomic(path, metrics_json(fields), "write_metrics_json");
}

// ---- evaluation and data -----------------------------------------------------------------------

double evaluate_accuracy(Module& model, const DataLoader& loader) {
  ModeGuard guard(model);
  model.eval();
  int64_t correct = 0, seen = 0;
  for (const Batch& b : loader) {
    correct += count_correct(model.forward(b.input), b.target);
    seen += b.target.numel();
  }
  return seen > 0 ? static_cast<double>(correct) / static_cast<double>(seen) : 0.0;
}

TrainTestData split_data(const LabeledData& data, double test_fraction, uint64_t seed) {
  FRUGAL_REQUIRE(data.inputs.defined() && data.labels.defined() && data.inputs.rank() >= 1 &&
                     data.labels.rank() >= 1 && data.inputs.dim(0) == data.labels.dim(0),
                 "split_data", "inputs and labels must have the same leading extent");
  const Split s = train_test_split(data.inputs.dim(0), test_fraction, seed);
  return {{take_rows(data.inputs, s.train), take_rows(data.labels, s.train)},
          {take_rows(data.inputs, s.test), take_rows(data.labels, s.test)}};
}

MetricFields metric_fields(const TrainResult& r, const std::string& prefix) {
  return {{prefix + "epochs", r.epochs},
          {prefix + "steps", r.steps},
          {prefix + "skipped_steps", r.skipped_steps},
          {prefix + "samples", r.samples},
          {prefix + "train_seconds", r.train_seconds},
          {prefix + "seconds_per_epoch", r.seconds_per_epoch},
          {prefix + "seconds_per_100_steps", r.seconds_per_100_steps},
          {prefix + "samples_per_second", r.samples_per_second},
          {prefix + "tokens_per_second", r.tokens_per_second},
          {prefix + "final_train_loss", r.final_train_loss},
          {prefix + "train_accuracy", r.train_accuracy},
          {prefix + "test_accuracy", r.test_accuracy},
          {prefix + "val_loss", r.val_loss},
          {prefix + "peak_host_bytes", r.peak_host_bytes},
          {prefix + "parameter_bytes", r.parameter_bytes},
          {prefix + "num_parameters", r.num_parameters}};
}

// ---- training loops ----------------------------------------------------------------------------

namespace {

/// The loss gradient times hooks.loss_scale() (unchanged without the hook or at scale 1).
Tensor scaled_loss_grad(Tensor grad, const StepHooks& hooks) {
  if (!hooks.loss_scale) return grad;
  const float s = hooks.loss_scale();
  return s == 1.f ? grad : scale(grad.cview(), s);
}

/// The update half of a step: before_step hook, clipping, lr, optimizer step, after_step hook.
/// Returns false when before_step skipped the update.
bool run_update(Optimizer& optimizer, const TrainOptions& options, double lr, int64_t step) {
  const StepHooks& h = options.hooks;
  if (h.before_step && !h.before_step(step)) return false;
  if (options.clip_grad_norm > 0) clip_grad_norm(optimizer.params(), options.clip_grad_norm);
  optimizer.set_lr(lr);
  optimizer.step();
  if (h.after_step) h.after_step(step);
  return true;
}

}  // namespace

TrainResult train_classifier(Module& model, Optimizer& optimizer, const LabeledData& train,
                             const LabeledData& test, const TrainOptions& options) {
  const char* op = "train_classifier";
  check_options(options, op);
  FRUGAL_REQUIRE(options.epochs > 0, op, "epochs ", options.epochs, " is not positive");
  FRUGAL_REQUIRE(train.inputs.defined() && train.labels.defined(), op, "no training data");
  FRUGAL_REQUIRE(train.labels.dtype() == DType::kI64, op, "labels must be i64, got ",
                 dtype_name(train.labels.dtype()));
  TrainResult r;
  r.parameter_bytes = parameter_bytes(model);
  r.num_parameters = model.num_parameters();
  in_arena(options.num_threads, [&] {
    auto dataset = std::make_shared<TensorDataset>(train.inputs, train.labels);
    DataLoaderOptions lo;
    lo.batch_size = options.batch_size;
    lo.shuffle = true;
    lo.seed = options.seed;
    DataLoader loader(dataset, lo);
    const int64_t per_epoch = loader.num_batches();
    const int64_t total = options.epochs * per_epoch;
    const LoopSchedule schedule(options, optimizer.lr(), total);
    SoftmaxCrossEntropy loss_fn;
    std::unique_ptr<ProgressBar> bar =
        make_bar(options, total, static_cast<double>(loader.num_samples()) / per_epoch);

    reset_host_peak();
    model.train();
    const double t0 = now_seconds();
    int64_t step = 0;
    for (int64_t epoch = 0; epoch < options.epochs; ++epoch) {
      loader.set_epoch(epoch);
      double loss_sum = 0;
      for (int64_t i = 0; i < per_epoch; ++i) {
        const Batch b = loader.batch(i);
        optimizer.zero_grad();
        const Tensor logits = model.forward(b.input);
        loss_sum += loss_fn.forward(logits, b.target);
        model.backward(scaled_loss_grad(loss_fn.backward(), options.hooks));
        if (!run_update(optimizer, options, schedule.lr_at(step), step)) ++r.skipped_steps;
        ++step;
        r.samples += b.target.numel();
        if (bar) {
          bar->update(step, {{"epoch", static_cast<double>(epoch + 1)},
                             {"loss", loss_sum / static_cast<double>(i + 1)}});
        }
      }
      r.loss_history.push_back(loss_sum / static_cast<double>(per_epoch));
    }
    r.train_seconds = now_seconds() - t0;
    r.peak_host_bytes = host_peak_bytes();
    if (bar) bar->finish();

    DataLoaderOptions eo;
    eo.batch_size = 256;
    r.train_accuracy = evaluate_accuracy(model, DataLoader(dataset, eo));
    if (test.inputs.defined() && test.inputs.numel() > 0) {
      r.test_accuracy = evaluate_accuracy(
          model, DataLoader(std::make_shared<TensorDataset>(test.inputs, test.labels), eo));
    }
    r.epochs = options.epochs;
    r.steps = step;
  });
  r.final_train_loss = r.loss_history.back();
  r.seconds_per_epoch = r.train_seconds / static_cast<double>(r.epochs);
  r.seconds_per_100_steps = 100.0 * r.train_seconds / static_cast<double>(r.steps);
  r.samples_per_second = static_cast<double>(r.samples) / r.train_seconds;
  return r;
}

uint64_t char_eval_seed(const TrainOptions& options) { return options.seed ^ 0x5eed0e7a1ULL; }

double estimate_char_loss(GPT& model, const CharCorpus& corpus, CorpusSplit split, int64_t batches,
                          int64_t batch_size, int64_t seq_len, uint64_t seed) {
  FRUGAL_REQUIRE(batches > 0, "estimate_char_loss", "batches ", batches, " is not positive");
  ModeGuard guard(model);
  model.eval();
  SoftmaxCrossEntropy loss_fn;
  const int64_t v = model.config().vocab_size;
  double sum = 0;
  for (int64_t i = 0; i < batches; ++i) {
    const TokenBatch tb = corpus.sample(split, batch_size, seq_len, seed, static_cast<uint64_t>(i));
    const Tensor logits = model.forward(tb.input);  // (B, T, V)
    sum += loss_fn.forward(logits.reshape({batch_size * seq_len, v}),
                           tb.target.reshape({batch_size * seq_len}));
  }
  return sum / static_cast<double>(batches);
}

TrainResult train_char_gpt(GPT& model, Optimizer& optimizer, const CharCorpus& corpus,
                           const TrainOptions& options) {
  const char* op = "train_char_gpt";
  check_options(options, op);
  const GPTConfig& cfg = model.config();
  const int64_t t = options.seq_len > 0 ? options.seq_len : cfg.block_size;
  FRUGAL_REQUIRE(options.steps > 0, op, "steps ", options.steps, " is not positive");
  FRUGAL_REQUIRE(t <= cfg.block_size, op, "seq_len ", t, " exceeds block_size ", cfg.block_size);
  FRUGAL_REQUIRE(corpus.vocab_size() <= cfg.vocab_size, op, "corpus vocabulary ",
                 corpus.vocab_size(), " exceeds the model's ", cfg.vocab_size);
  FRUGAL_REQUIRE(options.eval_batches > 0, op, "eval_batches ", options.eval_batches,
                 " is not positive");
  const int64_t b = options.batch_size, v = cfg.vocab_size;
  TrainResult r;
  r.parameter_bytes = parameter_bytes(model);
  r.num_parameters = model.num_parameters();
  in_arena(options.num_threads, [&] {
    const LoopSchedule schedule(options, optimizer.lr(), options.steps);
    SoftmaxCrossEntropy loss_fn;
    std::unique_ptr<ProgressBar> bar = make_bar(options, options.steps, static_cast<double>(b));
    reset_host_peak();
    model.train();
    const double t0 = now_seconds();
    double smooth = 0;  // exponential moving average of the loss for the progress bar
    for (int64_t step = 0; step < options.steps; ++step) {
      const TokenBatch tb =
          corpus.sample(CorpusSplit::kTrain, b, t, options.seed, static_cast<uint64_t>(step));
      optimizer.zero_grad();
      const Tensor logits = model.forward(tb.input);  // (B, T, V)
      const float loss = loss_fn.forward(logits.reshape({b * t, v}), tb.target.reshape({b * t}));
      model.backward(scaled_loss_grad(loss_fn.backward(), options.hooks).reshape({b, t, v}));
      if (!run_update(optimizer, options, schedule.lr_at(step), step)) ++r.skipped_steps;
      r.loss_history.push_back(loss);
      r.samples += b;
      smooth = step == 0 ? loss : 0.95 * smooth + 0.05 * loss;
      if (bar) bar->update(step + 1, {{"loss", smooth}, {"lr", optimizer.lr()}});
    }
    r.train_seconds = now_seconds() - t0;
    r.peak_host_bytes = host_peak_bytes();
    if (bar) bar->finish();
    // Loss estimates on fixed windows drawn with a key of their own (not the training draws).
    const uint64_t eval_seed = char_eval_seed(options);
    r.final_train_loss = estimate_char_loss(model, corpus, CorpusSplit::kTrain,
                                            options.eval_batches, b, t, eval_seed);
    r.val_loss =
        estimate_char_loss(model, corpus, CorpusSplit::kVal, options.eval_batches, b, t, eval_seed);
  });
  r.steps = options.steps;
  r.seconds_per_100_steps = 100.0 * r.train_seconds / static_cast<double>(r.steps);
  r.samples_per_second = static_cast<double>(r.samples) / r.train_seconds;
  r.tokens_per_second = r.samples_per_second * static_cast<double>(t);
  return r;
}

std::string sample_chars(GPT& model, const CharCorpus& corpus, const std::string& prompt,
                         int64_t length, double temperature, uint64_t seed) {
  FRUGAL_REQUIRE(length >= 0, "sample_chars", "length ", length, " is negative");
  ModeGuard guard(model);
  model.eval();
  std::vector<int64_t> tokens;
  std::string kept;
  for (unsigned char c : prompt) {
    const auto& vocab = corpus.vocabulary();
    if (std::binary_search(vocab.begin(), vocab.end(), c)) kept += static_cast<char>(c);
  }
  tokens = corpus.encode(kept);
  if (tokens.empty()) tokens.push_back(corpus.encode(corpus.text().substr(0, 1)).front());
  const std::size_t prompt_len = tokens.size();
  const int64_t block = model.config().block_size;
  const int64_t corpus_v = corpus.vocab_size();
  for (int64_t i = 0; i < length; ++i) {
    const int64_t n = std::min<int64_t>(block, static_cast<int64_t>(tokens.size()));
    const std::vector<int64_t> window(tokens.end() - n, tokens.end());
    const Tensor logits = model.forward(Tensor::from_vector(window, {1, n}));  // (1, n, V)
    const Tensor last = logits.slice(1, n - 1, n).to(Device::cpu()).to(DType::kF64).contiguous();
    const std::vector<double> z = last.to_vector<double>();
    int64_t next = 0;
    // Only the corpus's symbols are drawable (a model may have a padded vocabulary).
    if (temperature <= 0) {
      next = std::max_element(z.begin(), z.begin() + corpus_v) - z.begin();
    } else {
      const double zmax = *std::max_element(z.begin(), z.begin() + corpus_v);
      std::vector<double> p(static_cast<std::size_t>(corpus_v));
      double total = 0;
      for (int64_t c = 0; c < corpus_v; ++c) {
        p[static_cast<std::size_t>(c)] =
            std::exp((z[static_cast<std::size_t>(c)] - zmax) / temperature);
        total += p[static_cast<std::size_t>(c)];
      }
      const auto k = static_cast<uint64_t>(i);
      const double u =
          uniform01_f64(lane(philox_block(seed, 0, k), static_cast<int>(k % 4))) * total;
      double acc = 0;
      next = corpus_v - 1;
      for (int64_t c = 0; c < corpus_v; ++c) {
        acc += p[static_cast<std::size_t>(c)];
        if (u < acc) {
          next = c;
          break;
        }
      }
    }
    tokens.push_back(next);
  }
  return corpus.decode(std::span<const int64_t>(tokens).subspan(prompt_len));
}

}  // namespace frugal::nn
