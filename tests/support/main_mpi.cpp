// The main of MPI test binaries (run as `mpirun -np 2 <binary>`): initialises MPI around the tests,
// and lets only rank 0 print results so the output is readable.
#include <gtest/gtest.h>
#include <mpi.h>

int main(int argc, char** argv) {
  // MpiComm runs large all-reduces on a progress thread when MPI allows several threads.
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    auto& listeners = testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS();
  // Every rank must pass: a failure on any rank fails the run.
  int any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return any_failed;
}
