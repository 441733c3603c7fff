// The distill rows of the training table: students distilled from the baselines (issue 9).
//   cnn_digits  "half-width student": the digits CNN with channels 8/16 (a quarter of the
//               convolution weights) trained alone with the CNN recipe, over env.opt.seeds seeds;
//               "half-width student + KD": the same students, seeds and loop, with the gradient
//               of Hinton's KD loss from the full CNN (trained once with the recipe, seed
//               env.opt.seed) through nn::DistilledStudent;
//               "half-width student + KD + hint": the same plus a FitNets feature hint.
//   char_gpt    "small student" / "small student + KD": a GPT of 1 layer, n_embd 48, trained
//               alone or distilled from the kSmall GPT (trained first for the same steps) through
//               nn::DistilledGpt, with the GPT recipe, over env.opt.seeds seeds.
// Both variants of a workload run the library's loop (train_classifier / train_char_gpt) with
// the same recipe, data order and schedule: the distilled one only changes the loss gradient.
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "frugal/nn.hpp"
#include "frugal/nn/distiller.hpp"
#include "rows.hpp"

namespace cost_report {
namespace {

namespace nn = frugal::nn;

// KD settings, the same for every seed, from the small sweeps in docs/distill.md: T = 2 and
// alpha = 0.5 for the CNN (T 2-4, alpha 0.5-0.9 tie on 3 seeds; this one was best on 10), T = 1
// and alpha = 0.5 for the GPT (its validation loss is measured at T = 1; T = 2 also beats the
// student alone, by less).
constexpr double kCnnTemperature = 2.0;
constexpr double kCnnAlpha = 0.5;
// The FitNets hint row (a fix tried for the CNN; 0.1 did better than 1.0 on 10 seeds).
constexpr double kCnnHintWeight = 0.1;
constexpr double kGptTemperature = 1.0;
constexpr double kGptAlpha = 0.5;

// ---- cnn_digits ------------------------------------------------------------------------------

nn::DigitsCnnConfig half_width(uint64_t seed) {
  nn::DigitsCnnConfig c;
  c.channels1 = 8;
  c.channels2 = 16;
  c.seed = seed;
  return c;
}

/// hint_weight > 0 adds a FitNets hint: the student's last ReLU (N, 8 -> 16, 8, 8) through a 1x1
/// convolution matched to the teacher's (N, 32, 8, 8).
Row cnn_student_row(bool kd, double hint_weight = 0) {
  const std::string variant = !kd               ? "half-width student"
                              : hint_weight > 0 ? "half-width student + KD + hint"
                                                : "half-width student + KD";
  return {"training", "cnn_digits", [kd, hint_weight, variant](const Env& env) {
            const nn::Recipe recipe = nn::cnn_digits_recipe();
            const nn::TrainTestData data = digits_image_split();
            std::shared_ptr<nn::Sequential> teacher;
            nn::TrainResult teacher_result;
            if (kd) {
              // The teacher: the baseline CNN, recipe as is.
              nn::DigitsCnnConfig tc;
              tc.seed = env.opt.seed;
              teacher = nn::make_digits_cnn(tc);
              nn::AdamW topt(teacher->named_parameters(), recipe.adamw);
              nn::TrainOptions to = row_options(recipe.train, env, "cnn_digits teacher");
              to.epochs = env.opt.cnn_epochs;
              teacher_result = nn::train_classifier(*teacher, topt, data.train, data.test, to);
            }
            std::vector<nn::TrainResult> runs;
            std::vector<double> acc;
            for (uint64_t seed : seeds_of(env)) {
              auto student = nn::make_digits_cnn(half_width(seed));
              nn::TrainOptions o = row_options(
                  recipe.train, env, "cnn_digits " + variant + " seed " + std::to_string(seed));
              o.epochs = env.opt.cnn_epochs;
              o.seed = seed;
              if (kd) {
                nn::DistillerOptions d;
                d.temperature = kCnnTemperature;
                d.alpha = kCnnAlpha;
                if (hint_weight > 0) {
                  d.hint_student_layer = 5;  // the second ReLU, before the pooling
                  d.hint_teacher_layer = 5;
                  d.hint_weight = hint_weight;
                  d.adapter = nn::FeatureAdapter::conv1x1(16, 32, seed + 100);
                }
                nn::DistilledStudent model(student, teacher, d, o.hooks.loss_scale);
                // The wrapper's parameters: the student's and the adapter's.
                nn::AdamW opt(model.named_parameters(), recipe.adamw);
                runs.push_back(nn::train_classifier(model, opt, data.train, data.test, o));
              } else {
                nn::AdamW opt(student->named_parameters(), recipe.adamw);
                runs.push_back(nn::train_classifier(*student, opt, data.train, data.test, o));
              }
              acc.push_back(100 * runs.back().test_accuracy);
            }
            const Spread s = spread_of(acc);
            std::string desc =
                "Conv(8)-BN-ReLU-Conv(16)-BN-ReLU-MaxPool-Linear (half the CNN's "
                "width), the CNN recipe, " +
                std::to_string(env.opt.cnn_epochs) + " epochs, mean of " +
                std::to_string(acc.size()) + " seeds";
            if (kd) {
              desc += "; KD from the fp32 CNN (test acc " +
                      short_number(std::round(1000 * teacher_result.test_accuracy) / 10) +
                      "%), T " + short_number(kCnnTemperature) + ", alpha " +
                      short_number(kCnnAlpha) + ", teacher forward every step";
            }
            if (hint_weight > 0) {
              desc +=
                  "; FitNets hint: 2nd ReLU (16 ch) -> 1x1 conv -> teacher's (32 ch), MSE "
                  "weight " +
                  short_number(hint_weight) + " (params include the adapter)";
            }
            Record rec{"training", "cnn_digits", variant, desc, {}};
            rec.add("test_accuracy", "test acc", "%", s.mean, 2)
                .add("test_acc_std", "acc std", "%", s.std, 2)
                .add("test_acc_min", "acc min", "%", s.min, 2)
                .add("test_acc_max", "acc max", "%", s.max, 2)
                .add_json("seeds", "", static_cast<double>(acc.size()))
                .add_json("epochs", "", static_cast<double>(env.opt.cnn_epochs));
            for (std::size_t i = 0; i < acc.size(); ++i) {
              rec.add_json("test_accuracy_seed" + std::to_string(i), "%", acc[i]);
            }
            if (kd) {
              rec.add_json("teacher_test_accuracy", "%", 100 * teacher_result.test_accuracy)
                  .add_json("teacher_train_seconds", "s", teacher_result.train_seconds)
                  .add_json("temperature", "", kCnnTemperature)
                  .add_json("alpha", "", kCnnAlpha);
            }
            add_training_cost(rec, mean_cost(runs));
            return rec;
          }};
}

// ---- char_gpt --------------------------------------------------------------------------------

nn::GPTConfig small_student(int64_t vocab, uint64_t seed) {
  nn::GPTConfig c = nn::char_gpt_config(vocab, nn::CharGptSize::kSmall, seed);
  c.n_layer = 1;
  c.n_embd = 48;
  return c;
}

Row gpt_student_row(bool kd) {
  const std::string variant = kd ? "small student + KD" : "small student";
  return {"training", "char_gpt", [kd, variant](const Env& env) {
            const auto corpus =
                std::make_shared<const nn::CharCorpus>(nn::CharCorpus::from_file(env.opt.text));
            const nn::Recipe recipe = nn::char_gpt_recipe();
            auto options = [&](const std::string& label, uint64_t seed) {
              nn::TrainOptions o = row_options(recipe.train, env, label);
              o.steps = env.opt.gpt_steps;
              o.warmup_steps = std::min(o.warmup_steps, o.steps / 10);
              o.seed = seed;
              return o;
            };
            std::shared_ptr<nn::GPT> teacher;
            nn::TrainResult teacher_result;
            if (kd) {
              // The teacher: the baseline kSmall GPT with the recipe, for the same steps.
              teacher = std::make_shared<nn::GPT>(
                  nn::char_gpt_config(corpus->vocab_size(), nn::CharGptSize::kSmall, env.opt.seed));
              nn::AdamW topt(teacher->named_parameters(), recipe.adamw);
              teacher_result = nn::train_char_gpt(*teacher, topt, *corpus,
                                                  options("char_gpt teacher", env.opt.seed));
            }
            std::vector<nn::TrainResult> runs;
            std::vector<double> loss;
            nn::GPTConfig cfg;
            for (uint64_t seed : seeds_of(env)) {
              cfg = small_student(corpus->vocab_size(), seed);
              const nn::TrainOptions o =
                  options("char_gpt " + variant + " seed " + std::to_string(seed), seed);
              if (kd) {
                nn::DistillerOptions d;
                d.temperature = kGptTemperature;
                d.alpha = kGptAlpha;
                nn::DistilledGpt model(cfg, teacher, d, o.hooks.loss_scale);
                nn::AdamW opt(model.named_parameters(), recipe.adamw);
                runs.push_back(nn::train_char_gpt(model, opt, *corpus, o));
              } else {
                nn::GPT model(cfg);
                nn::AdamW opt(model.named_parameters(), recipe.adamw);
                runs.push_back(nn::train_char_gpt(model, opt, *corpus, o));
              }
              loss.push_back(runs.back().val_loss);
            }
            const Spread s = spread_of(loss);
            std::string desc = "GPT 1 layer x " + std::to_string(cfg.n_head) + " heads, n_embd " +
                               std::to_string(cfg.n_embd) + " (kSmall: 2 x 96), the GPT recipe, " +
                               std::to_string(env.opt.gpt_steps) + " steps, mean of " +
                               std::to_string(loss.size()) + " seeds";
            if (kd) {
              desc += "; KD from the fp32 kSmall GPT (val loss " +
                      short_number(std::round(1000 * teacher_result.val_loss) / 1000) + "), T " +
                      short_number(kGptTemperature) + ", alpha " + short_number(kGptAlpha);
            }
            Record rec{"training", "char_gpt", variant, desc, {}};
            rec.add("val_loss", "val loss", "nats/char", s.mean, 3)
                .add("val_loss_std", "val std", "nats/char", s.std, 3)
                .add("val_loss_min", "val min", "nats/char", s.min, 3)
                .add("val_loss_max", "val max", "nats/char", s.max, 3)
                .add_json("seeds", "", static_cast<double>(loss.size()));
            for (std::size_t i = 0; i < loss.size(); ++i) {
              rec.add_json("val_loss_seed" + std::to_string(i), "nats/char", loss[i]);
            }
            if (kd) {
              rec.add_json("teacher_val_loss", "nats/char", teacher_result.val_loss)
                  .add_json("teacher_train_seconds", "s", teacher_result.train_seconds)
                  .add_json("temperature", "", kGptTemperature)
                  .add_json("alpha", "", kGptAlpha);
            }
            add_training_cost(rec, mean_cost(runs));
            return rec;
          }};
}

}  // namespace

std::vector<Row> distill_rows() {
  return {cnn_student_row(false), cnn_student_row(true), cnn_student_row(true, kCnnHintWeight),
          gpt_student_row(false), gpt_student_row(true)};
}

}  // namespace cost_report
