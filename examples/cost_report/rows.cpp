#include "rows.hpp"

#include <algorithm>
#include <cmath>
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

std::vector<uint64_t> seeds_of(const Env& env) {
  std::vector<uint64_t> s;
  for (int i = 0; i < std::max(env.opt.seeds, 1); ++i) s.push_back(env.opt.seed + i);
  return s;
}

Spread spread_of(const std::vector<double>& v) {
  Spread s;
  if (v.empty()) return s;
  s.min = *std::min_element(v.begin(), v.end());
  s.max = *std::max_element(v.begin(), v.end());
  for (double x : v) s.mean += x;
  s.mean /= static_cast<double>(v.size());
  for (double x : v) s.std += (x - s.mean) * (x - s.mean);
  s.std = std::sqrt(s.std / static_cast<double>(v.size()));
  return s;
}

frugal::nn::TrainResult mean_cost(const std::vector<frugal::nn::TrainResult>& runs) {
  frugal::nn::TrainResult m = runs.front();
  const double k = static_cast<double>(runs.size());
  m.train_seconds = m.seconds_per_epoch = m.seconds_per_100_steps = m.samples_per_second = 0;
  m.tokens_per_second = 0;
  for (const frugal::nn::TrainResult& r : runs) {
    m.train_seconds += r.train_seconds / k;
    if (r.epochs > 0) m.seconds_per_epoch += r.seconds_per_epoch / k;
    m.seconds_per_100_steps += r.seconds_per_100_steps / k;
    m.samples_per_second += r.samples_per_second / k;
    m.tokens_per_second += r.tokens_per_second / k;
    m.peak_host_bytes = std::max(m.peak_host_bytes, r.peak_host_bytes);
  }
  if (m.epochs == 0) m.seconds_per_epoch = frugal::nn::TrainResult::kNaN;
  return m;
}

}  // namespace cost_report
