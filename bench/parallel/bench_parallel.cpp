// Allreduce cost: ThreadComm (2 workers in this process, shared memory, ring / direct) against
// MPI_Allreduce between 2 processes and MpiComm over the same MPI. Bytes processed = message bytes
// per all-reduce, so the rate reads as algorithm bandwidth (bytes / time).
//
//   build/bench/bench_parallel --benchmark_filter=Thread
//   OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun -np 2
//   build/bench/bench_parallel
//
// Under mpirun the ThreadComm benchmarks run on rank 0 only (rank 1 waits, sleeping, at the next
// MPI benchmark's start), so the two processes do not share the 2 cores with 4 threads. The MPI
// benchmarks use fixed iteration counts: both processes must issue the same number of calls.
#include "bench_parallel.hpp"

#include <benchmark/benchmark.h>

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
