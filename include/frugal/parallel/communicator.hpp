#pragma once
/// parallel::Communicator: the collective and point-to-point operations data-parallel training is
/// written against (DESIGN.md §5). Three implementations: ThreadComm (N workers in one process over
/// shared memory, the embedded default), MpiComm (OpenMPI, chosen automatically under mpirun) and
/// NcclComm (NCCL on CUDA devices).
///
/// Semantics shared by every implementation (as MPI's):
/// - Every rank calls the collectives in the same order with the same sizes and dtypes. A mismatch
///   is detected where the implementation checks headers (always for ThreadComm, with
///   CommOptions::check_consistency for MpiComm) and reported as InvalidArgument "[op] ...".
/// - Buffers are contiguous TensorViews on the communicator's device (CPU for ThreadComm and
///   MpiComm, CUDA for NcclComm). Element types: f32, f64, i32, i64, and f16 / bf16 (reduced in
///   float, rounded after every partial sum). kAvg on integers divides with truncation.
/// - The async variants return a Work handle; the buffers must stay untouched until wait()
///   returns. Every wait is bounded by timeout() (5 minutes by default): a dead or stuck peer
///   raises Error(kTimeout, "[op] timed out after ... waiting for rank k"), never a hang.
#include <chrono>
#include <memory>
#include <string>

#include "frugal/core/tensor.hpp"

namespace frugal::parallel {

/// Reduction applied elementwise across ranks.
enum class ReduceOp {
  kSum,  ///< sum over ranks
  kAvg,  ///< sum over ranks divided by size() (integer types: truncating division)
  kMax,  ///< elementwise maximum
  kMin,  ///< elementwise minimum
};

/// Name of a reduction ("sum", "avg", "max", "min").
const char* reduce_op_name(ReduceOp op);

/// Options every communicator takes.
struct CommOptions {
  /// Bound of every wait; a peer that does not answer within it raises Timeout.
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
  /// Exchange a small header (op, count, dtype, root) before each collective and report a
  /// mismatch across ranks as InvalidArgument. ThreadComm always checks (it costs nothing there);
  /// MpiComm checks only when this is true (one extra small allgather per collective).
  bool check_consistency = false;
};

/// Handle of an operation started by an *_async call.
class Work {
 public:
  virtual ~Work() = default;
  /// Blocks until the operation is complete (rethrowing its error), at most the communicator's
  /// timeout after the operation started; then Error(kTimeout). Calling wait() again after it
  /// returned does nothing.
  virtual void wait() = 0;
  /// True when the operation has completed (successfully or not); never blocks.
  virtual bool is_completed() = 0;
};

/// A Work that is already complete (world size 1, empty tensors).
std::shared_ptr<Work> completed_work();

/// The communicator interface: a coarse run-time-variant object (one per rank and process group).
/// Not thread-safe: one thread drives a given communicator (other ranks use their own objects).
class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  /// This process's (or worker's) rank in [0, size()).
  virtual int rank() const = 0;
  /// Number of ranks.
  virtual int size() const = 0;
  /// Backend name: "thread", "mpi", "nccl".
  virtual std::string backend() const = 0;
  /// The device buffers must live on (CPU, or the CUDA device of an NcclComm).
  virtual Device device() const { return Device::cpu(); }

  /// Bound of every wait (see CommOptions::timeout); > 0.
  std::chrono::milliseconds timeout() const { return options_.timeout; }
  void set_timeout(std::chrono::milliseconds t);
  const CommOptions& options() const { return options_; }

  /// In place: x = reduce over ranks of x. Same shape and dtype on every rank.
  void allreduce(TensorView x, ReduceOp op = ReduceOp::kSum);
  std::shared_ptr<Work> allreduce_async(TensorView x, ReduceOp op = ReduceOp::kSum);

  /// out (n elements) = reduce over ranks of in[rank * n, (rank + 1) * n); in holds size() * n.
  void reduce_scatter(ConstTensorView in, TensorView out, ReduceOp op = ReduceOp::kSum);
  std::shared_ptr<Work> reduce_scatter_async(ConstTensorView in, TensorView out,
                                             ReduceOp op = ReduceOp::kSum);

  /// out[r * n, (r + 1) * n) = in of rank r, for in of n elements and out of size() * n.
  void allgather(ConstTensorView in, TensorView out);
  std::shared_ptr<Work> allgather_async(ConstTensorView in, TensorView out);

  /// x = x of rank `root` on every rank.
  void broadcast(TensorView x, int root = 0);
  std::shared_ptr<Work> broadcast_async(TensorView x, int root = 0);

  /// Sends x to rank `peer` (matched with recv(.., rank(), tag) there, in order per tag).
  void send(ConstTensorView x, int peer, int tag = 0);
  std::shared_ptr<Work> send_async(ConstTensorView x, int peer, int tag = 0);
  /// Receives into x (same count and dtype as sent) from rank `peer`.
  void recv(TensorView x, int peer, int tag = 0);
  std::shared_ptr<Work> recv_async(TensorView x, int peer, int tag = 0);

  /// Returns when every rank has called barrier().
  virtual void barrier() = 0;

  /// The communicator of this process: an MpiComm over MPI_COMM_WORLD when started under mpirun
  /// (OMPI_COMM_WORLD_SIZE or PMI_SIZE set) and MPI is compiled in (MPI is initialised here if the
  /// caller has not); otherwise a ThreadComm of world size 1. Use ThreadComm::create_group or
  /// run_workers for several workers in one process.
  static std::unique_ptr<Communicator> from_environment(const CommOptions& options = {});

 protected:
  explicit Communicator(const CommOptions& options);

  // Implementations: arguments are validated (contiguous, supported dtype, device, sizes).
  virtual std::shared_ptr<Work> do_allreduce(TensorView x, ReduceOp op) = 0;
  virtual std::shared_ptr<Work> do_reduce_scatter(ConstTensorView in, TensorView out,
                                                  ReduceOp op) = 0;
  virtual std::shared_ptr<Work> do_allgather(ConstTensorView in, TensorView out) = 0;
  virtual std::shared_ptr<Work> do_broadcast(TensorView x, int root) = 0;
  virtual std::shared_ptr<Work> do_send(ConstTensorView x, int peer, int tag) = 0;
  virtual std::shared_ptr<Work> do_recv(TensorView x, int peer, int tag) = 0;

  CommOptions options_;
  /// True while a synchronous call (allreduce, ...) runs its async twin: an implementation may
  /// then execute on the caller's thread.
  bool in_sync_call_ = false;
};

/// True for the element types the communicators move and reduce (f32, f64, f16, bf16, i32, i64).
bool comm_supports(DType t);

}  // namespace frugal::parallel
