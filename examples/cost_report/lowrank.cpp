// The lowrank rows of the training table (issue 8): each baseline trained with its recipe and
// loop, then reconstruct-then-fine-tune (nn::fine_tune_factorized_classifier / _char_gpt):
// factorize_model at a rank policy, measure, fine-tune every parameter with the recipe's AdamW.
// Every number is a mean over env.opt.seeds seeds; the same seeds' dense baseline, and the dense
// baseline fine-tuned for the same extra steps (the equal-compute control), are in the JSON.
// Rank rules compared (docs/lowrank.md): per-layer 90% energy (the rule), (a) a global
// 90% energy budget over all layers, (b) response (output) energy on calibration data, (a)+(b),
// (c) for the CNN the Tucker-2 core energy, channel SVD and spatial SVD, (d) for the CNN the
// data-aware Tucker-2 at 90% response energy per layer; plus the 2x rows.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "frugal/nn.hpp"
#include "rows.hpp"

namespace cost_report {
namespace {

namespace nn = frugal::nn;
namespace lr = frugal::lowrank;

/// How a variant factorizes.
struct Plan {
  std::string variant;    ///< "low-rank 90% + FT"
  lr::RankPolicy policy;  ///< the rank rule
  std::string what;       ///< the policy in words, for the description
  /// Layers left dense, convolution method, energy source...; without calibration (options_of
  /// adds it for kResponses).
  nn::FactorizeOptions options{};
};

/// Calibration rows for response energy: the first 512 training inputs (fixed, not tuned).
constexpr int64_t kCalibrationRows = 512;

nn::FactorizeOptions options_of(const Plan& plan, const frugal::Tensor& calibration) {
  nn::FactorizeOptions f = plan.options;
  if (f.energy_source == nn::EnergySource::kResponses) f.calibration = calibration;
  return f;
}

/// The parameter and buffer values of a trained model (none for a control), and its run. Held
/// as std::vector, outside frugal's allocator, so the cache does not count in the fine-tuning
/// run's peak host memory.
struct Snapshot {
  std::vector<std::vector<double>> values;
  nn::TrainResult result;
};

/// Trained baselines and their dense fine-tuned controls, by workload, seed and length, so the
/// variants of one workload train them once per report.
std::map<std::string, Snapshot>& snapshots() {
  static std::map<std::string, Snapshot> cache;
  return cache;
}

Snapshot snapshot(nn::Module& model, const nn::TrainResult& r) {
  Snapshot s{{}, r};
  for (const nn::NamedParameter& p : model.named_parameters()) {
    s.values.push_back(p.param->value.to_vector<double>());
  }
  for (const nn::NamedBuffer& b : model.named_buffers()) {
    s.values.push_back(b.tensor->to_vector<double>());
  }
  return s;
}

void restore_into(frugal::Tensor& t, const std::vector<double>& v) {
  t.copy_from(frugal::Tensor::from_vector(v, t.shape()).to(t.dtype()));
}

void restore(nn::Module& model, const Snapshot& s) {
  std::size_t i = 0;
  for (const nn::NamedParameter& p : model.named_parameters())
    restore_into(p.param->value, s.values[i++]);
  for (const nn::NamedBuffer& b : model.named_buffers()) restore_into(*b.tensor, s.values[i++]);
}

/// Means over seeds of what a variant row reports.
struct Means {
  int n = 0;
  double base = 0, before_ft = 0, after_ft = 0, dense_ft = 0, ratio = 0, factorize_s = 0, ft_s = 0;
  double eligible = 0;
  void add(double b, double before, double after, double dense, double rt, double fs, double ts,
           double el) {
    ++n;
    eligible += el;
    base += b;
    before_ft += before;
    after_ft += after;
    dense_ft += dense;
    ratio += rt;
    factorize_s += fs;
    ft_s += ts;
  }
  double mean(double sum) const { return sum / n; }
};

/// The ranks of the first seed's factorization as "31/30/8" (Tucker-2: "25x14").
std::string ranks_of(const std::vector<nn::LowRankLayerReport>& layers) {
  std::string s;
  for (const nn::LowRankLayerReport& l : layers) {
    if (!s.empty()) s += "/";
    if (!l.factorized) {
      s += "dense";
    } else {
      s += std::to_string(l.rank);
      if (l.rank_in > 0) s += "x" + std::to_string(l.rank_in);
    }
  }
  return s;
}

/// Energy kept per layer of the first seed's factorization ("0.90/0.88/dense").
std::string energies_of(const std::vector<nn::LowRankLayerReport>& layers) {
  std::string s;
  for (const nn::LowRankLayerReport& l : layers) {
    if (!s.empty()) s += "/";
    s += l.factorized ? short_number(std::round(l.energy_kept * 1000) / 1000) : "dense";
  }
  return s;
}

/// The fields every variant row shares.
void add_lowrank_fields(Record& rec, const Means& m, const nn::LowRankFineTuneResult& first,
                        bool accuracy) {
  if (accuracy) {
    rec.add("test_accuracy", "test acc", "%", 100 * m.mean(m.after_ft), 2)
        .add("lowrank_delta", "vs fp32", "points", 100 * (m.mean(m.after_ft) - m.mean(m.base)), 2)
        .add_json("base_test_accuracy", "%", 100 * m.mean(m.base))
        .add_json("before_ft_test_accuracy", "%", 100 * m.mean(m.before_ft))
        .add_json("dense_ft_test_accuracy", "%", 100 * m.mean(m.dense_ft))
        .add_json("delta_vs_dense_ft", "points", 100 * (m.mean(m.after_ft) - m.mean(m.dense_ft)));
  } else {
    rec.add("val_loss", "val loss", "nats/char", m.mean(m.after_ft), 3)
        .add("lowrank_delta", "vs fp32", "%", 100 * (m.mean(m.after_ft) / m.mean(m.base) - 1), 2)
        .add_json("base_val_loss", "nats/char", m.mean(m.base))
        .add_json("before_ft_val_loss", "nats/char", m.mean(m.before_ft))
        .add_json("dense_ft_val_loss", "nats/char", m.mean(m.dense_ft))
        .add_json("delta_vs_dense_ft", "%", 100 * (m.mean(m.after_ft) / m.mean(m.dense_ft) - 1));
  }
  rec.add("lowrank_ratio", "LR params", "x fewer", m.mean(m.ratio), 2)
      .add("eligible_ratio", "all eligible", "x fewer", m.mean(m.eligible), 2)
      .add(accuracy ? "before_ft_acc" : "before_ft_loss", "before FT", accuracy ? "%" : "nats/char",
           accuracy ? 100 * m.mean(m.before_ft) : m.mean(m.before_ft), accuracy ? 2 : 3)
      .add(accuracy ? "dense_ft_acc" : "dense_ft_loss", "dense+FT", accuracy ? "%" : "nats/char",
           accuracy ? 100 * m.mean(m.dense_ft) : m.mean(m.dense_ft), accuracy ? 2 : 3)
      .add_json("factorized_layers", "", static_cast<double>(first.summary.layers))
      .add_json("factorized_params_before", "", static_cast<double>(first.summary.params_before))
      .add_json("factorized_params_after", "", static_cast<double>(first.summary.params_after))
      .add_json("factorize_seconds", "s", m.mean(m.factorize_s))
      .add_json("fine_tune_seconds", "s", m.mean(m.ft_s))
      .add_json("seeds", "", static_cast<double>(m.n));
  for (const nn::LowRankLayerReport& l : first.layers) {
    std::string key = "rank_" + l.name;
    std::replace(key.begin(), key.end(), '.', '_');
    rec.add_json(key, "", static_cast<double>(l.factorized ? l.rank : 0));
    if (l.factorized && l.rank_in > 0)
      rec.add_json(key + "_in", "", static_cast<double>(l.rank_in));
    if (l.factorized) {
      std::string e = "energy_kept_" + l.name;
      std::replace(e.begin(), e.end(), '.', '_');
      rec.add_json(e, "", l.energy_kept);
    }
  }
  // Time, memory and size of the fine-tuning run (first seed), comparable to the baseline's.
  add_training_cost(rec, first.fine_tune);
}

/// The digits MLP or CNN: train (cached), factorize + fine-tune for `ft_epochs`, per seed.
Record classifier_variant(const Env& env, bool cnn, const Plan& plan) {
  const std::string workload = cnn ? "cnn_digits" : "mlp_digits";
  const nn::Recipe recipe = cnn ? nn::cnn_digits_recipe() : nn::mlp_digits_recipe();
  const nn::TrainTestData data = cnn ? digits_image_split() : digits_split();
  const int64_t epochs = cnn ? env.opt.cnn_epochs : env.opt.mlp_epochs;
  // Fine-tune for a quarter (MLP) or a third (CNN) of the recipe's epochs at the recipe's lr.
  const int64_t ft_epochs = std::max<int64_t>(1, cnn ? epochs / 3 : epochs / 4);
  auto make = [&](uint64_t seed) {
    if (!cnn) return nn::make_mlp({64, 256, 128, 10}, seed);
    nn::DigitsCnnConfig cfg;
    cfg.seed = seed;
    return nn::make_digits_cnn(cfg);
  };
  Means m;
  nn::LowRankFineTuneResult first;
  for (int k = 0; k < env.opt.seeds; ++k) {
    const uint64_t seed = env.opt.seed + static_cast<uint64_t>(k);
    nn::TrainOptions o = row_options(recipe.train, env, workload + " lowrank");
    o.seed = seed;
    o.epochs = epochs;
    const std::string key = workload + "/" + std::to_string(seed) + "/" + std::to_string(epochs);
    auto& cache = snapshots();
    auto model = make(seed);
    if (cache.count(key) == 0) {
      nn::AdamW opt(model->named_parameters(), recipe.adamw);
      cache[key] = snapshot(*model, nn::train_classifier(*model, opt, data.train, data.test, o));
      // The equal-compute control: the dense baseline fine-tuned like the factorized model.
      nn::AdamW ft_opt(model->named_parameters(), recipe.adamw);
      nn::TrainOptions fo = o;
      fo.epochs = ft_epochs;
      cache[key + "/dense_ft"] =
          Snapshot{{}, nn::train_classifier(*model, ft_opt, data.train, data.test, fo)};
      model = make(seed);
    }
    restore(*model, cache[key]);
    nn::TrainOptions fo = o;
    fo.epochs = ft_epochs;
    fo.label = "[cost_report] " + workload + " " + plan.variant;
    const int64_t rows = std::min(kCalibrationRows, data.train.inputs.dim(0));
    const frugal::Tensor calib = data.train.inputs.slice(0, 0, rows).contiguous();
    nn::LowRankFineTuneResult r = nn::fine_tune_factorized_classifier(
        *model, plan.policy, options_of(plan, calib), data.train, data.test, recipe.adamw, fo);
    m.add(cache[key].result.test_accuracy, r.accuracy_before_fine_tune, r.fine_tune.test_accuracy,
          cache[key + "/dense_ft"].result.test_accuracy, r.summary.param_ratio, r.factorize_seconds,
          r.fine_tune.train_seconds, r.summary.eligible_ratio);
    if (k == 0) first = std::move(r);
  }
  Record rec{"training",
             workload,
             plan.variant,
             (cnn ? std::string("digits CNN") : std::string("MLP 64-256-128-10")) +
                 " trained as fp32 (" + std::to_string(epochs) + " epochs), factorize_model " +
                 plan.what + " (ranks " + ranks_of(first.layers) + ", energy kept " +
                 energies_of(first.layers) + "), fine-tune " + std::to_string(ft_epochs) +
                 " epochs AdamW lr " + short_number(recipe.adamw.lr) + " cosine; mean of " +
                 std::to_string(m.n) + " seeds, vs fp32 = same seeds",
             {}};
  add_lowrank_fields(rec, m, first, true);
  return rec;
}

/// The kSmall character GPT: train (cached), factorize its MLPs + fine-tune, per seed.
Record gpt_variant(const Env& env, const Plan& plan) {
  const auto corpus =
      std::make_shared<const nn::CharCorpus>(nn::CharCorpus::from_file(env.opt.text));
  const nn::Recipe recipe = nn::char_gpt_recipe();
  // Fine-tune for a quarter of the baseline's steps at 0.3x its lr, no warm-up, cosine to lr/10.
  const int64_t ft_steps = std::max<int64_t>(1, env.opt.gpt_steps / 4);
  nn::AdamWOptions ft_adamw = recipe.adamw;
  ft_adamw.lr *= 0.3;
  Means m;
  nn::LowRankFineTuneResult first;
  for (int k = 0; k < env.opt.seeds; ++k) {
    const uint64_t seed = env.opt.seed + static_cast<uint64_t>(k);
    const nn::GPTConfig cfg =
        nn::char_gpt_config(corpus->vocab_size(), nn::CharGptSize::kSmall, seed);
    nn::TrainOptions o = row_options(recipe.train, env, "char_gpt lowrank");
    o.seed = seed;
    o.steps = env.opt.gpt_steps;
    o.warmup_steps = std::min(o.warmup_steps, o.steps / 10);
    nn::TrainOptions fo = o;
    fo.steps = ft_steps;
    fo.warmup_steps = 0;
    const std::string key = "char_gpt/" + std::to_string(seed) + "/" + std::to_string(o.steps);
    auto& cache = snapshots();
    if (cache.count(key) == 0) {
      nn::GPT model(cfg);
      nn::AdamW opt(model.named_parameters(), recipe.adamw);
      cache[key] = snapshot(model, nn::train_char_gpt(model, opt, *corpus, o));
      nn::AdamW ft_opt(model.named_parameters(), ft_adamw);
      cache[key + "/dense_ft"] = Snapshot{{}, nn::train_char_gpt(model, ft_opt, *corpus, fo)};
    }
    nn::GPT model(cfg);
    restore(model, cache[key]);
    fo.label = "[cost_report] char_gpt " + plan.variant;
    // Calibration: 16 windows of 64 training characters at a fixed key (not the seed's).
    const frugal::Tensor calib =
        corpus->sample(nn::CorpusSplit::kTrain, 16, cfg.block_size, 12345, 0).input;
    nn::LowRankFineTuneResult r = nn::fine_tune_factorized_char_gpt(
        model, plan.policy, options_of(plan, calib), *corpus, ft_adamw, fo);
    m.add(cache[key].result.val_loss, r.val_loss_before_fine_tune, r.fine_tune.val_loss,
          cache[key + "/dense_ft"].result.val_loss, r.summary.param_ratio, r.factorize_seconds,
          r.fine_tune.train_seconds, r.summary.eligible_ratio);
    if (k == 0) first = std::move(r);
  }
  Record rec{"training",
             "char_gpt",
             plan.variant,
             "kSmall GPT trained as fp32 (" + std::to_string(env.opt.gpt_steps) +
                 " steps), factorize_model on the MLPs' c_fc / c_proj " + plan.what + " (ranks " +
                 ranks_of(first.layers) + ", energy kept " + energies_of(first.layers) +
                 "), fine-tune " + std::to_string(ft_steps) + " steps AdamW lr " +
                 short_number(ft_adamw.lr) + " cosine; mean of " + std::to_string(m.n) +
                 " seeds, vs fp32 = same seeds",
             {}};
  add_lowrank_fields(rec, m, first, false);
  return rec;
}

const Plan kEnergy90{"low-rank 90% + FT", lr::RankPolicy::energy(0.9),
                     "at 90% energy per layer (Tucker-2 per channel mode)"};
// (a) one energy budget over all factorized layers, ranks allocated by energy per parameter.
const Plan kGlobal90{"global 90% + FT", lr::RankPolicy::global_energy(0.9),
                     "at 90% of the summed energy of all layers (greedy by energy per parameter; "
                     "Tucker-2 by core energy)"};
// (b) response energy: the spectrum of the layer outputs on 512 training inputs (GPT: 16
// windows); convolutions by the response channel decomposition (Zhang et al. 2015).
const Plan kResponse90{.variant = "response 90% + FT",
                       .policy = lr::RankPolicy::energy(0.9),
                       .what = "at 90% of the output second moment per layer on calibration data",
                       .options = {.conv = nn::ConvFactorization::kChannel,
                                   .energy_source = nn::EnergySource::kResponses}};
// (a) + (b): one budget over all layers of response energy, each layer normalized to 1.
const Plan kGlobalResponse90{
    .variant = "global response 90% + FT",
    .policy = lr::RankPolicy::global_energy(0.9),
    .what = "at 90% of the mean per-layer output energy (greedy by energy per parameter)",
    .options = {.conv = nn::ConvFactorization::kChannel,
                .energy_source = nn::EnergySource::kResponses,
                .global_normalized = true}};
// (d) data-aware Tucker-2 at 90% response energy per layer: both channel modes from the data
// (output mode: response PCA, Zhang et al. 2015; input mode: the inputs' channel PCA), the
// cheapest rank pair keeping 90% of the output variance; the classifier, which reads the
// flattened 32 x 4 x 4 map, as a 4 x 4 convolution over it (Long et al. 2015).
const Plan kCnnTucker2Response90{
    .variant = "tucker2 response 90% + FT",
    .policy = lr::RankPolicy::energy(0.9),
    .what =
        "at 90% of the output variance per layer, data-aware Tucker-2 (classifier read as a "
        "4x4 conv)",
    .options = {.conv = nn::ConvFactorization::kTucker2,
                .energy_source = nn::EnergySource::kResponses,
                .linear_as_conv = true}};
// (c) convolution alternatives at 90% weight energy per layer.
const Plan kCnnTucker2Core90{
    .variant = "tucker2-core 90% + FT",
    .policy = lr::RankPolicy::energy(0.9),
    .what = "at 90% energy per layer, Tucker-2 energy = kept by the truncated core",
    .options = {.tucker2_energy = nn::Tucker2Energy::kCore}};
const Plan kCnnChannel90{.variant = "channel-svd 90% + FT",
                         .policy = lr::RankPolicy::energy(0.9),
                         .what = "at 90% energy per layer, convs by channel SVD (kxk to r, 1x1)",
                         .options = {.conv = nn::ConvFactorization::kChannel}};
const Plan kCnnSpatial90{.variant = "spatial-svd 90% + FT",
                         .policy = lr::RankPolicy::energy(0.9),
                         .what = "at 90% energy per layer, convs by spatial SVD (kx1, 1xk)",
                         .options = {.conv = nn::ConvFactorization::kSpatial}};
// Where 90% energy does not halve the factorized parameters: rank for a 2x compression. The
// CNN keeps its 1-channel first conv (144 parameters) and its 10-class classifier dense: at 2x
// the classifier would keep rank 4 of 10 and the first conv rank 2 of 16 (docs/lowrank.md).
const Plan kCnn2x{"low-rank 2x + FT",
                  lr::RankPolicy::compression(2.0),
                  "at 2x compression of the second conv",
                  {.skip = {"0", "8"}}};
const Plan kGpt2x{"low-rank 2x + FT", lr::RankPolicy::compression(2.0), "at 2x compression"};

/// FRUGAL_LOWRANK_VARIANTS (comma-separated substrings of variant names) keeps only the
/// matching rows; unset: all. For development runs.
bool wanted(const std::string& variant) {
  const char* env = std::getenv("FRUGAL_LOWRANK_VARIANTS");
  if (env == nullptr || *env == 0) return true;
  std::string list = env;
  std::size_t at = 0;
  while (at <= list.size()) {
    const std::size_t end = std::min(list.find(',', at), list.size());
    const std::string tok = list.substr(at, end - at);
    if (!tok.empty() && variant.find(tok) != std::string::npos) return true;
    at = end + 1;
  }
  return false;
}

}  // namespace

std::vector<Row> lowrank_rows() {
  std::vector<Row> rows;
  auto mlp = [&](Plan p) {
    if (wanted("mlp " + p.variant))
      rows.push_back({"training", "mlp_digits",
                      [p](const Env& env) { return classifier_variant(env, false, p); }});
  };
  auto cnn = [&](Plan p) {
    if (wanted("cnn " + p.variant))
      rows.push_back({"training", "cnn_digits",
                      [p](const Env& env) { return classifier_variant(env, true, p); }});
  };
  auto gpt = [&](Plan p) {
    if (wanted("gpt " + p.variant))
      rows.push_back({"training", "char_gpt", [p](const Env& env) { return gpt_variant(env, p); }});
  };
  mlp(kEnergy90);
  mlp(kGlobal90);
  mlp(kResponse90);
  mlp(kGlobalResponse90);
  cnn(kEnergy90);
  cnn(kCnnTucker2Core90);
  cnn(kCnnChannel90);
  cnn(kCnnSpatial90);
  cnn(kGlobal90);
  cnn(kResponse90);
  cnn(kGlobalResponse90);
  cnn(kCnnTucker2Response90);
  cnn(kCnn2x);
  gpt(kEnergy90);
  gpt(kGlobal90);
  gpt(kResponse90);
  gpt(kGpt2x);
  return rows;
}

}  // namespace cost_report
