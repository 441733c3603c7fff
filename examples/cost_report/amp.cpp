// The amp rows of the training table: mixed-precision variants of the baselines, with the same
// recipes and loops as baselines.cpp:
//   "bf16 autocast"  every GEMM, convolution and attention product in bf16 (fp32 accumulation),
//                    saved activations in bf16, fp32 master weights (amp::MixedPrecision hooks,
//                    no loss scaling). Trained over env.opt.seeds seeds, beside fp32 runs of the
//                    same seeds in the same row (the fp32_* fields), so "within the spread of the
//                    seeds" is read off one row.
//   "fp16 + loss scaling" (mlp_digits) f16 autocast with the dynamic loss scaler.
// char_gpt rows also report the activation memory of one training step (act_mib: peak frugal
// host bytes of a step above what persists between steps) for fp32 and bf16.
#include "frugal/amp.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "frugal/core/memory.hpp"
#include "frugal/nn.hpp"
#include "rows.hpp"

namespace cost_report {
namespace {

namespace nn = frugal::nn;
namespace amp = frugal::amp;
using frugal::DType;
using frugal::Tensor;

/// The autocast policy of a run: bf16 / f16 defaults, or one that keeps everything fp32.
amp::AutocastPolicy policy_for(DType low) {
  amp::AutocastPolicy p = amp::default_policy(low == DType::kF32 ? DType::kBF16 : low);
  if (low == DType::kF32) p.low_precision.clear(), p.low_saved_activations = false;
  return p;
}

/// One classifier run of `make` with the recipe, in precision `low` (kF32: plain fp32).
using MakeModel = std::function<std::shared_ptr<nn::Module>(uint64_t seed)>;

nn::TrainResult classifier_run(const Env& env, const nn::Recipe& recipe, int64_t epochs,
                               const nn::TrainTestData& data, const MakeModel& make, uint64_t seed,
                               DType low, const std::string& label, amp::MixedPrecision** out_mp,
                               std::unique_ptr<amp::MixedPrecision>& mp_holder) {
  auto model = make(seed);
  nn::AdamW opt(model->named_parameters(), recipe.adamw);
  nn::TrainOptions o = row_options(recipe.train, env, label);
  o.epochs = epochs;
  o.seed = seed;
  std::unique_ptr<amp::AmpContext> autocast;
  if (low != DType::kF32) {
    amp::MixedPrecisionOptions mo;
    mo.dtype = low;
    mp_holder = std::make_unique<amp::MixedPrecision>(opt, mo);
    o.hooks = mp_holder->hooks();
    if (out_mp != nullptr) *out_mp = mp_holder.get();
  }
  amp::AmpContext ac(policy_for(low));
  return nn::train_classifier(*model, opt, data.train, data.test, o);
}

/// A classifier workload in bf16 against fp32, both over the seeds.
Record classifier_record(const Env& env, const std::string& workload, const std::string& what,
                         const nn::Recipe& recipe, int64_t epochs, const nn::TrainTestData& data,
                         const MakeModel& make) {
  std::vector<double> acc32, acc16;
  std::vector<nn::TrainResult> runs32, runs16;
  for (uint64_t seed : seeds_of(env)) {
    for (DType low : {DType::kF32, DType::kBF16}) {
      std::unique_ptr<amp::MixedPrecision> mp;
      const std::string label =
          workload + (low == DType::kF32 ? " fp32" : " bf16") + " seed " + std::to_string(seed);
      const nn::TrainResult r =
          classifier_run(env, recipe, epochs, data, make, seed, low, label, nullptr, mp);
      (low == DType::kF32 ? runs32 : runs16).push_back(r);
      (low == DType::kF32 ? acc32 : acc16).push_back(100 * r.test_accuracy);
    }
  }
  const Spread s16 = spread_of(acc16), s32 = spread_of(acc32);
  const nn::TrainResult c16 = mean_cost(runs16), c32 = mean_cost(runs32);
  Record rec{"training",
             workload,
             "bf16 autocast",
             what + ", the baseline recipe, " + std::to_string(epochs) +
                 " epochs; GEMMs/convolutions on bf16 operands with fp32 accumulation, bf16 "
                 "saved activations, fp32 master weights; mean of " +
                 std::to_string(acc16.size()) + " seeds (fp32 runs of the same seeds beside)",
             {}};
  rec.add("test_accuracy", "test acc", "%", s16.mean, 2)
      .add("test_acc_std", "acc std", "%", s16.std, 2)
      .add("fp32_test_accuracy", "fp32 acc", "%", s32.mean, 2)
      .add("fp32_test_acc_std", "fp32 std", "%", s32.std, 2)
      .add_json("test_acc_min", "%", s16.min)
      .add_json("test_acc_max", "%", s16.max)
      .add_json("fp32_test_acc_min", "%", s32.min)
      .add_json("fp32_test_acc_max", "%", s32.max)
      .add_json("fp32_sec_per_epoch", "s", c32.seconds_per_epoch)
      .add_json("fp32_peak_host_mib", "MiB", static_cast<double>(c32.peak_host_bytes) / (1 << 20))
      .add_json("seeds", "", static_cast<double>(acc16.size()))
      .add_json("epochs", "", static_cast<double>(epochs));
  add_training_cost(rec, c16);
  return rec;
}

Row mlp_bf16_row() {
  return {"training", "mlp_digits", [](const Env& env) {
            return classifier_record(env, "mlp_digits", "MLP 64-256-128-10 (ReLU) on digits",
                                     nn::mlp_digits_recipe(), env.opt.mlp_epochs, digits_split(),
                                     [](uint64_t seed) {
                                       return nn::make_mlp({64, 256, 128, 10}, seed);
                                     });
          }};
}

Row cnn_bf16_row() {
  return {"training", "cnn_digits", [](const Env& env) {
            return classifier_record(env, "cnn_digits",
                                     "Conv(16)-BN-ReLU-Conv(32)-BN-ReLU-MaxPool-Linear on digits",
                                     nn::cnn_digits_recipe(), env.opt.cnn_epochs,
                                     digits_image_split(), [](uint64_t seed) {
                                       nn::DigitsCnnConfig cfg;
                                       cfg.seed = seed;
                                       return nn::make_digits_cnn(cfg);
                                     });
          }};
}

Row mlp_fp16_row() {
  return {"training", "mlp_digits", [](const Env& env) {
            const nn::Recipe recipe = nn::mlp_digits_recipe();
            std::unique_ptr<amp::MixedPrecision> mp;
            amp::MixedPrecision* mpp = nullptr;
            const nn::TrainResult r = classifier_run(
                env, recipe, env.opt.mlp_epochs, digits_split(),
                [](uint64_t seed) {
                  return nn::make_mlp({64, 256, 128, 10}, seed);
                },
                env.opt.seed, DType::kF16, "mlp_digits fp16", &mpp, mp);
            Record rec{"training",
                       "mlp_digits",
                       "fp16 + loss scaling",
                       "MLP 64-256-128-10 on digits, the baseline recipe, " +
                           std::to_string(r.epochs) +
                           " epochs; f16 GEMM operands, dynamic loss scaling (init 2^16, x2 per "
                           "2000 finite steps, x0.5 on overflow), fp32 master weights",
                       {}};
            rec.add("test_accuracy", "test acc", "%", 100 * r.test_accuracy, 2)
                .add("skipped_steps", "skipped", "", static_cast<double>(r.skipped_steps), 0)
                .add("loss_scale", "final scale", "", mpp->loss_scale(), 0)
                .add_json("train_accuracy", "%", 100 * r.train_accuracy)
                .add_json("epochs", "", static_cast<double>(r.epochs));
            add_training_cost(rec, r);
            return rec;
          }};
}

/// Activation memory of one char_gpt training step (see the file comment), in bytes.
int64_t gpt_step_activation_bytes(const nn::GPTConfig& cfg, int64_t b, int64_t t, DType low) {
  nn::GPT model(cfg);
  nn::AdamW opt(model.named_parameters(), nn::char_gpt_recipe().adamw);
  amp::AmpContext ac(policy_for(low));
  const int64_t v = cfg.vocab_size;
  std::vector<int64_t> ids(static_cast<std::size_t>(b * t));
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>((i * 7 + 3) % v);
  const Tensor tokens = Tensor::from_vector(ids, {b, t});
  const Tensor targets = Tensor::from_vector(ids, {b * t});
  nn::SoftmaxCrossEntropy loss;
  model.forward(Tensor::from_vector(std::vector<int64_t>{1}, {1, 1}));  // weight copies
  opt.zero_grad();
  const int64_t before = frugal::host_allocated_bytes();
  frugal::reset_host_peak();
  const Tensor logits = model.forward(tokens);
  loss.forward(logits.reshape({b * t, v}), targets);
  model.backward(loss.backward().reshape({b, t, v}));
  return frugal::host_peak_bytes() - before;
}

Row gpt_bf16_row() {
  return {"training", "char_gpt", [](const Env& env) {
            const auto corpus =
                std::make_shared<const nn::CharCorpus>(nn::CharCorpus::from_file(env.opt.text));
            const nn::Recipe recipe = nn::char_gpt_recipe();
            std::vector<double> loss16, loss32;
            std::vector<nn::TrainResult> runs16, runs32;
            nn::GPTConfig cfg;
            int64_t steps = 0;
            for (uint64_t seed : seeds_of(env)) {
              for (DType low : {DType::kF32, DType::kBF16}) {
                cfg = nn::char_gpt_config(corpus->vocab_size(), nn::CharGptSize::kSmall, seed);
                nn::GPT model(cfg);
                nn::AdamW opt(model.named_parameters(), recipe.adamw);
                nn::TrainOptions o =
                    row_options(recipe.train, env,
                                std::string("char_gpt ") + (low == DType::kF32 ? "fp32" : "bf16") +
                                    " seed " + std::to_string(seed));
                o.steps = env.opt.gpt_steps;
                o.warmup_steps = std::min(o.warmup_steps, o.steps / 10);
                o.seed = seed;
                std::unique_ptr<amp::MixedPrecision> mp;
                if (low != DType::kF32) {
                  mp = std::make_unique<amp::MixedPrecision>(opt);
                  o.hooks = mp->hooks();
                }
                amp::AmpContext ac(policy_for(low));
                const nn::TrainResult r = nn::train_char_gpt(model, opt, *corpus, o);
                steps = r.steps;
                (low == DType::kF32 ? runs32 : runs16).push_back(r);
                (low == DType::kF32 ? loss32 : loss16).push_back(r.val_loss);
              }
            }
            const int64_t b = recipe.train.batch_size;
            const int64_t t = recipe.train.seq_len > 0 ? recipe.train.seq_len : cfg.block_size;
            const double act32 =
                static_cast<double>(gpt_step_activation_bytes(cfg, b, t, DType::kF32));
            const double act16 =
                static_cast<double>(gpt_step_activation_bytes(cfg, b, t, DType::kBF16));
            const Spread s16 = spread_of(loss16), s32 = spread_of(loss32);
            const nn::TrainResult c16 = mean_cost(runs16), c32 = mean_cost(runs32);
            Record rec{"training",
                       "char_gpt",
                       "bf16 autocast",
                       "the baseline GPT and recipe, " + std::to_string(steps) +
                           " steps; Linear, attention products on bf16 operands (fp32 "
                           "accumulation), bf16 saved activations, fp32 master weights, fp32 "
                           "head/norms/softmax/loss; mean of " +
                           std::to_string(loss16.size()) +
                           " seeds (fp32 runs of the same seeds beside)",
                       {}};
            rec.add("val_loss", "val loss", "nats/char", s16.mean, 3)
                .add("val_loss_std", "loss std", "nats/char", s16.std, 3)
                .add("fp32_val_loss", "fp32 loss", "nats/char", s32.mean, 3)
                .add("fp32_val_loss_std", "fp32 std", "nats/char", s32.std, 3)
                .add("act_mib", "act mem", "MiB", act16 / (1 << 20), 2)
                .add("act_ratio", "act/fp32", "", act16 / act32, 2)
                .add("speedup", "vs fp32", "x", c32.train_seconds / c16.train_seconds, 2)
                .add_json("fp32_act_mib", "MiB", act32 / (1 << 20))
                .add_json("val_loss_min", "nats/char", s16.min)
                .add_json("val_loss_max", "nats/char", s16.max)
                .add_json("fp32_val_loss_min", "nats/char", s32.min)
                .add_json("fp32_val_loss_max", "nats/char", s32.max)
                .add_json("fp32_sec_per_100_steps", "s", c32.seconds_per_100_steps)
                .add_json("tokens_per_sec", "tokens/s", c16.tokens_per_second)
                .add_json("fp32_tokens_per_sec", "tokens/s", c32.tokens_per_second)
                .add_json("seeds", "", static_cast<double>(loss16.size()));
            add_training_cost(rec, c16);
            return rec;
          }};
}

}  // namespace

std::vector<Row> amp_rows() {
  return {mlp_bf16_row(), mlp_fp16_row(), cnn_bf16_row(), gpt_bf16_row()};
}

}  // namespace cost_report
