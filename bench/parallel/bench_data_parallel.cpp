// DataParallel on the small character GPT (nn::char_gpt_config kSmall) with 2 ThreadComm
// workers: how much of the gradient all-reduce hides behind backward, and the bytes each
// compressor sends per step.
//
//   build/bench/bench_parallel --benchmark_filter=DataParallel
//
// BM_DataParallelGptLink (below) runs the same training over a simulated network link.
//
// Per step (counters in milliseconds):
//   comm_ms:    the bucket all-reduces of a step alone, without compute (finish_gradient_sync
//               with overlap off, grads already there): the communication time to hide;
//   exposed_ms: the time the worker that finished backward LAST spends in finish_gradient_sync
//               (per step the minimum over the two workers, then the mean over the steps): the
//               communication still running when all of backward is done, plus unpacking. The
//               other worker waits longer only because it finished backward earlier (skew
//               between the workers on the loaded machine), which is not communication;
//   hidden = 1 - exposed_ms / comm_ms: the fraction of the communication TIME hidden behind
//               backward (clamped to [0, 1]);
//   wait_ms:    rank 0's mean time in finish_gradient_sync, skew included (for reference);
//   hidden_bytes: fraction of the gradient bytes whose all-reduce had completed when the last
//               worker to finish backward called finish_gradient_sync (done behind backward);
//   step_ms:    the whole training step with DataParallel (backward start to backward start);
//   backward_ms: backward alone (mean of the two workers), for scale.
// Means over the steps after the first kWarmup.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bench_parallel.hpp"
#include "frugal/nn.hpp"
#include "frugal/parallel.hpp"
#include "frugal/parallel/simulated_link.hpp"

namespace {

namespace nn = frugal::nn;
namespace fp = frugal::parallel;
using Clock = std::chrono::steady_clock;

constexpr int64_t kSteps = 14;
constexpr int64_t kWarmup = 2;  // steps left out of the per-step means (first-touch allocations)

const nn::CharCorpus& corpus() {
  static const nn::CharCorpus c = nn::CharCorpus::from_file();
  return c;
}

nn::TrainOptions gpt_options(int rank) {
  nn::TrainOptions o = nn::char_gpt_recipe().train;
  o.steps = kSteps;
  o.batch_size /= 2;  // the recipe's batch split across 2 workers
  o.seed = 17 + rank;
  o.eval_batches = 1;
  o.progress = false;
  o.num_threads = 1;  // one core per worker
  return o;
}

/// What one run of 2 workers trains with.
struct GptSetup {
  int64_t bucket_bytes = 25 << 20;
  bool overlap = true;
  std::string compressor = "none";
  int64_t steps = kSteps;
  const fp::LinkModel* link = nullptr;  // DataParallel over a SimulatedLinkComm when set
};

/// Per-step seconds of one run (means over the steps after kWarmup).
struct GptRun {
  double step = 0;            // rank 0's step, from one backward start to the next
  double backward = 0;        // backward alone, mean over the two workers
  double wait = 0;            // rank 0's time in finish_gradient_sync (skew included)
  double exposed = 0;         // per step the smaller of the two workers' times there
  double exposed_median = 0;  // the same, median over the steps (robust to descheduled steps)
  double hidden_bytes = 0;
  int64_t sent_bytes = 0;
};

double median_after_warmup(std::vector<double> v) {
  if (v.size() <= static_cast<size_t>(kWarmup)) return 0;
  v.erase(v.begin(), v.begin() + kWarmup);
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double mean_after_warmup(const std::vector<double>& v) {
  double sum = 0;
  int64_t n = 0;
  for (size_t i = kWarmup; i < v.size(); ++i, ++n) sum += v[i];
  return n > 0 ? sum / static_cast<double>(n) : 0;
}

// 2 workers training the GPT with DataParallel. Per step, the worker that reached
// finish_gradient_sync last waited least: its wait is the communication not hidden behind
// backward (the other one also waits for the skew between the workers, which is not
// communication).
GptRun run_gpt(const GptSetup& setup) {
  GptRun out;
  fp::run_workers(2, [&](fp::Communicator& plain) {
    std::unique_ptr<fp::SimulatedLinkComm> linked;
    if (setup.link) linked = std::make_unique<fp::SimulatedLinkComm>(plain, *setup.link);
    fp::Communicator& comm = linked ? static_cast<fp::Communicator&>(*linked) : plain;
    nn::GPT model(nn::char_gpt_config(corpus().vocab_size(), nn::CharGptSize::kSmall, 0));
    nn::AdamW opt(model.named_parameters(), nn::char_gpt_recipe().adamw);
    nn::TrainOptions o = gpt_options(comm.rank());
    o.steps = setup.steps;
    nn::DataParallelOptions d;
    d.bucket_bytes = setup.bucket_bytes;
    d.overlap = setup.overlap;
    d.compressor = fp::make_compressor(setup.compressor);
    nn::DataParallel dp(model, comm, d);
    std::vector<double> waits, backwards, steps;  // seconds, per step
    Clock::time_point backward_start{}, previous_start{};
    // loss_scale is called just before backward: the hook marks its start (scale 1 is a no-op).
    o.hooks.loss_scale = [&] {
      backward_start = Clock::now();
      if (previous_start != Clock::time_point{})
        steps.push_back(std::chrono::duration<double>(backward_start - previous_start).count());
      previous_start = backward_start;
      return 1.0f;
    };
    o.hooks.before_step = [&](int64_t) {
      const auto t0 = Clock::now();
      backwards.push_back(std::chrono::duration<double>(t0 - backward_start).count());
      const bool ready = dp.finish_gradient_sync();
      waits.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
      return ready;
    };
    nn::train_char_gpt(model, opt, corpus(), o);
    frugal::Tensor w = frugal::Tensor::from_vector(waits, {static_cast<int64_t>(waits.size())});
    plain.allreduce(w.view(), fp::ReduceOp::kMin);
    // The fraction of the bytes whose all-reduce was complete when backward ended, on the rank
    // that reached the end of backward last (it does not wait for a slower peer).
    const double steps_done = static_cast<double>(dp.stats().steps);
    frugal::Tensor hidden = frugal::Tensor::from_vector(
        std::vector<double>{static_cast<double>(dp.stats().hidden_bytes) /
                            (steps_done * static_cast<double>(dp.stats().bytes_per_step))},
        {1});
    frugal::Tensor bwd =
        frugal::Tensor::from_vector(std::vector<double>{mean_after_warmup(backwards) / 2}, {1});
    plain.allreduce(hidden.view(), fp::ReduceOp::kMax);
    plain.allreduce(bwd.view(), fp::ReduceOp::kSum);
    if (comm.rank() == 0) {
      out.step = mean_after_warmup(steps);
      out.backward = bwd.to_vector<double>()[0];
      out.wait = mean_after_warmup(waits);
      const std::vector<double> exposed = w.to_vector<double>();
      out.exposed = mean_after_warmup(exposed);
      out.exposed_median = median_after_warmup(exposed);
      out.hidden_bytes = hidden.to_vector<double>()[0];
      out.sent_bytes = dp.stats().sent_bytes_per_step;
    }
  });
  return out;
}

// Seconds per step of the bucket all-reduces alone (the same buckets DataParallel builds, on the
// same link), all started at once and waited for: the communication time to hide.
double run_comm(int64_t bucket_bytes, const fp::LinkModel* link = nullptr) {
  double seconds = 0;
  fp::run_workers(2, [&](fp::Communicator& plain) {
    std::unique_ptr<fp::SimulatedLinkComm> linked;
    if (link) linked = std::make_unique<fp::SimulatedLinkComm>(plain, *link);
    fp::Communicator& comm = linked ? static_cast<fp::Communicator&>(*linked) : plain;
    nn::GPT model(nn::char_gpt_config(corpus().vocab_size(), nn::CharGptSize::kSmall, 0));
    nn::DataParallelOptions d;
    d.bucket_bytes = bucket_bytes;
    d.overlap = false;
    nn::DataParallel dp(model, comm, d);
    for (auto& np : model.named_parameters()) np.param->grad.fill(1.0);
    dp.finish_gradient_sync();  // warm-up
    const auto t0 = Clock::now();
    for (int64_t s = 0; s < kSteps; ++s) dp.finish_gradient_sync();
    const double t = std::chrono::duration<double>(Clock::now() - t0).count();
    if (comm.rank() == 0) seconds = t / kSteps;
  });
  return seconds;
}

bool skip_on_other_ranks(benchmark::State& state) {
  if (frugal_bench::mpi_rank() == 0) return false;
  state.SkipWithError("runs on MPI rank 0 only");
  for (auto _ : state) {
  }
  return true;
}

void BM_DataParallelGptOverlap(benchmark::State& state) {
  if (skip_on_other_ranks(state)) return;
  const int64_t bucket = state.range(0);
  const bool overlap = state.range(1) != 0;
  double comm = 0;
  GptRun r;
  for (auto _ : state) {
    comm = run_comm(bucket);
    r = run_gpt({.bucket_bytes = bucket, .overlap = overlap});
  }
  state.counters["hidden_bytes"] = r.hidden_bytes;
  state.counters["comm_ms"] = 1e3 * comm;
  state.counters["step_ms"] = 1e3 * r.step;
  state.counters["backward_ms"] = 1e3 * r.backward;
  state.counters["wait_ms"] = 1e3 * r.wait;
  state.counters["exposed_ms"] = 1e3 * r.exposed;
  state.counters["hidden"] = comm > 0 ? std::clamp(1 - r.exposed / comm, 0.0, 1.0) : 0;
  state.counters["bytes"] = static_cast<double>(r.sent_bytes);
}
// Buckets of 25 MB (one bucket: nothing to overlap), 64 KiB (13 buckets) and 16 KiB, with
// and without starting them from the grad-ready hook.
BENCHMARK(BM_DataParallelGptOverlap)
    ->Args({16 << 10, 1})
    ->Args({64 << 10, 1})
    ->Args({64 << 10, 0})
    ->Args({25 << 20, 1})
    ->Iterations(1)
    ->Repetitions(3)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// The same training on a simulated network link (parallel::SimulatedLinkComm over ThreadComm,
// latency 50 us): the data moves through ThreadComm, each all-reduce completes no earlier than
// the link allows, and waiting for the link sleeps (uses no core, as a NIC or NCCL's copy
// engines), so the overlap of communication with backward shows on a machine whose 2 cores both
// compute. The bandwidth is chosen so that the step's all-reduces take state.range(0) percent
// of this machine's backward (measured once per process, 2 workers without DataParallel's
// communication); the bandwidth used is reported (Mbit_s). Overlap on and off run in the same
// iteration (read the same-run difference):
//   comm_ms:        the step's bucket all-reduces alone on the link (no compute);
//   comm_per_bwd:   comm_ms / backward_ms as measured in this run;
//   exposed_ms:     overlap on, the last worker's wait in finish_gradient_sync;
//   hidden:         1 - exposed_ms / comm_ms;
//   exposed_off_ms: overlap off (all buckets started after backward), the same wait;
//   hidden_med:     1 - (median over the steps of the exposed wait) / comm_ms, less sensitive
//                   to steps in which a worker was descheduled (a loaded machine);
//   step_ms / step_off_ms: the training step with and without overlap.
constexpr double kLinkLatency = 50e-6;
constexpr int64_t kLinkSteps = 26;  // more steps than the ThreadComm rows: the load varies

// Backward seconds and gradient bytes of the GPT with 2 workers on this machine.
std::pair<double, int64_t> calibration() {
  static const std::pair<double, int64_t> c = [] {
    const GptRun r = run_gpt({.overlap = false});
    return std::pair<double, int64_t>{r.backward, r.sent_bytes};
  }();
  return c;
}

void BM_DataParallelGptLink(benchmark::State& state) {
  if (skip_on_other_ranks(state)) return;
  const double share = static_cast<double>(state.range(0)) / 100;
  const int64_t bucket = state.range(1);
  const auto [backward, bytes] = calibration();
  // 2 workers: a ring all-reduce puts 2 (N - 1) / N = 1 times the bytes on each link.
  const double transfer = std::max(share * backward - kLinkLatency, 1e-4);
  const fp::LinkModel link{static_cast<double>(bytes) / transfer, kLinkLatency};
  double comm = 0;
  GptRun on, off;
  for (auto _ : state) {
    comm = run_comm(bucket, &link);
    on = run_gpt({.bucket_bytes = bucket, .overlap = true, .steps = kLinkSteps, .link = &link});
    off = run_gpt({.bucket_bytes = bucket, .overlap = false, .steps = kLinkSteps, .link = &link});
  }
  state.counters["Mbit_s"] = link.bandwidth_bytes_per_s * 8 / 1e6;
  state.counters["comm_ms"] = 1e3 * comm;
  state.counters["backward_ms"] = 1e3 * on.backward;
  state.counters["comm_per_bwd"] = on.backward > 0 ? comm / on.backward : 0;
  state.counters["exposed_ms"] = 1e3 * on.exposed;
  state.counters["hidden"] = comm > 0 ? std::clamp(1 - on.exposed / comm, 0.0, 1.0) : 0;
  state.counters["exposed_off_ms"] = 1e3 * off.exposed;
  state.counters["hidden_med"] = comm > 0 ? std::clamp(1 - on.exposed_median / comm, 0.0, 1.0) : 0;
  state.counters["step_ms"] = 1e3 * on.step;
  state.counters["step_off_ms"] = 1e3 * off.step;
}
// Communication of 25%, 50% and 100% of backward with 64 KiB buckets (13 buckets), and 50%
// with one 25 MB bucket (it can start only when backward is over: the control).
BENCHMARK(BM_DataParallelGptLink)
    ->Args({25, 64 << 10})
    ->Args({50, 64 << 10})
    ->Args({100, 64 << 10})
    ->Args({50, 25 << 20})
    ->Iterations(1)
    ->Repetitions(3)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_DataParallelGptBytes(benchmark::State& state) {
  if (skip_on_other_ranks(state)) return;
  static const char* names[] = {"none", "fp16", "bf16", "int8", "topk0.01", "powersgd4"};
  const std::string name = names[state.range(0)];
  int64_t bytes = 0, raw = 0;
  for (auto _ : state) {
    raw = run_gpt({.steps = 2}).sent_bytes;
    bytes = run_gpt({.compressor = name, .steps = 2}).sent_bytes;
  }
  state.SetLabel(name);
  state.counters["bytes_per_step"] = static_cast<double>(bytes);
  state.counters["reduction"] = bytes > 0 ? static_cast<double>(raw) / bytes : 0;
}
BENCHMARK(BM_DataParallelGptBytes)->DenseRange(0, 5)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace
