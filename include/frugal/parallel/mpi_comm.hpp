#pragma once
/// MpiComm: the Communicator over OpenMPI, for CPU clusters and several processes on one machine.
/// Chosen by Communicator::from_environment() when the program runs under mpirun. Every operation
/// is a nonblocking MPI call (MPI_Iallreduce, MPI_Ireduce_scatter_block, MPI_Iallgather,
/// MPI_Ibcast, MPI_Isend / MPI_Irecv) completed by MPI_Test polling against a deadline, so a dead
/// peer raises Timeout instead of hanging. MPI makes progress only inside MPI calls: an async
/// operation advances while wait() or is_completed() polls it.
///
/// All-reduces of at least 1 MiB instead run the blocking MPI_Allreduce (Open MPI's tuned
/// algorithms, faster than its nonblocking libnbc ones for large messages) on a progress thread
/// of the communicator, over a second duplicate of the communicator, in call order; the caller
/// waits on a condition variable to the deadline (sleeping, so the MPI call has the core). This
/// needs MPI_THREAD_MULTIPLE (requested by world()); with less, the nonblocking path is used.
/// Such an async all-reduce progresses by itself (overlaps compute), and a timed-out one stays
/// with the progress thread (wait() can be called again; MPI cannot cancel a collective).
///
/// f16 / bf16 allreduce uses a user-defined MPI_Op that adds in float. kAvg is a sum followed by a
/// division on each rank (identical on every rank: the sum is).
/// Built only when MPI is found (FRUGAL_HAS_MPI); otherwise every entry throws NotCompiled.
#include <memory>

#include "frugal/parallel/communicator.hpp"

namespace frugal::parallel {

/// One process's end of an MPI communicator (a duplicate of MPI_COMM_WORLD, so frugal's traffic
/// never matches the caller's own MPI messages).
class MpiComm final : public Communicator {
 public:
  /// The world communicator. Initialises MPI (MPI_THREAD_MULTIPLE) if the caller has not, and then
  /// finalises it at exit; a caller that initialised MPI finalises it itself.
  static std::unique_ptr<MpiComm> world(const CommOptions& options = {});
  ~MpiComm() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }
  void barrier() override;

 protected:
  std::shared_ptr<Work> do_allreduce(TensorView x, ReduceOp op) override;
  std::shared_ptr<Work> do_reduce_scatter(ConstTensorView in, TensorView out, ReduceOp op) override;
  std::shared_ptr<Work> do_allgather(ConstTensorView in, TensorView out) override;
  std::shared_ptr<Work> do_broadcast(TensorView x, int root) override;
  std::shared_ptr<Work> do_send(ConstTensorView x, int peer, int tag) override;
  std::shared_ptr<Work> do_recv(TensorView x, int peer, int tag) override;

 private:
  struct Impl;
  explicit MpiComm(const CommOptions& options);
  /// Allgathers a small header and throws InvalidArgument "[op] ..." if ranks disagree.
  void check_header(const char* op, int64_t count, DType dtype, int extra);
  /// allreduce of a large message as reduce-scatter + all-gather.
  std::shared_ptr<Work> allreduce_split(TensorView x, ReduceOp op);
  /// allreduce of a large message as a blocking MPI_Allreduce on the progress thread.
  std::shared_ptr<Work> allreduce_threaded(TensorView x, ReduceOp op);
  /// Messages of at least this many bytes take allreduce_threaded (or allreduce_split).
  static constexpr int64_t kSplitBytes = 1 << 20;

  std::unique_ptr<Impl> impl_;
  int rank_ = 0;
  int size_ = 1;
};

/// True when this process was started by mpirun (OMPI_COMM_WORLD_SIZE or PMI_SIZE is set).
bool launched_by_mpirun();

}  // namespace frugal::parallel
