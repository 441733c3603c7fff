// Allreduce cost: ThreadComm (2 workers in this process, shared memory, ring / direct) against
// MPI_Allreduce between 2 processes and MpiComm over the same MPI. Bytes processed = message bytes
// per all-reduce, so the rate reads as algorithm bandwidth (bytes / time).
//
//   build/bench/bench_parallel --benchmark_filter=Thread
//   OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun -np 2
//   build/bench/bench_parallel
//   (MpiComm's small-message overhead: --benchmark_filter=MpiCommOverhead under mpirun)
//
// Under mpirun the ThreadComm benchmarks run on rank 0 only (rank 1 waits, sleeping, at the next
// MPI benchmark's start), so the two processes do not share the 2 cores with 4 threads. The MPI
// benchmarks use fixed iteration counts: both processes must issue the same number of calls.
#include "bench_parallel.hpp"

#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "frugal/core/build_config.hpp"
#include "frugal/parallel/mpi_comm.hpp"
#include "frugal/parallel/thread_comm.hpp"
#if FRUGAL_HAS_MPI
#include <mpi.h>
#endif

namespace fp = frugal::parallel;

namespace frugal_bench {
int mpi_rank() {
#if FRUGAL_HAS_MPI
  if (g_mpi) {
    int r = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
  }
#endif
  return 0;
}
}  // namespace frugal_bench

namespace {
using frugal_bench::mpi_rank;

// ThreadComm all-reduce of f32 across 2 workers: this thread is rank 0, a helper thread rank 1.
void BM_ThreadCommAllreduce(benchmark::State& state) {
  if (mpi_rank() != 0) {
    state.SkipWithError("ThreadComm runs on MPI rank 0 only");
    for (auto _ : state) {
    }
    return;
  }
  const int64_t bytes = state.range(0);
  const int64_t n = bytes / 4;
  fp::ThreadCommOptions o;
  auto comms = fp::ThreadComm::create_group(2, o);
  auto a = frugal::Tensor::full({n}, 1.0), b = frugal::Tensor::full({n}, 1.0);
  const int64_t iters = state.max_iterations;
  std::thread peer([&] {
    for (int64_t i = 0; i < iters; ++i) comms[1]->allreduce(b.view(), fp::ReduceOp::kSum);
  });
  for (auto _ : state) comms[0]->allreduce(a.view(), fp::ReduceOp::kSum);
  peer.join();
  state.SetBytesProcessed(state.iterations() * bytes);
}
BENCHMARK(BM_ThreadCommAllreduce)
    ->Arg(4 << 10)
    ->Arg(64 << 20)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

#if FRUGAL_HAS_MPI
std::unique_ptr<fp::MpiComm> g_comm;

fp::MpiComm& mpi_comm() {
  if (!g_comm) g_comm = fp::MpiComm::world();
  return *g_comm;
}

/// A barrier that sleeps while waiting (so a rank waiting for the other does not take a core).
void sleepy_barrier() {
  MPI_Request req;
  MPI_Ibarrier(MPI_COMM_WORLD, &req);
  for (int flag = 0; !flag;) {
    MPI_Test(&req, &flag, MPI_STATUS_IGNORE);
    if (!flag) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

bool skip_without_mpi(benchmark::State& state) {
  if (frugal_bench::g_mpi) return false;
  state.SkipWithError("run under mpirun -np 2");
  for (auto _ : state) {
  }
  return true;
}

void BM_MpiRawAllreduce(benchmark::State& state) {
  if (skip_without_mpi(state)) return;
  const int64_t bytes = state.range(0);
  std::vector<float> x(static_cast<size_t>(bytes / 4), 1.0f);
  sleepy_barrier();
  for (auto _ : state)
    MPI_Allreduce(MPI_IN_PLACE, x.data(), static_cast<int>(x.size()), MPI_FLOAT, MPI_SUM,
                  MPI_COMM_WORLD);
  state.SetBytesProcessed(state.iterations() * bytes);
}

void BM_MpiCommAllreduce(benchmark::State& state) {
  if (skip_without_mpi(state)) return;
  const int64_t bytes = state.range(0);
  auto& comm = mpi_comm();
  auto x = frugal::Tensor::full({bytes / 4}, 1.0);
  sleepy_barrier();
  for (auto _ : state) comm.allreduce(x.view(), fp::ReduceOp::kSum);
  state.SetBytesProcessed(state.iterations() * bytes);
}

// MpiComm's overhead over the raw MPI_Allreduce at a small size, robust to the machine's drift:
// the two calls alternate (20000 pairs after 2000 warm-up pairs, the order inside a pair
// alternating too), each call is timed, and the per-pair difference MpiComm - raw is reported
// as percentiles (a drift of the machine moves both members of a pair alike). A third call per
// round, MPI_Iallreduce completed by an MPI_Test spin (what MpiComm's small path does, without
// MpiComm), attributes the difference: the nonblocking collective itself or MpiComm's code.
// Counters in microseconds, rank 0's timings: raw_p50, comm_p50, nb_p50 (medians), diff_p10 /
// diff_p50 / diff_p90 (percentiles of the per-pair difference MpiComm - raw), nb_diff_p50
// (median of MPI_Iallreduce+MPI_Test - raw).
void BM_MpiCommOverhead(benchmark::State& state) {
  if (skip_without_mpi(state)) return;
  const int64_t bytes = state.range(0);
  const int64_t n = bytes / 4;
  constexpr int kPairs = 20000, kWarmup = 2000;
  auto& comm = mpi_comm();
  // Zeros: sums stay 0, so no value grows to Inf over the calls.
  std::vector<float> raw(static_cast<size_t>(n), 0.0f), nb(static_cast<size_t>(n), 0.0f);
  auto x = frugal::Tensor::zeros({n}, frugal::DType::kF32);
  using Clock = std::chrono::steady_clock;
  auto time_us = [](auto&& fn) {
    const auto t0 = Clock::now();
    fn();
    return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
  };
  auto call_raw = [&] {
    MPI_Allreduce(MPI_IN_PLACE, raw.data(), static_cast<int>(n), MPI_FLOAT, MPI_SUM,
                  MPI_COMM_WORLD);
  };
  auto call_comm = [&] { comm.allreduce(x.view(), fp::ReduceOp::kSum); };
  auto call_nb = [&] {
    MPI_Request req;
    MPI_Iallreduce(MPI_IN_PLACE, nb.data(), static_cast<int>(n), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                   &req);
    for (int flag = 0; !flag;) MPI_Test(&req, &flag, MPI_STATUS_IGNORE);
  };
  std::vector<double> t_raw, t_comm, t_nb;
  t_raw.reserve(kPairs);
  t_comm.reserve(kPairs);
  t_nb.reserve(kPairs);
  sleepy_barrier();
  for (auto _ : state) {
    for (int i = -kWarmup; i < kPairs; ++i) {
      double a, b, c;
      // Rotate the order, so that no call always follows the same one.
      switch ((i + kWarmup) % 3) {
        case 0:
          a = time_us(call_raw), b = time_us(call_comm), c = time_us(call_nb);
          break;
        case 1:
          b = time_us(call_comm), c = time_us(call_nb), a = time_us(call_raw);
          break;
        default:
          c = time_us(call_nb), a = time_us(call_raw), b = time_us(call_comm);
          break;
      }
      if (i >= 0) {
        t_raw.push_back(a);
        t_comm.push_back(b);
        t_nb.push_back(c);
      }
    }
  }
  std::vector<double> diff(t_raw.size()), nb_diff(t_raw.size());
  for (size_t i = 0; i < t_raw.size(); ++i) {
    diff[i] = t_comm[i] - t_raw[i];
    nb_diff[i] = t_nb[i] - t_raw[i];
  }
  auto pct = [](std::vector<double> v, double p) {
    if (v.empty()) return 0.0;
    const size_t k = static_cast<size_t>(p * static_cast<double>(v.size() - 1));
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
    return v[k];
  };
  state.counters["raw_p50"] = pct(t_raw, 0.5);
  state.counters["raw_p90"] = pct(t_raw, 0.9);
  state.counters["comm_p50"] = pct(t_comm, 0.5);
  state.counters["comm_p90"] = pct(t_comm, 0.9);
  state.counters["nb_p50"] = pct(t_nb, 0.5);
  state.counters["diff_p10"] = pct(diff, 0.1);
  state.counters["diff_p50"] = pct(diff, 0.5);
  state.counters["diff_p90"] = pct(diff, 0.9);
  state.counters["nb_diff_p50"] = pct(nb_diff, 0.5);
}
BENCHMARK(BM_MpiCommOverhead)
    ->Arg(4 << 10)
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Fixed iteration counts: every process must run the same number of collectives.
BENCHMARK(BM_MpiRawAllreduce)
    ->Arg(4 << 10)
    ->Iterations(20000)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_MpiCommAllreduce)
    ->Arg(4 << 10)
    ->Iterations(20000)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_MpiRawAllreduce)
    ->Arg(64 << 20)
    ->Iterations(30)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_MpiCommAllreduce)
    ->Arg(64 << 20)
    ->Iterations(30)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
#endif

}  // namespace

namespace frugal_bench {
void release_mpi_comm() {
#if FRUGAL_HAS_MPI
  g_comm.reset();
#endif
}
}  // namespace frugal_bench
