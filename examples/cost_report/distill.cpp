// The distill rows of the training table: students distilled from the baselines (issue 9).
//   cnn_digits  "half-width student": the digits CNN with channels 8/16 (a quarter of the
//               convolution weights) trained alone with the CNN recipe, over env.opt.seeds seeds;
//               "half-width student, shifts": the no-KD control of the KD row: the same students
//               and loop, twice the recipe's epochs, every training image moved by a random
//               (dy, dx) in [-1, 1]^2 (nn::RandomShift);
//               "half-width student, shifts + KD": the same, distilled ("function matching",
//               Beyer et al. 2022: the teacher labels the same shifted images the student sees)
//               from the mean logits of 3 CNNs trained with the baseline recipe (seeds S..S+2),
//               through nn::DistilledStudent.
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

// KD settings, the same for every seed. CNN: chosen on student seeds 3-9 with teacher seeds
// 10-12 (never the reported seeds; docs/distill.md has the sweep): an ensemble of 3 baseline CNNs,
// 1-pixel shifts seen by teacher and student alike, 2x the recipe's epochs, T = 2, alpha = 0.5.
// GPT: T = 1 and alpha = 0.5 (its validation loss is measured at T = 1; T = 2 also beats the
// student alone, by less).
constexpr double kCnnTemperature = 2.0;
constexpr double kCnnAlpha = 0.5;
constexpr int kCnnTeachers = 3;
constexpr int64_t kCnnMaxShift = 1;
constexpr int64_t kCnnEpochFactor = 2;
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

enum class CnnVariant { kAlone, kShifts, kShiftsKd };

Row cnn_student_row(CnnVariant v) {
  const std::string variant = v == CnnVariant::kAlone    ? "half-width student"
                              : v == CnnVariant::kShifts ? "half-width student, shifts"
                                                         : "half-width student, shifts + KD";
  return {"training", "cnn_digits", [v, variant](const Env& env) {
            const nn::Recipe recipe = nn::cnn_digits_recipe();
            const nn::TrainTestData data = digits_image_split();
            const bool kd = v == CnnVariant::kShiftsKd;
            const int64_t epochs =
                v == CnnVariant::kAlone ? env.opt.cnn_epochs : kCnnEpochFactor * env.opt.cnn_epochs;
            std::shared_ptr<nn::TeacherEnsemble> teacher;
            std::vector<double> teacher_acc;
            double teacher_seconds = 0;
            double ensemble_acc = 0;
            if (kd) {
              // The teachers: baseline CNNs, recipe as is, seeds S .. S + 2.
              std::vector<std::shared_ptr<nn::Module>> members;
              for (int i = 0; i < kCnnTeachers; ++i) {
                nn::DigitsCnnConfig tc;
                tc.seed = env.opt.seed + static_cast<uint64_t>(i);
                auto t = nn::make_digits_cnn(tc);
                nn::AdamW topt(t->named_parameters(), recipe.adamw);
                nn::TrainOptions to = row_options(recipe.train, env,
                                                  "cnn_digits teacher " + std::to_string(i));
                to.epochs = env.opt.cnn_epochs;
                to.seed = tc.seed;
                const nn::TrainResult tr =
                    nn::train_classifier(*t, topt, data.train, data.test, to);
                teacher_acc.push_back(100 * tr.test_accuracy);
                teacher_seconds += tr.train_seconds;
                members.push_back(t);
              }
              teacher = std::make_shared<nn::TeacherEnsemble>(members);
              nn::DataLoaderOptions lo;
              lo.batch_size = 256;
              ensemble_acc = 100 * nn::evaluate_accuracy(
                                       *teacher, nn::DataLoader(std::make_shared<nn::TensorDataset>(
                                                                    data.test.inputs,
                                                                    data.test.labels),
                                                                lo));
            }
            std::vector<nn::TrainResult> runs;
            std::vector<double> acc;
            for (uint64_t seed : seeds_of(env)) {
              auto student = nn::make_digits_cnn(half_width(seed));
              nn::TrainOptions o = row_options(
                  recipe.train, env, "cnn_digits " + variant + " seed " + std::to_string(seed));
              o.epochs = epochs;
              o.seed = seed;
              nn::AdamW opt(student->named_parameters(), recipe.adamw);
              if (v == CnnVariant::kAlone) {
                runs.push_back(nn::train_classifier(*student, opt, data.train, data.test, o));
              } else {
                // The same shifts (seed) for the control and the distilled student; the teacher
                // sits inside, so it labels the shifted images.
                std::shared_ptr<nn::Module> inner = student;
                if (kd) {
                  nn::DistillerOptions d;
                  d.temperature = kCnnTemperature;
                  d.alpha = kCnnAlpha;
                  inner = std::make_shared<nn::DistilledStudent>(student, teacher, d,
                                                                 o.hooks.loss_scale);
                }
                nn::RandomShift model(inner, kCnnMaxShift, seed + 500);
                runs.push_back(nn::train_classifier(model, opt, data.train, data.test, o));
              }
              acc.push_back(100 * runs.back().test_accuracy);
            }
            const Spread s = spread_of(acc);
            std::string desc =
                "Conv(8)-BN-ReLU-Conv(16)-BN-ReLU-MaxPool-Linear (half the CNN's "
                "width), the CNN recipe, " +
                std::to_string(epochs) + " epochs, mean of " + std::to_string(acc.size()) +
                " seeds";
            if (v != CnnVariant::kAlone) desc += "; random 1-pixel shifts of the training images";
            if (kd) {
              desc += "; KD from the mean logits of " + std::to_string(kCnnTeachers) +
                      " fp32 CNNs (test acc " +
                      short_number(std::round(10 * ensemble_acc) / 10) +
                      "%) on the same shifted images, T " + short_number(kCnnTemperature) +
                      ", alpha " + short_number(kCnnAlpha) + ", teacher forwards every step";
            }
            Record rec{"training", "cnn_digits", variant, desc, {}};
            rec.add("test_accuracy", "test acc", "%", s.mean, 2)
                .add("test_acc_std", "acc std", "%", s.std, 2)
                .add("test_acc_min", "acc min", "%", s.min, 2)
                .add("test_acc_max", "acc max", "%", s.max, 2)
                .add_json("seeds", "", static_cast<double>(acc.size()))
                .add_json("epochs", "", static_cast<double>(epochs));
            for (std::size_t i = 0; i < acc.size(); ++i) {
              rec.add_json("test_accuracy_seed" + std::to_string(i), "%", acc[i]);
            }
            if (kd) {
              rec.add_json("teacher_test_accuracy", "%", ensemble_acc)
                  .add_json("teacher_train_seconds", "s", teacher_seconds)
                  .add_json("temperature", "", kCnnTemperature)
                  .add_json("alpha", "", kCnnAlpha);
              for (std::size_t i = 0; i < teacher_acc.size(); ++i) {
                rec.add_json("teacher_test_accuracy_member" + std::to_string(i), "%",
                             teacher_acc[i]);
              }
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
  return {cnn_student_row(CnnVariant::kAlone), cnn_student_row(CnnVariant::kShifts),
          cnn_student_row(CnnVariant::kShiftsKd), gpt_student_row(false), gpt_student_row(true)};
}

}  // namespace cost_report
