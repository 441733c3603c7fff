#pragma once
// Shared state of bench_parallel's translation units.
namespace frugal_bench {
/// True when main() initialised MPI (the program runs under mpirun).
inline bool g_mpi = false;
/// Destroys the MpiComm the benchmarks share (before MPI_Finalize).
void release_mpi_comm();
/// This process's MPI rank (0 without MPI).
int mpi_rank();
}  // namespace frugal_bench
