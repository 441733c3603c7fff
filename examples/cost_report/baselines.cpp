// The fp32 training baselines: the models of examples/ trained with their recipes
// (frugal/nn/models.hpp) by the same library loops the examples call (frugal/nn/train.hpp).
#include <algorithm>
#include <memory>
#include <string>

#include "frugal/nn.hpp"
#include "rows.hpp"

namespace cost_report {
namespace {

namespace nn = frugal::nn;

Row mlp_row() {
  return {"training", "mlp_digits", [](const Env& env) {
            const nn::Recipe recipe = nn::mlp_digits_recipe();
            const nn::TrainTestData data = digits_split();
            auto model = nn::make_mlp({64, 256, 128, 10}, env.opt.seed);
            nn::AdamW opt(model->named_parameters(), recipe.adamw);
            nn::TrainOptions o = row_options(recipe.train, env, "mlp_digits");
            o.epochs = env.opt.mlp_epochs;
            const nn::TrainResult r = nn::train_classifier(*model, opt, data.train, data.test, o);
            Record rec{"training",
                       "mlp_digits",
                       "fp32",
                       "MLP 64-256-128-10 (ReLU) on digits, AdamW lr " +
                           short_number(recipe.adamw.lr) + " cosine, batch " +
                           std::to_string(o.batch_size) + ", " + std::to_string(o.epochs) +
                           " epochs",
                       {}};
            rec.add("test_accuracy", "test acc", "%", 100 * r.test_accuracy, 2)
                .add_json("train_accuracy", "%", 100 * r.train_accuracy)
                .add_json("epochs", "", static_cast<double>(r.epochs));
            add_training_cost(rec, r);
            return rec;
          }};
}

Row cnn_row() {
  return {"training", "cnn_digits", [](const Env& env) {
            const nn::Recipe recipe = nn::cnn_digits_recipe();
            nn::TrainTestData data = digits_split();
            data.train.inputs = data.train.inputs.reshape({-1, 1, 8, 8});
            data.test.inputs = data.test.inputs.reshape({-1, 1, 8, 8});
            nn::DigitsCnnConfig cfg;
            cfg.seed = env.opt.seed;
            auto model = nn::make_digits_cnn(cfg);
            nn::AdamW opt(model->named_parameters(), recipe.adamw);
            nn::TrainOptions o = row_options(recipe.train, env, "cnn_digits");
            o.epochs = env.opt.cnn_epochs;
            const nn::TrainResult r = nn::train_classifier(*model, opt, data.train, data.test, o);
            Record rec{"training",
                       "cnn_digits",
                       "fp32",
                       "Conv(16)-BN-ReLU-Conv(32)-BN-ReLU-MaxPool-Linear on 1x8x8 digits, AdamW "
                       "lr " +
                           short_number(recipe.adamw.lr) + " cosine, batch " +
                           std::to_string(o.batch_size) + ", " + std::to_string(o.epochs) +
                           " epochs",
                       {}};
            rec.add("test_accuracy", "test acc", "%", 100 * r.test_accuracy, 2)
                .add_json("train_accuracy", "%", 100 * r.train_accuracy)
                .add_json("epochs", "", static_cast<double>(r.epochs));
            add_training_cost(rec, r);
            return rec;
          }};
}

Row gpt_row() {
  return {"training", "char_gpt", [](const Env& env) {
            // Loaded here, not before the other rows, so their peak memory does not include it.
            const auto corpus =
                std::make_shared<const nn::CharCorpus>(nn::CharCorpus::from_file(env.opt.text));
            const nn::Recipe recipe = nn::char_gpt_recipe();
            const nn::GPTConfig cfg =
                nn::char_gpt_config(corpus->vocab_size(), nn::CharGptSize::kSmall, env.opt.seed);
            nn::GPT model(cfg);
            nn::AdamW opt(model.named_parameters(), recipe.adamw);
            nn::TrainOptions o = row_options(recipe.train, env, "char_gpt");
            o.steps = env.opt.gpt_steps;
            o.warmup_steps = std::min(o.warmup_steps, o.steps / 10);
            const nn::TrainResult r = nn::train_char_gpt(model, opt, *corpus, o);
            Record rec{
                "training",
                "char_gpt",
                "fp32",
                "GPT " + std::to_string(cfg.n_layer) + " layers x " + std::to_string(cfg.n_head) +
                    " heads, n_embd " + std::to_string(cfg.n_embd) + ", block " +
                    std::to_string(cfg.block_size) + ", AdamW lr " + short_number(recipe.adamw.lr) +
                    " warm-up+cosine, clip " + short_number(o.clip_grad_norm) + ", batch " +
                    std::to_string(o.batch_size) + ", " + std::to_string(o.steps) +
                    " steps; text of " + std::to_string(corpus->text().size()) +
                    " characters, vocabulary " + std::to_string(corpus->vocab_size()),
                {}};
            rec.add("val_loss", "val loss", "nats/char", r.val_loss, 3)
                .add("unigram_entropy", "unigram H", "nats/char", corpus->unigram_entropy(), 3)
                .add_json("train_loss", "nats/char", r.final_train_loss)
                .add_json("tokens_per_sec", "tokens/s", r.tokens_per_second);
            add_training_cost(rec, r);
            return rec;
          }};
}

}  // namespace

std::vector<Row> baseline_rows() { return {mlp_row(), cnn_row(), gpt_row()}; }

}  // namespace cost_report
