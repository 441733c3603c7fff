#pragma once
/// Knowledge-distillation training on nn models: a teacher-output cache on disk, a FitNets
/// feature adapter, and the Distiller that runs one teacher-student step. The losses themselves
/// are the tensor API of frugal/distill.hpp (kd_loss, feature_mse, ...): a caller with their own
/// model calls those directly on logits and features.
///
/// A step (Distiller::step):
///   1. teacher logits: from the cache by the batch's dataset indices, or by running the teacher
///      forward in eval mode (no backward is ever run through it, so it accumulates no gradient),
///      optionally inside an amp::AmpContext (DistillerOptions::teacher_precision);
///   2. student forward (layer by layer when a feature hint is configured);
///   3. loss = alpha * T^2 KL + (1 - alpha) * CE (distill::kd_loss, or kd_loss_topk for a top-k
///      cache) + hint_weight * MSE(adapter(student hint), teacher hint);
///   4. student backward (the hint gradient joins at the hint layer), optimizer step.
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "frugal/core/tensor.hpp"
#include "frugal/distill/response.hpp"
#include "frugal/nn/data.hpp"
#include "frugal/nn/gpt.hpp"
#include "frugal/nn/module.hpp"
#include "frugal/nn/optim.hpp"

namespace frugal::nn {

/// FitNets adapter (Romero et al. 2015): a learned map from the student's feature width to the
/// teacher's, trained with the student. A Linear layer for (N, features) hints, a 1x1 Conv2d for
/// (N, C, H, W) hints.
class FeatureAdapter : public Module {
 public:
  /// (N, in_features) -> (N, out_features) through nn::Linear(in, out) initialised from `seed`.
  static std::shared_ptr<FeatureAdapter> linear(int64_t in_features, int64_t out_features,
                                                uint64_t seed = 0, DType dtype = DType::kF32);
  /// (N, in_channels, H, W) -> (N, out_channels, H, W) through a 1x1 nn::Conv2d.
  static std::shared_ptr<FeatureAdapter> conv1x1(int64_t in_channels, int64_t out_channels,
                                                 uint64_t seed = 0, DType dtype = DType::kF32);

  Tensor forward(const Tensor& input) override { return body_->forward(input); }
  Tensor backward(const Tensor& grad_output) override { return body_->backward(grad_output); }
  std::string type_name() const override { return "FeatureAdapter"; }

 private:
  explicit FeatureAdapter(std::shared_ptr<Module> body);
  std::shared_ptr<Module> body_;
};

/// Options of TeacherCache::build.
struct TeacherCacheOptions {
  int64_t top_k = 0;  ///< 0: store every logit; k > 0: the k largest (distill::topk_teacher)
  /// Top-k caches: kRenormalize (usable at any T) or kUniform, which also stores each row's
  /// log-sum-exp at `temperature` and is then tied to that T (the Distiller refuses another).
  distill::TopKTail tail = distill::TopKTail::kRenormalize;
  double temperature = 0.0;   ///< kUniform: the T of the stored lse (> 0); unused otherwise
  int64_t shard_size = 4096;  ///< examples per safetensors shard, > 0
  int64_t batch_size = 256;   ///< teacher batch size while building, > 0
  /// Precision of the teacher forward while building (kF32, kBF16, kF16), as
  /// DistillerOptions::teacher_precision: a cache built in bf16 holds the bf16 teacher's logits
  /// (stored as f32), so the Distiller with a cache trains on what it would see live.
  DType teacher_precision = DType::kF32;
};

/// Teacher outputs computed once per data set and kept on disk as safetensors shards
/// `<dir>/teacher_<shard>.safetensors` (tensors "values" (n, C or k) f32 and, for top-k, "indices"
/// (n, k) i64, plus "lse" (n) f32 for a uniform-tail top-k cache; metadata first, count, classes,
/// top_k, tail ("renormalize" / "uniform"), lse_temperature), keyed by dataset index: shard s holds
/// examples [s * shard_size, s * shard_size + count). Opening loads every shard into host memory
/// (N x k values: a top-16 cache of a million examples is ~200 MB).
class TeacherCache {
 public:
  /// Runs `teacher` in eval mode over `data` in index order and writes the shards into `dir`
  /// (created if missing; existing shards are overwritten), then opens them. The teacher's mode is
  /// restored afterwards. Inputs go to the teacher's device; values are stored as f32.
  /// Throws InvalidArgument ("[TeacherCache::build] ...") for bad options or non-(N, C) output.
  static TeacherCache build(Module& teacher, const Dataset& data, const std::string& dir,
                            const TeacherCacheOptions& options = {}, const ExecContext& ctx = {});
  /// Opens the shards in `dir`. Throws IoError ("[TeacherCache::open] ...") when they are missing,
  /// unreadable or inconsistent.
  static TeacherCache open(const std::string& dir);

  int64_t size() const { return size_; }
  int64_t num_classes() const { return classes_; }
  /// 0 for a dense cache.
  int64_t top_k() const { return top_k_; }
  /// How a top-k cache's loss treats the classes it does not store.
  distill::TopKTail tail() const { return tail_; }
  /// kUniform: the temperature of the stored lse (the only T the cache can be used at); else 0.
  double temperature() const { return temperature_; }
  /// Dense logits (B, C) of dataset examples `indices`, f32 on `device`. Dense caches only.
  Tensor logits(std::span<const int64_t> indices, Device device = Device::cpu(),
                const ExecContext& ctx = {}) const;
  /// Top-k logits of `indices` on `device` (with the tail, lse and its temperature for kUniform).
  /// Top-k caches only.
  distill::TopKLogits topk(std::span<const int64_t> indices, Device device = Device::cpu(),
                           const ExecContext& ctx = {}) const;

 private:
  TeacherCache() = default;
  int64_t size_ = 0;
  int64_t classes_ = 0;
  int64_t top_k_ = 0;
  distill::TopKTail tail_ = distill::TopKTail::kRenormalize;
  double temperature_ = 0.0;
  Tensor values_;   // (size, C or k) f32, host
  Tensor indices_;  // (size, k) i64, host (top-k only)
  Tensor lse_;      // (size) f32, host (kUniform only)
};

/// Options of a Distiller.
struct DistillerOptions {
  double temperature = 4.0;  ///< softmax temperature T, > 0
  double alpha = 0.9;        ///< weight of the KD term; the hard-label CE gets 1 - alpha
  /// Feature hint (FitNets): the outputs of student layer `hint_student_layer` and teacher layer
  /// `hint_teacher_layer` (indices into the two Sequential models; -1: no hint) are matched with
  /// MSE after `adapter` (optional when the shapes already agree), weighted by hint_weight.
  int hint_student_layer = -1;
  int hint_teacher_layer = -1;
  double hint_weight = 1.0;
  std::shared_ptr<Module> adapter;
  /// Precision of the teacher forward: kF32 runs the teacher as it is; kBF16 (or kF16) runs it
  /// inside an amp::AmpContext(amp::default_policy(kBF16)), so the layers that follow the
  /// autocast policy (GEMMs, convolutions) compute in bf16. The logits are converted to the
  /// student's dtype before the loss.
  DType teacher_precision = DType::kF32;
};

/// Losses of one step (as the student saw them before its update).
struct DistillStepResult {
  double loss = 0.0;  ///< alpha kd + (1 - alpha) ce + hint_weight hint
  double kd = 0.0;    ///< T^2 KL batchmean
  double ce = 0.0;    ///< hard-label cross-entropy
  double hint = 0.0;  ///< feature MSE (0 without a hint)
};

/// Teacher-student training steps. The student and teacher are any Modules returning logits
/// (N, C), or (N, ..., C) (sequence models: every position is a row of the loss, labels
/// (N, ...)); a feature hint needs both to be Sequential (the step runs them layer by layer). The
/// optimizer must hold the student's (and the adapter's) parameters. The models must outlive the
/// Distiller.
class Distiller {
 public:
  /// `teacher` may be null when a cache is set before the first step. Throws InvalidArgument
  /// ("[Distiller] ...") for bad options, or a hint on models that are not Sequential.
  Distiller(std::shared_ptr<Module> student, std::shared_ptr<Module> teacher, Optimizer& optimizer,
            const DistillerOptions& options = {});

  /// Uses cached teacher outputs (looked up by Batch::indices) instead of running the teacher.
  /// A hint still needs the teacher (its features are not cached).
  void set_cache(std::shared_ptr<const TeacherCache> cache) { cache_ = std::move(cache); }

  /// One training step on `batch` (labels: Batch::target, i64 class indices).
  DistillStepResult step(const Batch& batch);

  const DistillerOptions& options() const { return options_; }
  /// Stream and CPU thread count of the loss ops.
  void set_context(const ExecContext& ctx) { ctx_ = ctx; }

 private:
  std::shared_ptr<Module> student_;
  std::shared_ptr<Module> teacher_;
  Optimizer& optimizer_;
  DistillerOptions options_;
  std::shared_ptr<const TeacherCache> cache_;
  ExecContext ctx_;
};

/// Teacher logits of `input` with no gradient: `teacher` runs forward in eval mode (its mode is
/// restored after), inside an amp::AmpContext when `precision` is kBF16 or kF16, with the input
/// moved to the teacher's device. Returns the logits as the teacher produced them. Throws
/// InvalidArgument ("[teacher_forward] ...") for a precision other than kF32, kBF16, kF16.
Tensor teacher_forward(Module& teacher, const Tensor& input, DType precision = DType::kF32,
                       const ExecContext& ctx = {});

/// A stronger teacher from several: forward returns the mean of the members' outputs (logits
/// (N, ..., C) of one shape), i.e. the normalised geometric mean of their distributions at every
/// temperature. Members are registered as children "0", "1", ..., so eval() / train() reach them.
/// Teacher only: backward throws Unsupported. Throws InvalidArgument ("[TeacherEnsemble] ...")
/// for no members, a null member, or members whose outputs differ in shape, dtype or device.
class TeacherEnsemble : public Module {
 public:
  explicit TeacherEnsemble(std::vector<std::shared_ptr<Module>> members);
  /// (N, ...) -> mean over the members of member.forward(input).
  Tensor forward(const Tensor& input) override;
  /// Throws Unsupported: a teacher is never trained through the ensemble.
  Tensor backward(const Tensor& grad_output) override;
  std::string type_name() const override { return "TeacherEnsemble"; }
  std::size_t size() const { return members_.size(); }

 private:
  std::vector<std::shared_ptr<Module>> members_;
};

/// Random translations of image inputs in front of a model, for "function matching" (Beyer et
/// al. 2022, "Knowledge distillation: A good teacher is patient and consistent"): put it outside
/// a DistilledStudent so the teacher labels the same shifted images the student sees, and outside
/// the plain student for the no-KD control (the same seed gives both the same shifts). In
/// training mode forward moves every example of (N, ..., H, W) by (dy, dx), each drawn uniformly
/// from [-max_shift, max_shift], filling with zeros; the i-th example drawn since construction
/// uses Philox counter i with key `seed` (lanes x, y), so a run is reproducible. In eval mode it
/// is the inner model alone. backward returns the adjoint of the shift applied to the inner
/// model's input gradient. The shift runs on the host (inputs on another device go there and
/// back). f32 or f64 inputs of rank >= 3.
class RandomShift : public Module {
 public:
  /// Throws InvalidArgument ("[RandomShift] ...") for a null model or max_shift < 0.
  RandomShift(std::shared_ptr<Module> inner, int64_t max_shift = 1, uint64_t seed = 0);
  Tensor forward(const Tensor& input) override;
  Tensor backward(const Tensor& grad_output) override;
  std::string type_name() const override { return "RandomShift"; }
  Module& inner() { return *inner_; }
  /// Examples shifted so far (the Philox counter of the next one).
  uint64_t drawn() const { return drawn_; }

 private:
  std::shared_ptr<Module> inner_;
  int64_t max_shift_;
  uint64_t seed_;
  uint64_t drawn_ = 0;
  std::vector<int32_t> last_shifts_;  // (dy, dx) per example of the last training forward
};

namespace detail {
/// What DistilledStudent and DistilledGpt share: the teacher run of a training forward and the
/// blend of the loop's cross-entropy gradient with the KD gradient.
class LoopDistillation {
 public:
  LoopDistillation(std::shared_ptr<Module> teacher, const DistillerOptions& options,
                   std::function<float()> loss_scale, const char* op);
  /// Runs the teacher on `input` and keeps its logits (converted to `dtype` on `device`).
  void run_teacher(const Tensor& input, Device device, DType dtype);
  /// run_teacher for a Sequential teacher, layer by layer; returns the output of layer
  /// options().hint_teacher_layer (converted like the logits).
  Tensor run_teacher_hint(const Tensor& input, Device device, DType dtype);
  /// The loop's loss scale now (1 without a loss_scale function).
  double loss_scale() const;
  Module& teacher() { return *teacher_; }
  /// alpha * scale * dKD/ds + (1 - alpha) * grad_ce for student logits (..., C); forgets the kept
  /// teacher logits.
  Tensor blend(const Tensor& student_logits, const Tensor& grad_ce);
  double last_kd() const { return last_kd_; }
  const DistillerOptions& options() const { return options_; }

 private:
  std::shared_ptr<Module> teacher_;
  DistillerOptions options_;
  std::function<float()> loss_scale_;
  const char* op_;
  Tensor teacher_logits_;
  double last_kd_ = 0.0;
};
}  // namespace detail

/// Distillation inside a training loop that minimises the softmax cross-entropy of a classifier
/// (nn::train_classifier): the student as the loop sees it. In training mode, forward runs the
/// teacher too (teacher_forward: no gradient, options.teacher_precision) and returns the
/// student's logits; backward receives the loop's cross-entropy gradient g = (softmax(s) -
/// onehot(y)) / N (times the loop's loss scale) and passes
///   alpha * scale * T (softmax(s / T) - softmax(t / T)) / N + (1 - alpha) * g
/// to the student, which is the gradient of distill::kd_loss(s, t, y, T, alpha). In eval mode it
/// is the student alone (evaluation costs no teacher). So the distilled and the plain student
/// run the same loop, data order and schedule. The loop's reported loss stays the hard-label
/// cross-entropy; last_kd() is the KD term of the last backward. Parameters are the student's
/// (under "student.") and the hint adapter's ("adapter."): build the optimizer from this
/// module's named_parameters() when there is an adapter.
///
/// Feature hint (FitNets), with a Sequential student and teacher: options.hint_student_layer /
/// hint_teacher_layer / adapter / hint_weight as for Distiller; the training forward runs both
/// models layer by layer, and backward adds the gradient of hint_weight * MSE(adapter(student
/// hint), teacher hint) (times the loss scale) at the student's hint layer.
class DistilledStudent : public Module {
 public:
  /// `loss_scale` must be the loop's StepHooks::loss_scale (null: 1). Throws InvalidArgument
  /// ("[DistilledStudent] ...") for a null model, bad temperature / alpha / precision, or a hint
  /// on models that are not Sequential, layers out of range or a negative hint_weight.
  DistilledStudent(std::shared_ptr<Module> student, std::shared_ptr<Module> teacher,
                   const DistillerOptions& options = {}, std::function<float()> loss_scale = {});

  /// (N, ...) -> student logits (N, C); runs the teacher too in training mode.
  Tensor forward(const Tensor& input) override;
  /// Cross-entropy gradient (N, C) -> the student's input gradient, after the KD blend.
  /// Throws InvalidArgument ("[DistilledStudent] ...") without a training forward before it.
  Tensor backward(const Tensor& grad_output) override;
  std::string type_name() const override { return "DistilledStudent"; }

  Module& student() { return *student_; }
  /// The KD term T^2 KL batchmean of the last backward.
  double last_kd() const { return kd_.last_kd(); }
  /// The hint MSE of the last backward (0 without a hint).
  double last_hint() const { return last_hint_; }

 private:
  std::shared_ptr<Module> student_;
  detail::LoopDistillation kd_;
  Sequential* seq_student_ = nullptr;  // set when a hint is configured
  Tensor student_logits_, student_hint_, teacher_hint_;
  double last_hint_ = 0.0;
};

/// DistilledStudent for nn::train_char_gpt: a GPT student (this object, built from
/// `student_config`) whose training forward also runs `teacher` (any module mapping tokens
/// (B, T) to logits (B, T, V) with the student's V, usually a larger GPT) and whose backward
/// blends the loop's per-token cross-entropy gradient with the KD gradient over the B T rows.
/// Evaluation (estimate_char_loss, sampling) runs the student alone.
class DistilledGpt : public GPT {
 public:
  /// Throws InvalidArgument ("[DistilledGpt] ...") as DistilledStudent, and for any hint.
  DistilledGpt(const GPTConfig& student_config, std::shared_ptr<Module> teacher,
               const DistillerOptions& options = {}, std::function<float()> loss_scale = {});

  /// tokens (B, T) -> student logits (B, T, V); runs the teacher too in training mode.
  Tensor forward(const Tensor& tokens) override;
  /// Cross-entropy gradient (B, T, V) -> GPT::backward of the blended gradient.
  Tensor backward(const Tensor& grad_logits) override;
  std::string type_name() const override { return "DistilledGpt"; }
  /// The KD term of the last backward.
  double last_kd() const { return kd_.last_kd(); }

 private:
  detail::LoopDistillation kd_;
  Tensor student_logits_;
};

}  // namespace frugal::nn
