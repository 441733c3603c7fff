// DataParallel on the small character GPT (nn::char_gpt_config kSmall) with 2 ThreadComm
// workers: how much of the gradient all-reduce hides behind backward, and the bytes each
// compressor sends per step.
//
//   build/bench/bench_parallel --benchmark_filter=DataParallel
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
//   step_ms:    the whole training step with DataParallel, for scale.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <vector>

#include "bench_parallel.hpp"
#include "frugal/nn.hpp"
#include "frugal/parallel.hpp"

namespace {

namespace nn = frugal::nn;
namespace fp = frugal::parallel;
using Clock = std::chrono::steady_clock;

constexpr int64_t kSteps = 12;

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

// Seconds per step of 2 workers training the GPT with DataParallel; *wait: rank 0's seconds per
// step in finish_gradient_sync; *exposed: per step the smaller of the two workers' times there
// (the last to finish backward), averaged over the steps; *hidden: hidden_bytes fraction.
double run_gpt(int64_t bucket_bytes, bool overlap, int64_t* bytes = nullptr,
               const std::string& compressor = "none", int64_t steps = kSteps,
               double* wait = nullptr, double* hidden = nullptr, double* exposed = nullptr) {
  double seconds = 0;
  fp::run_workers(2, [&](fp::Communicator& comm) {
    nn::GPT model(nn::char_gpt_config(corpus().vocab_size(), nn::CharGptSize::kSmall, 0));
    nn::AdamW opt(model.named_parameters(), nn::char_gpt_recipe().adamw);
    nn::TrainOptions o = gpt_options(comm.rank());
    o.steps = steps;
    nn::DataParallelOptions d;
    d.bucket_bytes = bucket_bytes;
    d.overlap = overlap;
    d.compressor = fp::make_compressor(compressor);
    nn::DataParallel dp(model, comm, d);
    std::vector<double> waits;  // seconds in finish_gradient_sync, per step
    o.hooks.before_step = [&](int64_t) {
      const auto t0 = Clock::now();
      const bool ready = dp.finish_gradient_sync();
      waits.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
      return ready;
    };
    const nn::TrainResult r = nn::train_char_gpt(model, opt, corpus(), o);
    // Per step, the worker that reached finish_gradient_sync last waited least: its wait is the
    // communication not hidden behind backward (same number of steps on both workers).
    frugal::Tensor w = frugal::Tensor::from_vector(waits, {static_cast<int64_t>(waits.size())});
    comm.allreduce(w.view(), fp::ReduceOp::kMin);
    // The fraction of the bytes whose all-reduce was complete when backward ended, on the rank
    // that reached the end of backward last (it does not wait for a slower peer).
    const double steps_done = static_cast<double>(dp.stats().steps);
    frugal::Tensor f = frugal::Tensor::from_vector(
        std::vector<double>{static_cast<double>(dp.stats().hidden_bytes) /
                            (steps_done * static_cast<double>(dp.stats().bytes_per_step))},
        {1});
    comm.allreduce(f.view(), fp::ReduceOp::kMax);
    if (comm.rank() == 0) {
      seconds = r.train_seconds / static_cast<double>(r.steps);
      if (bytes) *bytes = dp.stats().sent_bytes_per_step;
      if (wait) *wait = dp.stats().sync_seconds / static_cast<double>(r.steps);
      if (hidden) *hidden = f.to_vector<double>()[0];
      if (exposed) {
        double sum = 0;
        for (double x : w.to_vector<double>()) sum += x;
        *exposed = waits.empty() ? 0 : sum / static_cast<double>(waits.size());
      }
    }
  });
  return seconds;
}

// Seconds per step of the bucket all-reduces alone (the same buckets DataParallel builds).
double run_comm(int64_t bucket_bytes) {
  double seconds = 0;
  fp::run_workers(2, [&](fp::Communicator& comm) {
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
  double comm = 0, step = 0, wait = 0, hidden_bytes = 0, exposed = 0;
  int64_t bytes = 0;
  for (auto _ : state) {
    comm = run_comm(bucket);
    step = run_gpt(bucket, overlap, &bytes, "none", kSteps, &wait, &hidden_bytes, &exposed);
  }
  state.counters["hidden_bytes"] = hidden_bytes;
  state.counters["comm_ms"] = 1e3 * comm;
  state.counters["step_ms"] = 1e3 * step;
  state.counters["wait_ms"] = 1e3 * wait;
  state.counters["exposed_ms"] = 1e3 * exposed;
  state.counters["hidden"] = comm > 0 ? std::clamp(1 - exposed / comm, 0.0, 1.0) : 0;
  state.counters["bytes"] = static_cast<double>(bytes);
}
// Buckets of 25 MB (one bucket: nothing to overlap), 64 KiB (about 15 buckets) and 16 KiB, with
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

void BM_DataParallelGptBytes(benchmark::State& state) {
  if (skip_on_other_ranks(state)) return;
  static const char* names[] = {"none", "fp16", "bf16", "int8", "topk0.01", "powersgd4"};
  const std::string name = names[state.range(0)];
  int64_t bytes = 0, raw = 0;
  for (auto _ : state) {
    run_gpt(25 << 20, true, &raw, "none", 2);
    run_gpt(25 << 20, true, &bytes, name, 2);
  }
  state.SetLabel(name);
  state.counters["bytes_per_step"] = static_cast<double>(bytes);
  state.counters["reduction"] = bytes > 0 ? static_cast<double>(raw) / bytes : 0;
}
BENCHMARK(BM_DataParallelGptBytes)->DenseRange(0, 5)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace
