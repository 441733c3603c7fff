#pragma once
// What every part of the cost report shares: the options, the environment a row runs in, the
// Row type, and the helpers of training rows. Each part adds rows from its own file:
//   baselines.cpp   the fp32 training baselines (mlp_digits, cnn_digits, char_gpt);
//   storage.cpp     the weights-as-stored table;
//   <technique>.cpp the optimized variants of the baselines, one file per technique (amp, quant,
//                   prune, lowrank, distill, parallel), each a function returning its rows. A
//                   variant row uses section "training", the baseline's workload name and its
//                   own variant name, and trains with the same recipe and loop as the baseline.
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"
#include "frugal/nn/models.hpp"
#include "frugal/nn/train.hpp"
#include "report.hpp"

namespace cost_report {

/// The command line.
struct Options {
  bool training = true;
  bool storage = true;
  std::string json;
  uint64_t seed = 0;
  int threads = 0;
  bool quiet = false;
  // training
  int64_t mlp_epochs = frugal::nn::mlp_digits_recipe().train.epochs;
  int64_t cnn_epochs = frugal::nn::cnn_digits_recipe().train.epochs;
  int64_t gpt_steps = 400;  // the example runs 1500; a few hundred keep `make demo` short
  std::string text;
  /// Techniques whose rows run (--techniques); all of them by default.
  std::vector<std::string> techniques = {"amp", "parallel", "quant", "prune", "lowrank", "distill"};
  /// Rows that average over seeds use seed .. seed + seeds - 1 (--seeds).
  int seeds = 3;
  // storage
  int64_t params = int64_t{64} << 20;
  int runs = 3;
  double link_gbps = 25;
};

/// What every row gets: the options, the context, and (storage rows) the weights.
struct Env {
  const Options& opt;
  frugal::ExecContext ctx;
  const frugal::Tensor* weights = nullptr;
};

/// A row of the report: its section, a name, and a measurement that produces one Record.
struct Row {
  std::string section;
  std::string name;
  std::function<Record(const Env&)> run;
};

/// Progress goes to stderr (the table and JSON stay clean): a new line, then its continuations.
void progress(const std::string& msg);
void progress_more(const std::string& msg);
/// Seconds from t0 to now.
double seconds_since(std::chrono::steady_clock::time_point t0);
/// "25" or "12.5": a number as the unit labels show it.
std::string short_number(double g);
/// The measurements every training row shares (time, throughput, memory, size).
void add_training_cost(Record& rec, const frugal::nn::TrainResult& r);
/// Train options of a row: the recipe's, with the report's seed, threads and progress.
frugal::nn::TrainOptions row_options(frugal::nn::TrainOptions o, const Env& env,
                                     const std::string& label);
/// The digits as a fixed 80/20 split (split seed 0, as the examples).
frugal::nn::TrainTestData digits_split();
/// digits_split() with the inputs as 1x8x8 images (the CNN's input).
frugal::nn::TrainTestData digits_image_split();

/// The seeds of rows that average over seeds: opt.seed .. opt.seed + opt.seeds - 1.
std::vector<uint64_t> seeds_of(const Env& env);
/// Mean, population standard deviation, min and max of per-seed values (at least one).
struct Spread {
  double mean = 0, std = 0, min = 0, max = 0;
};
Spread spread_of(const std::vector<double>& v);
/// The training costs of several runs of one row: times and throughputs averaged, peak memory the
/// largest; the rest (sizes, step counts) from the first run.
frugal::nn::TrainResult mean_cost(const std::vector<frugal::nn::TrainResult>& runs);

// ---- the rows of each part -------------------------------------------------------------------

std::vector<Row> baseline_rows();
std::vector<Row> storage_rows();
/// A technique's rows: its name on the command line (--techniques), the title of its table and
/// its rows. Each technique prints as its own table (section key = name), so its columns are its
/// own fields; the fp32 baselines it is compared with are the first table.
struct Technique {
  std::string name;
  std::string title;
  std::function<std::vector<Row>()> rows;
};
/// Every technique, in report order (main.cpp).
std::vector<Technique> techniques();

std::vector<Row> amp_rows();       ///< amp.cpp: mixed-precision training (issue 4)
std::vector<Row> parallel_rows();  ///< parallel.cpp: data-parallel training (issue 5)
std::vector<Row> quant_rows();     ///< quant.cpp: PTQ and QAT (issue 6)
std::vector<Row> prune_rows();     ///< prune.cpp: pruned models (issue 7)
std::vector<Row> lowrank_rows();   ///< lowrank.cpp: factorized models (issue 8)
std::vector<Row> distill_rows();   ///< distill.cpp: distilled students (issue 9)

}  // namespace cost_report
