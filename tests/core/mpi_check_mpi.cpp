// The MPI check macro turns a failing MPI call into frugal::Error(kCommError) with file:line.
#include <gtest/gtest.h>
#include <mpi.h>

#include <string>

#include "core/mpi_check.hpp"

namespace frugal {
namespace {

TEST(MpiCheck, SucceedingCallsPass) {
  int size = 0;
  FRUGAL_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size));
  EXPECT_EQ(size, 2);  // ctest runs this binary under `mpirun -np 2`
}

TEST(MpiCheck, FailingCallThrowsCommError) {
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  int value = 1;
  try {
    // Rank 99 does not exist in a world of two: MPI returns MPI_ERR_RANK.
    FRUGAL_MPI_CHECK(MPI_Send(&value, 1, MPI_INT, 99, 0, MPI_COMM_WORLD));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kCommError);
    const std::string what = e.what();
    EXPECT_EQ(what.rfind("[mpi] ", 0), 0u) << what;
    EXPECT_NE(what.find("mpi_check_mpi.cpp:"), std::string::npos) << what;
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
}

}  // namespace
}  // namespace frugal
