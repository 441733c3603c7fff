// The distill rows of the training table: students distilled from the baselines (issue 9).
//   cnn_digits  "half-width student": the digits CNN with channels 8/16 (a quarter of the
//               convolution weights) trained alone with the CNN recipe, over env.opt.seeds seeds;
//               "half-width student + KD": the same students, seeds and loop, with the gradient
//               of Hinton's KD loss from the full CNN (trained once with the recipe, seed
//               env.opt.seed) through nn::DistilledStudent.
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
constexpr double kGptTemperature = 1.0;
constexpr double kGptAlpha = 0.5;

/// Mean, population standard deviation, min and max of per-seed values.
struct Spread {
  double mean = 0, std = 0, min = 0, max = 0;
};

Spread spread_of(const std::vector<double>& v) {
  Spread s;
  s.min = *std::min_element(v.begin(), v.end());
  s.max = *std::max_element(v.begin(), v.end());
  for (double x : v) s.mean += x;
  s.mean /= static_cast<double>(v.size());
  for (double x : v) s.std += (x - s.mean) * (x - s.mean);
  s.std = std::sqrt(s.std / static_cast<double>(v.size()));
  return s;
}

/// The training costs averaged over the seeds' runs (time, throughput; memory is the largest).
nn::TrainResult mean_cost(const std::vector<nn::TrainResult>& runs) {
  nn::TrainResult m = runs.front();
  const double k = static_cast<double>(runs.size());
  m.train_seconds = m.seconds_per_epoch = m.seconds_per_100_steps = m.samples_per_second = 0;
  for (const nn::TrainResult& r : runs) {
    m.train_seconds += r.train_seconds / k;
    if (r.epochs > 0) m.seconds_per_epoch += r.seconds_per_epoch / k;
    m.seconds_per_100_steps += r.seconds_per_100_steps / k;
    m.samples_per_second += r.samples_per_second / k;
    m.peak_host_bytes = std::max(m.peak_host_bytes, r.peak_host_bytes);
  }
  if (m.epochs == 0) m.seconds_per_epoch = nn::TrainResult::kNaN;
  return m;
}

std::vector<uint64_t> seeds_of(const Env& env) {
  std::vector<uint64_t> s;
  for (int i = 0; i < std::max(env.opt.seeds, 1); ++i) s.push_back(env.opt.seed + i);
  return s;
}

// ---- cnn_digits ------------------------------------------------------------------------------

nn::DigitsCnnConfig half_width(uint64_t seed) {
  nn::DigitsCnnConfig c;
  c.channels1 = 8;
  c.channels2 = 16;
  c.seed = seed;
  return c;
}

Row cnn_student_row(bool kd) {
  const std::string variant = kd ? "half-width student + KD" : "half-width student";
  return {"training", "cnn_digits", [kd, variant](const Env& env) {
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
              nn::AdamW opt(student->named_parameters(), recipe.adamw);
              nn::TrainOptions o = row_options(
                  recipe.train, env, "cnn_digits " + variant + " seed " + std::to_string(seed));
              o.epochs = env.opt.cnn_epochs;
              o.seed = seed;
              if (kd) {
                nn::DistillerOptions d;
                d.temperature = kCnnTemperature;
                d.alpha = kCnnAlpha;
                nn::DistilledStudent model(student, teacher, d, o.hooks.loss_scale);
                runs.push_back(nn::train_classifier(model, opt, data.train, data.test, o));
              } else {
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
  return {cnn_student_row(false), cnn_student_row(true), gpt_student_row(false),
          gpt_student_row(true)};
}

}  // namespace cost_report
