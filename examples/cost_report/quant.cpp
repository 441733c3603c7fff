// The quant rows of the training table: post-training quantization (int8 W8A8, weight-only int4
// groups of 32) and quantization-aware fine-tuning (int4 groups of 32) of the fp32 baselines,
// each averaged over env.opt.seeds seeds. The fp32 model of a (workload, seed) is trained once,
// with the baseline's recipe and loop, and shared by the variants.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "frugal/nn.hpp"
#include "rows.hpp"

namespace cost_report {
namespace {

namespace nn = frugal::nn;
using frugal::Tensor;

constexpr int64_t kCalibrationBatches = 8;  // of 64 training examples, in data order
constexpr int64_t kQatEpochs = 3;
constexpr double kQatLrFactor = 0.1;  // fine-tuning lr = recipe lr / 10
constexpr int64_t kInferBatch = 256;

bool is_cnn(const std::string& w) { return w == "cnn_digits"; }

std::shared_ptr<nn::Sequential> make_model(const std::string& w, uint64_t seed) {
  if (is_cnn(w)) {
    nn::DigitsCnnConfig cfg;
    cfg.seed = seed;
    return nn::make_digits_cnn(cfg);
  }
  return nn::make_mlp({64, 256, 128, 10}, seed);
}

nn::Recipe recipe_of(const std::string& w) {
  return is_cnn(w) ? nn::cnn_digits_recipe() : nn::mlp_digits_recipe();
}

const nn::TrainTestData& data_of(const std::string& w) {
  static const nn::TrainTestData flat = digits_split();
  static const nn::TrainTestData images = digits_image_split();
  return is_cnn(w) ? images : flat;
}

/// The parameters and buffers of a trained fp32 model.
struct Trained {
  std::vector<Tensor> params;
  std::vector<Tensor> buffers;
  double test_accuracy = 0;
};

void copy_state(const Trained& t, nn::Module& m) {
  auto ps = m.named_parameters();
  auto bs = m.named_buffers();
  for (std::size_t i = 0; i < ps.size(); ++i) ps[i].param->value.copy_from(t.params[i]);
  for (std::size_t i = 0; i < bs.size(); ++i) bs[i].tensor->copy_from(t.buffers[i]);
}

/// Trains (once per workload and seed) the fp32 baseline as baselines.cpp does.
const Trained& fp32_model(const std::string& w, uint64_t seed, const Env& env) {
  static std::map<std::pair<std::string, uint64_t>, Trained> cache;
  auto it = cache.find({w, seed});
  if (it != cache.end()) return it->second;
  const nn::Recipe recipe = recipe_of(w);
  auto model = make_model(w, seed);
  nn::AdamW opt(model->named_parameters(), recipe.adamw);
  nn::TrainOptions o = row_options(recipe.train, env, w + " fp32 seed " + std::to_string(seed));
  o.seed = seed;
  o.epochs = is_cnn(w) ? env.opt.cnn_epochs : env.opt.mlp_epochs;
  const nn::TrainResult r = nn::train_classifier(*model, opt, data_of(w).train, data_of(w).test, o);
  Trained t;
  for (auto& p : model->named_parameters()) t.params.push_back(p.param->value.clone());
  for (auto& b : model->named_buffers()) t.buffers.push_back(b.tensor->clone());
  t.test_accuracy = r.test_accuracy;
  return cache.emplace(std::make_pair(w, seed), std::move(t)).first->second;
}

double accuracy(nn::Module& m, const nn::LabeledData& d) {
  nn::DataLoaderOptions o;
  o.batch_size = kInferBatch;
  return nn::evaluate_accuracy(
      m, nn::DataLoader(std::make_shared<nn::TensorDataset>(d.inputs, d.labels), o));
}

/// Milliseconds per forward of a batch of kInferBatch test inputs (best of 5).
double infer_ms(nn::Module& m, const nn::LabeledData& d, const Env& env) {
  const Tensor x = d.inputs.slice(0, 0, std::min<int64_t>(kInferBatch, d.inputs.dim(0)));
  m.eval();
  double best = 1e30;
  env.ctx.run([&] {
    (void)m.forward(x);
    for (int i = 0; i < 5; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      (void)m.forward(x);
      best = std::min(best, seconds_since(t0));
    }
  });
  return best * 1e3;
}

std::vector<Tensor> calibration_batches(const nn::LabeledData& d) {
  std::vector<Tensor> out;
  for (int64_t i = 0; i < kCalibrationBatches; ++i) {
    const int64_t a = i * 64, b = std::min<int64_t>(a + 64, d.inputs.dim(0));
    if (a >= b) break;
    out.push_back(d.inputs.slice(0, a, b).contiguous());
  }
  return out;
}

enum class Variant { kInt8Ptq, kInt4Ptq, kInt4Qat };

struct SeedResult {
  double fp32_acc = 0, acc = 0, float_bytes = 0, quant_bytes = 0, fp32_ms = 0, quant_ms = 0;
  nn::TrainResult qat;
};

SeedResult run_seed(const std::string& w, Variant v, uint64_t seed, const Env& env) {
  const Trained& t = fp32_model(w, seed, env);
  const nn::TrainTestData& data = data_of(w);
  auto model = make_model(w, seed);
  copy_state(t, *model);
  model->set_context(env.ctx);
  SeedResult s;
  s.fp32_acc = t.test_accuracy;
  s.fp32_ms = infer_ms(*model, data.test, env);
  nn::PtqReport rep;
  if (v == Variant::kInt4Qat) {
    const nn::Recipe recipe = recipe_of(w);
    nn::QatOptions q;
    q.weight = nn::int4_group_weight_spec(32);
    q.quantize_input = false;
    const int64_t steps_per_epoch =
        (data.train.inputs.dim(0) + recipe.train.batch_size - 1) / recipe.train.batch_size;
    q.observe_steps = steps_per_epoch;  // weight ranges follow the weights for one epoch
    nn::prepare_qat(*model, q);
    nn::AdamWOptions ao = recipe.adamw;
    ao.lr *= kQatLrFactor;
    nn::AdamW opt(model->named_parameters(), ao);
    nn::TrainOptions o =
        row_options(recipe.train, env, w + " int4 QAT seed " + std::to_string(seed));
    o.seed = seed;
    o.epochs = kQatEpochs;
    s.qat = nn::train_classifier(*model, opt, data.train, data.test, o);
    rep = nn::convert_qat(*model, true, nullptr, env.ctx);
  } else {
    nn::PtqOptions p;
    if (v == Variant::kInt4Ptq) {
      p.weight = nn::int4_group_weight_spec(32);
      p.quantize_activations = false;
    }
    rep = nn::ptq(*model, calibration_batches(data.train), p, env.ctx);
  }
  // The fp32 state (parameters + BatchNorm statistics) of the same architecture.
  auto ref = make_model(w, seed);
  s.float_bytes = static_cast<double>(nn::model_state_bytes(*ref));
  s.quant_bytes = static_cast<double>(rep.quant_bytes);
  s.acc = accuracy(*model, data.test);
  s.quant_ms = infer_ms(*model, data.test, env);
  return s;
}

Row quant_row(const std::string& w, Variant v) {
  const std::string name = v == Variant::kInt8Ptq   ? "int8 PTQ"
                           : v == Variant::kInt4Ptq ? "int4 g32 PTQ"
                                                    : "int4 QAT";
  return {"training", w, [w, v, name](const Env& env) {
            const int seeds = std::max(1, env.opt.seeds);
            std::vector<SeedResult> rs;
            for (int i = 0; i < seeds; ++i) {
              rs.push_back(run_seed(w, v, env.opt.seed + static_cast<uint64_t>(i), env));
            }
            auto mean = [&](auto f) {
              double s = 0;
              for (const SeedResult& r : rs) s += f(r);
              return s / static_cast<double>(rs.size());
            };
            auto worst = [&](auto f) {
              double s = -1e30;
              for (const SeedResult& r : rs) s = std::max(s, f(r));
              return s;
            };
            const double fp32 = mean([](const SeedResult& r) { return r.fp32_acc; });
            const double acc = mean([](const SeedResult& r) { return r.acc; });
            const double fb = rs[0].float_bytes, qb = rs[0].quant_bytes;
            std::string desc;
            switch (v) {
              case Variant::kInt8Ptq:
                desc =
                    "fp32 model, int8 per-channel weights x int8 per-tensor activations "
                    "(min-max calibration on " +
                    std::to_string(kCalibrationBatches) +
                    " batches of 64), BatchNorm folded; qgemm / im2col+qgemm";
                break;
              case Variant::kInt4Ptq:
                desc =
                    "fp32 model, weight-only int4 groups of 32 (fitted to each layer's "
                    "reduction), f32 activations, BatchNorm folded; woq_matmul / dequant conv";
                break;
              case Variant::kInt4Qat:
                desc = "fp32 model fine-tuned " + std::to_string(kQatEpochs) +
                       " epochs with int4 g32 fake-quantized weights (STE, lr/10), converted";
                break;
            }
            desc += "; mean of " + std::to_string(seeds) + " seeds";
            Record rec{"training", w, name, desc, {}};
            rec.add("test_accuracy", "test acc", "%", 100 * acc, 2)
                .add("fp32_test_accuracy", "fp32 acc", "%", 100 * fp32, 2)
                .add("accuracy_drop", "acc drop", "points", 100 * (fp32 - acc), 2)
                .add_json("worst_accuracy_drop", "points",
                          100 * worst([](const SeedResult& r) { return r.fp32_acc - r.acc; }))
                .add("model_kib", "model", "KiB", qb / 1024, 2)
                .add("compression", "compression", "x", fb / qb, 2)
                .add_json("fp32_model_bytes", "B", fb)
                .add_json("model_bytes", "B", qb)
                .add("infer_ms_per_batch", "infer/batch", "ms",
                     mean([](const SeedResult& r) { return r.quant_ms; }), 3)
                .add_json("fp32_infer_ms_per_batch", "ms",
                          mean([](const SeedResult& r) { return r.fp32_ms; }))
                .add_json("seeds", "", static_cast<double>(seeds));
            if (v == Variant::kInt4Qat) add_training_cost(rec, rs[0].qat);
            return rec;
          }};
}

}  // namespace

std::vector<Row> quant_rows() {
  std::vector<Row> rows;
  for (const std::string w : {"mlp_digits", "cnn_digits"}) {
    for (const Variant v : {Variant::kInt8Ptq, Variant::kInt4Ptq, Variant::kInt4Qat}) {
      rows.push_back(quant_row(w, v));
    }
  }
  return rows;
}

}  // namespace cost_report
