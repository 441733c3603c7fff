// The prune rows of the training table: pruned and fine-tuned models (issue 7). Each row first
// trains the fp32 baseline of its workload with the baseline's recipe and loop (baselines.cpp),
// then prunes and fine-tunes it with the same loop (nn::train_classifier; the masks through
// PruneFinetune's StepHooks), and measures the pruned model's test accuracy, size and inference
// time against the dense model of the same seed in the same run. Averaged over --seeds seeds.
//   mlp_digits  "50% neurons + FT": half the neurons of both hidden layers physically removed
//               (L2 norm, prune_structured: 64-256-128-10 -> 64-128-64-10), then fine-tuned.
//   cnn_digits  "90% gradual": gradual magnitude pruning (Zhu & Gupta 2017) of every weight to
//               90% (global threshold), then inference through SparseConv2d / SparseLinear.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "frugal/nn.hpp"
#include "rows.hpp"

namespace cost_report {
namespace {

namespace nn = frugal::nn;
using frugal::Tensor;

// Median wall time (ms) of model.forward(x) over `reps` runs after two warm-up runs.
double forward_ms(nn::Module& model, const Tensor& x, const frugal::ExecContext& ctx,
                  int reps = 30) {
  std::vector<double> t;
  ctx.run([&] {
    for (int i = 0; i < reps + 2; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      Tensor y = model.forward(x);
      if (i >= 2) t.push_back(1e3 * seconds_since(t0));
    }
  });
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Sums of the per-seed numbers of a row.
struct Sums {
  double dense_acc = 0, acc = 0, dense_ms = 0, ms = 0, dense_epoch_s = 0, epoch_s = 0;
  int n = 0;
  void add(double da, double a, double dms, double ms_, double des, double es) {
    dense_acc += da;
    acc += a;
    dense_ms += dms;
    ms += ms_;
    dense_epoch_s += des;
    epoch_s += es;
    ++n;
  }
  double mean(double s) const { return s / n; }
};

Row mlp_neurons_row() {
  return {"training", "mlp_digits", [](const Env& env) {
            const nn::Recipe recipe = nn::mlp_digits_recipe();
            const nn::TrainTestData data = digits_split();
            const int64_t ft_epochs = std::max<int64_t>(1, env.opt.mlp_epochs / 4);
            Sums s;
            nn::TrainResult last;
            int64_t dense_params = 0, params = 0;
            for (int k = 0; k < env.opt.seeds; ++k) {
              const uint64_t seed = env.opt.seed + k;
              auto model = nn::make_mlp({64, 256, 128, 10}, seed);
              nn::AdamW opt(model->named_parameters(), recipe.adamw);
              nn::TrainOptions o = row_options(recipe.train, env, "mlp_digits fp32");
              o.seed = seed;
              o.epochs = env.opt.mlp_epochs;
              const nn::TrainResult dense =
                  nn::train_classifier(*model, opt, data.train, data.test, o);
              // Remove half the neurons of both hidden layers (Linear 0 and Linear 2).
              auto pruned = nn::prune_structured(*model, 0, 0.5).model;
              pruned = nn::prune_structured(*pruned, 2, 0.5).model;
              // Fine-tune with a fresh optimizer at a tenth of the recipe's learning rate.
              nn::AdamWOptions ft_adamw = recipe.adamw;
              ft_adamw.lr = recipe.adamw.lr / 10;
              nn::AdamW ft_opt(pruned->named_parameters(), ft_adamw);
              nn::TrainOptions fo = row_options(recipe.train, env, "mlp_digits 50% neurons FT");
              fo.seed = seed;
              fo.epochs = ft_epochs;
              last = nn::train_classifier(*pruned, ft_opt, data.train, data.test, fo);
              model->eval();
              pruned->eval();
              const double dms = forward_ms(*model, data.test.inputs, env.ctx);
              const double pms = forward_ms(*pruned, data.test.inputs, env.ctx);
              s.add(dense.test_accuracy, last.test_accuracy, dms, pms, dense.seconds_per_epoch,
                    last.seconds_per_epoch);
              dense_params = model->num_parameters();
              params = pruned->num_parameters();
            }
            Record rec{"training",
                       "mlp_digits",
                       "50% neurons + FT",
                       "the fp32 baseline with 50% of the neurons of both hidden layers removed "
                       "(L2 norm; 64-128-64-10), fine-tuned " +
                           std::to_string(ft_epochs) + " epochs at lr " +
                           short_number(recipe.adamw.lr / 10) + "; mean of " + std::to_string(s.n) +
                           " seeds; inference = forward of the " +
                           std::to_string(data.test.inputs.dim(0)) + " test digits",
                       {}};
            rec.add("test_accuracy", "test acc", "%", 100 * s.mean(s.acc), 2)
                .add("dense_test_accuracy", "dense acc", "%", 100 * s.mean(s.dense_acc), 2)
                .add("sparsity", "sparsity", "%",
                     100 * (1 - static_cast<double>(params) / dense_params), 1)
                .add("params_kept", "weights kept", "", static_cast<double>(params), 0)
                .add("infer_ms", "infer", "ms", s.mean(s.ms), 3)
                .add("infer_speedup", "infer vs dense", "x", s.mean(s.dense_ms) / s.mean(s.ms), 2)
                .add("train_step_speedup", "train step vs dense", "x",
                     s.mean(s.dense_epoch_s) / s.mean(s.epoch_s), 2)
                .add_json("dense_infer_ms", "ms", s.mean(s.dense_ms))
                .add_json("dense_params", "", static_cast<double>(dense_params))
                .add_json("ft_epochs", "", static_cast<double>(ft_epochs));
            add_training_cost(rec, last);
            return rec;
          }};
}

Row cnn_gradual_row() {
  return {"training", "cnn_digits", [](const Env& env) {
            const nn::Recipe recipe = nn::cnn_digits_recipe();
            const nn::TrainTestData data = digits_image_split();
            const int64_t ft_epochs = env.opt.cnn_epochs;
            const int64_t batch = recipe.train.batch_size;
            const int64_t steps_per_epoch = (data.train.inputs.dim(0) + batch - 1) / batch;
            // Zhu & Gupta: from 0 to 90% in 50 small events over the first 70% of the
            // fine-tuning steps, then the rest at the final sparsity (10 larger events or a
            // shorter tail lost about a point more on seeds 0-2 in development runs).
            // (Short runs, e.g. --cnn-epochs 2, get fewer events so the schedule still ends at
            // 90%.)
            const int64_t window = std::max<int64_t>(1, ft_epochs * steps_per_epoch * 7 / 10);
            const int64_t n_events = std::min<int64_t>(50, window);
            const int64_t dt = window / n_events;
            Sums s;
            nn::TrainResult last;
            int64_t params = 0, kept = 0;
            double csr_kib = 0, dense_kib = 0;
            for (int k = 0; k < env.opt.seeds; ++k) {
              const uint64_t seed = env.opt.seed + k;
              nn::DigitsCnnConfig cfg;
              cfg.seed = seed;
              auto model = nn::make_digits_cnn(cfg);
              nn::AdamW opt(model->named_parameters(), recipe.adamw);
              nn::TrainOptions o = row_options(recipe.train, env, "cnn_digits fp32");
              o.seed = seed;
              o.epochs = env.opt.cnn_epochs;
              const nn::TrainResult dense =
                  nn::train_classifier(*model, opt, data.train, data.test, o);
              model->eval();
              const double dms = forward_ms(*model, data.test.inputs, env.ctx);
              model->train();
              nn::Pruner pruner(*model);
              nn::AdamWOptions ft_adamw = recipe.adamw;
              ft_adamw.lr = recipe.adamw.lr / 3;
              nn::AdamW ft_opt(model->named_parameters(), ft_adamw);
              nn::PruneFinetune driver(*model, ft_opt, pruner,
                                       nn::PruneSchedule::gradual(0.0, 0.9, 0, n_events, dt),
                                       nn::PruneScope::kGlobal);
              nn::TrainOptions fo = row_options(recipe.train, env, "cnn_digits 90% gradual");
              fo.seed = seed;
              fo.epochs = ft_epochs;
              fo.hooks = driver.hooks(env.ctx);
              last = nn::train_classifier(*model, ft_opt, data.train, data.test, fo);
              auto sparse = nn::sparse_inference_model(*model, &pruner);
              const double sms = forward_ms(*sparse, data.test.inputs, env.ctx);
              s.add(dense.test_accuracy, last.test_accuracy, dms, sms, dense.seconds_per_epoch,
                    last.seconds_per_epoch);
              params = 0;
              for (const auto& n : pruner.names()) params += pruner.mask(n).numel();
              const nn::PruneReport rep = nn::prune_report(*model);
              kept = rep.nonzero;
              csr_kib = static_cast<double>(rep.csr_bytes) / 1024;
              dense_kib = static_cast<double>(rep.dense_bytes) / 1024;
            }
            Record rec{"training",
                       "cnn_digits",
                       "90% gradual",
                       "the fp32 baseline pruned to 90% of its conv and Linear weights (global "
                       "magnitude, Zhu & Gupta cubic schedule, " +
                           std::to_string(n_events) + " events every " + std::to_string(dt) +
                           " steps) during " + std::to_string(ft_epochs) +
                           " fine-tuning epochs at lr " + short_number(recipe.adamw.lr / 3) +
                           "; inference through SparseConv2d / SparseLinear (CSR) against the "
                           "dense model on the " +
                           std::to_string(data.test.inputs.dim(0)) + " test digits; mean of " +
                           std::to_string(s.n) + " seeds",
                       {}};
            rec.add("test_accuracy", "test acc", "%", 100 * s.mean(s.acc), 2)
                .add("dense_test_accuracy", "dense acc", "%", 100 * s.mean(s.dense_acc), 2)
                .add("sparsity", "sparsity", "%",
                     100 * (1 - static_cast<double>(kept) / static_cast<double>(params)), 1)
                .add("params_kept", "weights kept", "", static_cast<double>(kept), 0)
                .add("infer_ms", "infer", "ms", s.mean(s.ms), 3)
                .add("infer_speedup", "infer vs dense", "x", s.mean(s.dense_ms) / s.mean(s.ms), 2)
                .add_json("dense_infer_ms", "ms", s.mean(s.dense_ms))
                .add("csr_weight_kib", "CSR weights", "KiB", csr_kib, 1)
                .add_json("dense_weight_kib", "KiB", dense_kib)
                .add_json("pruned_weights_total", "", static_cast<double>(params))
                .add_json("ft_epochs", "", static_cast<double>(ft_epochs));
            add_training_cost(rec, last);
            return rec;
          }};
}

}  // namespace

std::vector<Row> prune_rows() { return {mlp_neurons_row(), cnn_gradual_row()}; }

}  // namespace cost_report
