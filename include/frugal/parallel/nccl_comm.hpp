#pragma once
/// NcclComm: the Communicator over NCCL for CUDA tensors. Operations are stream-ordered: they are
/// enqueued on the stream of set_context()'s ExecContext (the default stream otherwise) after the
/// work already there, and the Work handle waits (polling, bounded by the timeout) for an event
/// recorded after the operation; a timeout aborts the NCCL communicator (ncclCommAbort) and
/// raises Timeout, after which the communicator is unusable.
///
/// The NCCL communicator is created nonblocking (ncclConfig_t::blocking = 0) and its
/// initialisation polled until the timeout: a peer that never joins makes create() abort it and
/// raise Timeout ("[NcclComm::init] ..."), never hang as a blocking ncclCommInitRank would.
///
/// Bootstrap: the 128-byte ncclUniqueId of rank 0 reaches the other ranks through another
/// communicator (an MpiComm: broadcast) or through a file on a shared file system.
/// Built with CUDA and NCCL; otherwise create() raises NotCompiled.
#include <memory>
#include <string>

#include "frugal/core/exec_context.hpp"
#include "frugal/parallel/communicator.hpp"

namespace frugal::parallel {

/// One rank's end of an NCCL communicator on one CUDA device.
class NcclComm final : public Communicator {
 public:
  /// Bootstraps through `bootstrap` (same ranks and size; e.g. an MpiComm): rank 0 creates the
  /// unique id and broadcasts it. This rank's GPU is `device`.
  static std::unique_ptr<NcclComm> create(Communicator& bootstrap, int device,
                                          const CommOptions& options = {});
  /// Bootstraps through the file `id_path`: rank 0 writes the id there, the others wait for it
  /// (bounded by options.timeout). nranks = 1 needs no file (pass "").
  static std::unique_ptr<NcclComm> create(int nranks, int rank, int device,
                                          const std::string& id_path,
                                          const CommOptions& options = {});
  ~NcclComm() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }
  Device device() const override { return Device::cuda(device_); }
  void barrier() override;

  /// The stream the operations are enqueued on (ctx.stream).
  void set_context(const ExecContext& ctx) { ctx_ = ctx; }

  /// The NCCL handle shared with the Work handles (a timed-out wait aborts it); internal.
  struct State;

 protected:
  std::shared_ptr<Work> do_allreduce(TensorView x, ReduceOp op) override;
  std::shared_ptr<Work> do_reduce_scatter(ConstTensorView in, TensorView out, ReduceOp op) override;
  std::shared_ptr<Work> do_allgather(ConstTensorView in, TensorView out) override;
  std::shared_ptr<Work> do_broadcast(TensorView x, int root) override;
  std::shared_ptr<Work> do_send(ConstTensorView x, int peer, int tag) override;
  std::shared_ptr<Work> do_recv(TensorView x, int peer, int tag) override;

 private:
  NcclComm(const void* id, int nranks, int rank, int device, const CommOptions& options);
  std::shared_ptr<Work> enqueue(const char* op, int kind, const void* send, void* recv,
                                int64_t count, DType dtype, int reduce, int peer);

  std::shared_ptr<State> state_;
  int rank_ = 0;
  int size_ = 1;
  int device_ = 0;
  ExecContext ctx_;
};

}  // namespace frugal::parallel
