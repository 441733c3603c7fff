#include "rows.hpp"

#include <cstdio>
#include <iostream>

#include "frugal/nn/data.hpp"

namespace cost_report {

/// Progress goes to stderr (the table and JSON stay clean): a new line, then its continuations.
void progress(const std::string& msg) { std::cerr << "[cost_report] " << msg << std::flush; }
void progress_more(const std::string& msg) { std::cerr << msg << std::flush; }

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// "25" or "12.5": a number as the unit labels show it.
std::string short_number(double g) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", g);
  return buf;
}

/// The measurements every training row shares (time, throughput, memory, size).
void add_training_cost(Record& rec, const frugal::nn::TrainResult& r) {
  if (r.epochs > 0) rec.add("sec_per_epoch", "time/epoch", "s", r.seconds_per_epoch, 3);
  rec.add("sec_per_100_steps", "time/100 steps", "s", r.seconds_per_100_steps, 2)
      .add("samples_per_sec", "throughput", "samples/s", r.samples_per_second, 0)
      .add("peak_host_mib", "peak host", "MiB", static_cast<double>(r.peak_host_bytes) / (1 << 20),
           2)
      .add("param_kib", "params", "KiB", static_cast<double>(r.parameter_bytes) / 1024, 1)
      .add_json("peak_host_bytes", "B", static_cast<double>(r.peak_host_bytes))
      .add_json("parameter_bytes", "B", static_cast<double>(r.parameter_bytes))
      .add_json("num_parameters", "", static_cast<double>(r.num_parameters))
      .add_json("steps", "", static_cast<double>(r.steps))
      .add_json("samples", "", static_cast<double>(r.samples))
      .add_json("train_seconds", "s", r.train_seconds);
}

/// Train options of a row: the recipe's, with the report's seed, threads and progress.
frugal::nn::TrainOptions row_options(frugal::nn::TrainOptions o, const Env& env, const std::string& label) {
  o.seed = env.opt.seed;
  o.num_threads = env.opt.threads;
  o.progress = !env.opt.quiet;
  o.label = "[cost_report] " + label;
  return o;
}

/// The digits as a fixed 80/20 split (split seed 0, as the examples).
frugal::nn::TrainTestData digits_split() { return frugal::nn::split_data(frugal::nn::load_digits(), 0.2, 0); }

frugal::nn::TrainTestData digits_image_split() {
  frugal::nn::TrainTestData data = digits_split();
  data.train.inputs = data.train.inputs.reshape({-1, 1, 8, 8});
  data.test.inputs = data.test.inputs.reshape({-1, 1, 8, 8});
  return data;
}

}  // namespace cost_report
