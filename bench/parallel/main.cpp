// Entry point of bench_parallel. Run plainly for the ThreadComm benchmarks; run under
// `mpirun -np 2` for the MPI ones as well (MPI is initialised here then, and only rank 0 prints).
#include <benchmark/benchmark.h>

#include "bench_parallel.hpp"
#include "frugal/core/build_config.hpp"
#include "frugal/parallel/mpi_comm.hpp"
#if FRUGAL_HAS_MPI
#include <mpi.h>
#endif

namespace {
/// Swallows the output of ranks other than 0.
class NullReporter : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>&) override {}
};
}  // namespace

int main(int argc, char** argv) {
  int rank = 0;
#if FRUGAL_HAS_MPI
  const bool mpi = frugal::parallel::launched_by_mpirun();
  if (mpi) {
    int provided = 0;
    // MULTIPLE: MpiComm's progress thread runs large all-reduces (mpi_comm.hpp).
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    frugal_bench::g_mpi = true;
  }
#endif
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  if (rank == 0) {
    benchmark::RunSpecifiedBenchmarks();
  } else {
    NullReporter quiet;
    benchmark::RunSpecifiedBenchmarks(&quiet);
  }
  benchmark::Shutdown();
#if FRUGAL_HAS_MPI
  if (mpi) {
    frugal_bench::release_mpi_comm();
    MPI_Finalize();
  }
#endif
  return 0;
}
