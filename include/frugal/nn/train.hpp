#pragma once
/// Training helpers shared by the examples and the cost report: a terminal progress bar, the
/// training loops of a classifier and of a character-level GPT as library functions (so every
/// program measures the same loop), accuracy evaluation, and an atomic metrics JSON writer.
///
/// The loops run everything inside one oneTBB arena of TrainOptions::num_threads threads, so the
/// thread count applies to every op of the model whatever context its layers hold. They reset
/// the host peak-memory mark (frugal::reset_host_peak) when training starts: the peak they report
/// is the most frugal host memory alive at once during training: the model, gradients, optimizer
/// state, data and the step's temporaries, plus whatever else the process holds in frugal
/// allocations at the time (run on a clean process for a clean figure). It is not the resident
/// set: memory not allocated through frugal (std containers, the allocator's slack) is outside.
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "frugal/core/tensor.hpp"
#include "frugal/nn/data.hpp"
#include "frugal/nn/gpt.hpp"
#include "frugal/nn/module.hpp"
#include "frugal/nn/optim.hpp"
#include "frugal/nn/schedule.hpp"

namespace frugal::nn {

/// A named number shown by the progress bar: {"loss", 0.42}.
struct Metric {
  std::string name;
  double value = 0;
};

/// How a ProgressBar writes.
struct ProgressBarOptions {
  /// Where to write; nullptr is std::cerr.
  std::ostream* out = nullptr;
  /// Whether to redraw one line with '\r' (a terminal) or print plain lines (a log file).
  enum class Mode { kAuto, kTerminal, kPlain } mode = Mode::kAuto;
  /// Plain mode prints at most this many lines: one each time another 1/max_lines of the total
  /// is done (the last at step == total).
  int max_lines = 10;
  /// Samples (examples, sequences) one step processes, for the samples/s figure.
  double samples_per_step = 1;
  /// Terminal mode redraws at most this often (seconds), and always at step == total.
  double min_interval_s = 0.1;
};

/// A progress bar for a loop of `total` steps. Terminal mode (stderr is a TTY under kAuto)
/// redraws a single line:
///   "label  42% |##########-------------| 420/1000 loss 0.3012 acc 0.9100 | 1234 samples/s | ETA
///   0:07"
/// Plain mode prints the same text without the bar, as separate lines, at most max_lines of
/// them, so CI logs stay readable. finish() (or the destructor) ends the line.
class ProgressBar {
 public:
  /// Throws InvalidArgument ("[ProgressBar] ...") unless total > 0, max_lines > 0 and
  /// samples_per_step > 0.
  ProgressBar(int64_t total, std::string label, ProgressBarOptions options = {});
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  /// Reports that `step` (1..total) steps are done, with the current metrics.
  void update(int64_t step, const std::vector<Metric>& metrics = {});
  /// Ends the bar: in terminal mode redraws the last state and writes a newline. Idempotent.
  void finish();
  /// Whether this bar redraws one line (terminal mode).
  bool terminal() const { return terminal_; }
  /// The text of one status line (no '\r', no newline), as update() would print it after
  /// `elapsed_s` seconds; exposed for tests.
  std::string format_line(int64_t step, const std::vector<Metric>& metrics, double elapsed_s,
                          bool with_bar) const;

 private:
  int64_t total_;
  std::string label_;
  ProgressBarOptions options_;
  bool terminal_ = false;
  bool finished_ = false;
  int last_bucket_ = 0;
  double last_draw_s_ = -1;
  int64_t last_step_ = 0;
  std::vector<Metric> last_metrics_;
  double start_s_ = 0;
};

/// Seconds as "m:ss" (or "h:mm:ss" from an hour on); "?" for a negative or non-finite value.
std::string format_duration(double seconds);

/// A JSON value of a metrics file.
using MetricValue = std::variant<bool, int64_t, double, std::string>;
/// The keys and values of one JSON object, in order. A key with dots nests: "train.loss" is
/// {"train": {"loss": ...}}. Non-finite doubles are written as null (JSON has no NaN).
using MetricFields = std::vector<std::pair<std::string, MetricValue>>;

/// `fields` as a JSON document (2-space indent, keys in order of first appearance).
/// Throws InvalidArgument ("[metrics_json] ...") for an empty key or key part, or a key that is
/// used both as a value and as an object.
std::string metrics_json(const MetricFields& fields);
/// Writes metrics_json(fields) to `path` atomically: a temporary file in the same folder, then a
/// rename over `path`, so a reader sees the old file or the whole new one. Throws IoError
/// ("[write_metrics_json] <path> ...") when it cannot be written (`path` is then unchanged).
void write_metrics_json(const std::string& path, const MetricFields& fields);

/// Fraction (0..1) of the loader's examples whose argmax of model(input) over axis 1 equals the
/// target; model output (B, classes). The model runs in evaluation mode and gets its previous
/// mode back. Throws InvalidArgument ("[evaluate_accuracy] ...") for an output that is not
/// (B, classes).
double evaluate_accuracy(Module& model, const DataLoader& loader);

/// A data set split in two parts.
struct TrainTestData {
  LabeledData train;
  LabeledData test;
};
/// Splits `data` with train_test_split(N, test_fraction, seed) into rows of its inputs and labels.
TrainTestData split_data(const LabeledData& data, double test_fraction, uint64_t seed);

/// Where a technique plugs into the training loops (every hook is optional). One step is:
///   zero_grad; forward; loss; grad = loss'(logits) * loss_scale(); backward(grad);
///   if (before_step(step)) { clip; set lr; optimizer.step(); after_step(step); }
/// so loss scaling (mixed precision), gradient masking (pruning), gradient communication (data
/// parallel) and the refresh of low-precision or masked weights all fit without a loop of their
/// own. A step whose before_step returns false is skipped (no clipping, no update, after_step not
/// called) and counted in TrainResult::skipped_steps; the learning-rate schedule still advances.
struct StepHooks {
  /// Factor applied to the loss gradient before backward (dynamic loss scaling); null = 1.
  std::function<float()> loss_scale;
  /// After backward, before clipping and the update: unscale and check, mask or reduce the
  /// gradients. Returns false to skip the update. `step` counts from 0.
  std::function<bool(int64_t step)> before_step;
  /// After the optimizer step: re-apply masks, refresh weight copies.
  std::function<void(int64_t step)> after_step;
};

/// Settings of the training loops. The learning rate schedule starts from the optimizer's lr at
/// the call: linear warm-up over warmup_steps then a cosine to min_lr_ratio * lr
/// (CosineWithWarmup), unless `schedule` is given (then used as is) or cosine is false (constant).
struct TrainOptions {
  int64_t epochs = 10;                   ///< train_classifier: passes over the training data
  int64_t steps = 500;                   ///< train_char_gpt: optimizer steps
  int64_t batch_size = 64;               ///< examples (classifier) or sequences (GPT) per step
  int64_t seq_len = 0;                   ///< train_char_gpt: tokens per sequence, 0 = block_size
  uint64_t seed = 0;                     ///< shuffling (classifier) or batch sampling (GPT)
  bool cosine = true;                    ///< cosine decay (else constant lr after warm-up)
  int64_t warmup_steps = 0;              ///< linear warm-up from 0
  double min_lr_ratio = 0.0;             ///< final lr as a fraction of the initial lr
  const LrSchedule* schedule = nullptr;  ///< overrides the three above when set
  double clip_grad_norm = 0;    ///< clip the global gradient norm to this (0 = no clipping)
  int64_t eval_batches = 20;    ///< train_char_gpt: batches of the loss estimates at the end
  int num_threads = 0;          ///< CPU threads for every op (0 = all cores)
  bool progress = true;         ///< show a progress bar on stderr
  std::string label = "train";  ///< progress bar label
  ProgressBarOptions progress_options;  ///< how the bar writes (samples_per_step is set here)
  StepHooks hooks;                      ///< technique hooks around each step (see StepHooks)
};

/// What a training run measured. Fields that do not apply are NaN.
struct TrainResult {
  static constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  int64_t epochs = 0;                   ///< epochs run (classifier; 0 for GPT)
  int64_t steps = 0;                    ///< optimizer steps (skipped ones included)
  int64_t skipped_steps = 0;            ///< steps whose StepHooks::before_step returned false
  int64_t samples = 0;                  ///< training examples (classifier) or sequences (GPT) seen
  double train_seconds = 0;             ///< wall time of the training loop (evaluation excluded)
  double seconds_per_epoch = kNaN;      ///< train_seconds / epochs (classifier)
  double seconds_per_100_steps = kNaN;  ///< 100 train_seconds / steps
  double samples_per_second = kNaN;     ///< samples / train_seconds
  double tokens_per_second = kNaN;      ///< GPT: samples_per_second * seq_len (NaN otherwise)
  double final_train_loss = kNaN;       ///< classifier: mean loss of the last epoch; GPT: estimate
  double train_accuracy = kNaN;         ///< classifier: on the training set after training
  double test_accuracy = kNaN;          ///< classifier: on the test set after training
  double val_loss = kNaN;               ///< GPT: validation loss estimate (nats per token)
  std::vector<double> loss_history;     ///< classifier: mean loss per epoch; GPT: loss per step
  int64_t peak_host_bytes = 0;          ///< frugal::host_peak_bytes() during training
  int64_t parameter_bytes = 0;          ///< bytes of the model's parameter values
  int64_t num_parameters = 0;           ///< elements of the model's parameters
};

/// The result's scalars as metric fields under `prefix` ("result." gives "result.test_accuracy").
MetricFields metric_fields(const TrainResult& r, const std::string& prefix = "");

/// Trains a classifier (output (B, classes) logits) with softmax cross-entropy on `train` for
/// options.epochs epochs of shuffled batches (DataLoader, seed options.seed, reshuffled per
/// epoch, last batch kept), one optimizer step per batch with the schedule of `options`, then
/// measures the accuracy on `train` and `test` (test may have no inputs: accuracy NaN).
/// Inputs may have any shape (N, ...) the model accepts; labels (N) i64.
TrainResult train_classifier(Module& model, Optimizer& optimizer, const LabeledData& train,
                             const LabeledData& test, const TrainOptions& options);

/// Trains a GPT on next-character prediction for options.steps steps: each step takes
/// options.batch_size windows of seq_len tokens from the corpus's training part
/// (CharCorpus::sample with options.seed and the step as the draw), cross-entropy over every
/// position, backward, optional gradient clipping, one optimizer step. Then estimates the loss
/// on options.eval_batches batches of the training and validation parts (fixed draws, evaluation
/// mode): final_train_loss and val_loss in nats per character.
TrainResult train_char_gpt(GPT& model, Optimizer& optimizer, const CharCorpus& corpus,
                           const TrainOptions& options);

/// The Philox key of train_char_gpt's loss estimates (windows drawn apart from the training
/// draws): a caller comparing against a TrainResult's val_loss estimates with this key.
uint64_t char_eval_seed(const TrainOptions& options);

/// Mean cross-entropy (nats per token) of `model` on `batches` windows of `seq_len` tokens drawn
/// from `split` with key `seed` (draws 0..batches-1), in evaluation mode.
double estimate_char_loss(GPT& model, const CharCorpus& corpus, CorpusSplit split, int64_t batches,
                          int64_t batch_size, int64_t seq_len, uint64_t seed);

/// Continues `prompt` by `length` characters: each next character is the argmax of the logits
/// (temperature <= 0) or drawn from softmax(logits / temperature) with Philox key `seed` (one
/// uniform per character). The context is the last block_size tokens. Bytes of the prompt not in
/// the vocabulary are dropped; an empty prompt starts from the corpus's first character.
std::string sample_chars(GPT& model, const CharCorpus& corpus, const std::string& prompt,
                         int64_t length, double temperature, uint64_t seed);

}  // namespace frugal::nn
