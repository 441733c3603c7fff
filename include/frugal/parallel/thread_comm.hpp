#pragma once
/// ThreadComm: N workers in one process exchanging data through shared memory (the embedded
/// default communicator, and the reference for the ring algorithm).
///
/// Algorithms. allreduce of at least `direct_max_bytes` runs the ring algorithm (Patarasuk and
/// Yuan, 2009): reduce-scatter then all-gather, 2(N-1) steps over N chunks, each chunk cut into
/// pieces of `chunk_bytes` that flow through the ring independently (pipelining). Each worker reads
/// its left neighbour's buffer directly (no mailbox copies); per-worker progress counters (atomics)
/// say which piece is ready. Smaller messages use the direct variant: each worker copies its input
/// to a staging area, then reduces all staging areas in rank order. Every element of the result is
/// computed once in a fixed order and copied, so all ranks hold bit-identical results.
/// reduce_scatter, allgather and broadcast read peers' buffers directly; send / recv are a
/// rendezvous (the receiver copies from the sender's buffer).
///
/// Async variants run on one background thread per communicator, in call order; synchronous
/// calls run on the caller's thread when nothing is queued.
///
/// Failure. A worker that stops calling makes its peers raise Timeout after options.timeout. A
/// worker that throws inside run_workers aborts the group: its peers raise CommError at once
/// ("[op] rank k aborted the group"), and run_workers rethrows the first exception. After a
/// timeout or abort the communicator is unusable (later calls raise CommError).
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "frugal/parallel/communicator.hpp"

namespace frugal::parallel {

namespace detail {
struct ThreadGroup;
struct AsyncQueue;
class RankEngine;
}  // namespace detail

/// Options of a ThreadComm group.
struct ThreadCommOptions {
  CommOptions comm;
  /// Ring pipeline piece size in bytes (> 0): each ring step moves a chunk in pieces of this size.
  int64_t chunk_bytes = 1 << 20;
  /// Messages smaller than this use the direct all-reduce (staging copy + rank-order reduction).
  int64_t direct_max_bytes = 64 << 10;
};

/// One worker's end of a shared-memory group. Create with ThreadComm::create_group.
class ThreadComm final : public Communicator {
 public:
  /// n communicators (ranks 0..n-1) sharing one group; hand communicator i to worker thread i.
  static std::vector<std::unique_ptr<ThreadComm>> create_group(int n,
                                                               const ThreadCommOptions& options = {});
  ~ThreadComm() override;

  int rank() const override { return rank_; }
  int size() const override;
  std::string backend() const override { return "thread"; }
  void barrier() override;

  /// Marks the group as aborted: every peer's pending and future operation raises CommError.
  void abort();

 protected:
  std::shared_ptr<Work> do_allreduce(TensorView x, ReduceOp op) override;
  std::shared_ptr<Work> do_reduce_scatter(ConstTensorView in, TensorView out,
                                          ReduceOp op) override;
  std::shared_ptr<Work> do_allgather(ConstTensorView in, TensorView out) override;
  std::shared_ptr<Work> do_broadcast(TensorView x, int root) override;
  std::shared_ptr<Work> do_send(ConstTensorView x, int peer, int tag) override;
  std::shared_ptr<Work> do_recv(TensorView x, int peer, int tag) override;

 private:
  ThreadComm(std::shared_ptr<detail::ThreadGroup> group, int rank, const ThreadCommOptions& o);
  /// Runs `op` now (nothing queued) or on the background thread after the queued operations.
  std::shared_ptr<Work> submit(const char* op, std::function<void()> fn);

  std::shared_ptr<detail::ThreadGroup> group_;
  int rank_;
  ThreadCommOptions topts_;
  std::unique_ptr<detail::AsyncQueue> queue_;
  std::unique_ptr<detail::RankEngine> engine_;
};

/// Runs fn(comm) on n threads, one per rank of a new ThreadComm group, and waits for all of them.
/// If any worker throws, the group is aborted (peers stop waiting) and the first exception is
/// rethrown here.
void run_workers(int n, const std::function<void(Communicator&)>& fn,
                 const ThreadCommOptions& options = {});

}  // namespace frugal::parallel
