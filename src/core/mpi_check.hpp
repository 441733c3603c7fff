#pragma once
// MPI check macro: a failing MPI call throws CommError with file:line and MPI's error string.
// Only included by *_mpi.cpp files, which are built when MPI is found.
#include <mpi.h>

#include "frugal/core/error.hpp"

#define FRUGAL_MPI_CHECK(expr)                                                             \
  do {                                                                                     \
    const int frugal_rc_ = (expr);                                                         \
    if (frugal_rc_ != MPI_SUCCESS) {                                                       \
      char frugal_msg_[MPI_MAX_ERROR_STRING];                                              \
      int frugal_len_ = 0;                                                                 \
      MPI_Error_string(frugal_rc_, frugal_msg_, &frugal_len_);                             \
      throw ::frugal::Error(::frugal::ErrorCode::kCommError,                               \
                            ::frugal::detail::concat("[mpi] ", #expr, " failed at ", __FILE__, \
                                                     ":", __LINE__, ": ", frugal_msg_));   \
    }                                                                                      \
  } while (0)
