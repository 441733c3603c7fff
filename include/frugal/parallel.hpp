#pragma once
/// Distributed primitives: the Communicator interface and its ThreadComm (shared memory), MpiComm
/// (OpenMPI) and NcclComm (NCCL) implementations.
#include "frugal/parallel/communicator.hpp"
#include "frugal/parallel/compression.hpp"
#include "frugal/parallel/mpi_comm.hpp"
#include "frugal/parallel/nccl_comm.hpp"
#include "frugal/parallel/simulated_link.hpp"
#include "frugal/parallel/thread_comm.hpp"
