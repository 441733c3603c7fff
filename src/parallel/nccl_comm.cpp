// NcclComm host part: bootstrap of the unique id, validation-free enqueue (the Communicator entry
// validated), event-polling Work bounded by the timeout. The NCCL calls are frugal::cu functions
// (kernels/parallel/nccl_comm_nccl.cu); without CUDA + NCCL they raise NotCompiled.
#include "frugal/parallel/nccl_comm.hpp"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "cu_ops.hpp"

namespace frugal::parallel {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kIdBytes = 128;  // sizeof(ncclUniqueId)

}  // namespace

/// The communicator handle, shared with the Work handles so that a timed-out wait can abort it.
struct NcclComm::State {
  void* comm = nullptr;  // ncclComm_t; null once aborted
  bool aborted = false;
  int64_t timeout_ms = 0;  // bound of every poll of the nonblocking communicator
  /// ncclCommAbort: stops the stuck kernels and frees the communicator (the stream may then be
  /// used again); every later operation raises CommError.
  void abort() noexcept {
    if (aborted) return;
    aborted = true;
    try {
      cu::nccl_comm_destroy(comm, true, timeout_ms);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "[NcclComm] abort failed: %s\n", e.what());
    }
    comm = nullptr;
  }
};

namespace {

class NcclWork final : public Work {
 public:
  NcclWork(std::shared_ptr<NcclComm::State> state, void* event, const char* op,
           std::chrono::milliseconds timeout)
      : state_(std::move(state)), event_(event), op_(op), timeout_(timeout) {}
  ~NcclWork() override {
    try {
      cu::nccl_event_destroy(event_);
    } catch (...) {
    }
  }
  void wait() override {
    const auto deadline = Clock::now() + timeout_;
    for (uint32_t i = 0; !is_completed(); ++i) {
      if (Clock::now() > deadline) {
        // A stuck NCCL kernel never finishes by itself: abort the communicator (as PyTorch's
        // NCCL watchdog does) so the GPU and the stream are released, then report.
        state_->abort();
        detail::fail(ErrorCode::kTimeout, op_, "timed out after ", timeout_.count(),
                     " ms waiting for the NCCL operation (a peer did not join); the communicator "
                     "was aborted");
      }
      if (i > 1000) std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }
  bool is_completed() override {
    if (done_) return true;
    if (state_->aborted)
      detail::fail(ErrorCode::kCommError, op_, "the NCCL communicator was aborted");
    done_ = cu::nccl_query(state_->comm, event_) != 0;
    return done_;
  }

 private:
  std::shared_ptr<NcclComm::State> state_;
  void* event_;
  const char* op_;
  std::chrono::milliseconds timeout_;
  bool done_ = false;
};

}  // namespace

NcclComm::NcclComm(const void* id, int nranks, int rank, int device, const CommOptions& options)
    : Communicator(options),
      state_(std::make_shared<State>()),
      rank_(rank),
      size_(nranks),
      device_(device) {
  state_->timeout_ms = options.timeout.count();
  // Nonblocking init bounded by the timeout: a peer that never joins raises Timeout naming
  // "NcclComm::init" (the communicator is aborted), never a hang.
  state_->comm = cu::nccl_comm_init(id, nranks, rank, device, state_->timeout_ms, "NcclComm::init");
}

NcclComm::~NcclComm() {
  if (state_->aborted) return;
  try {
    cu::nccl_comm_destroy(state_->comm, false, state_->timeout_ms);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[NcclComm] destroy failed: %s\n", e.what());
  }
  state_->comm = nullptr;
}

std::unique_ptr<NcclComm> NcclComm::create(Communicator& bootstrap, int device,
                                           const CommOptions& options) {
  FRUGAL_REQUIRE(device >= 0, "NcclComm", "device must be >= 0, got ", device);
  Tensor id = Tensor::zeros({kIdBytes / 4}, DType::kI32);
  if (bootstrap.rank() == 0) cu::nccl_unique_id(id.data_ptr());
  bootstrap.broadcast(id.view(), 0);
  return std::unique_ptr<NcclComm>(
      new NcclComm(id.data_ptr(), bootstrap.size(), bootstrap.rank(), device, options));
}

std::unique_ptr<NcclComm> NcclComm::create(int nranks, int rank, int device,
                                           const std::string& id_path, const CommOptions& options) {
  FRUGAL_REQUIRE(nranks >= 1 && rank >= 0 && rank < nranks, "NcclComm", "rank ", rank, " of ",
                 nranks, " is not valid");
  FRUGAL_REQUIRE(device >= 0, "NcclComm", "device must be >= 0, got ", device);
  FRUGAL_REQUIRE(nranks == 1 || !id_path.empty(), "NcclComm",
                 "an id file is needed for more than one rank");
  std::vector<char> id(kIdBytes);
  if (rank == 0) {
    cu::nccl_unique_id(id.data());
    if (nranks > 1) {
      // Write then rename, so a reader never sees a partial id.
      const std::string tmp = id_path + ".tmp";
      std::ofstream(tmp, std::ios::binary).write(id.data(), kIdBytes);
      std::filesystem::rename(tmp, id_path);
    }
  } else {
    const auto deadline = Clock::now() + options.timeout;
    for (;;) {
      std::ifstream in(id_path, std::ios::binary);
      if (in && in.read(id.data(), kIdBytes)) break;
      if (Clock::now() > deadline)
        detail::fail(ErrorCode::kTimeout, "NcclComm", "timed out after ", options.timeout.count(),
                     " ms waiting for rank 0 to write ", id_path);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  return std::unique_ptr<NcclComm>(new NcclComm(id.data(), nranks, rank, device, options));
}

std::shared_ptr<Work> NcclComm::enqueue(const char* op, int kind, const void* send, void* recv,
                                        int64_t count, DType dtype, int reduce, int peer) {
  if (state_->aborted)
    detail::fail(ErrorCode::kCommError, op,
                 "the NCCL communicator was aborted after an earlier timeout");
  cu::nccl_enqueue(state_->comm, kind, send, recv, count, dtype, reduce, peer, ctx_.stream,
                   state_->timeout_ms);
  return std::make_shared<NcclWork>(state_, cu::nccl_record(ctx_.stream), op, timeout());
}

std::shared_ptr<Work> NcclComm::do_allreduce(TensorView x, ReduceOp op) {
  return enqueue("allreduce", 0, x.data, x.data, x.numel(), x.dtype, static_cast<int>(op), 0);
}
std::shared_ptr<Work> NcclComm::do_reduce_scatter(ConstTensorView in, TensorView out, ReduceOp op) {
  return enqueue("reduce_scatter", 1, in.data, out.data, out.numel(), out.dtype,
                 static_cast<int>(op), 0);
}
std::shared_ptr<Work> NcclComm::do_allgather(ConstTensorView in, TensorView out) {
  return enqueue("allgather", 2, in.data, out.data, in.numel(), in.dtype, 0, 0);
}
std::shared_ptr<Work> NcclComm::do_broadcast(TensorView x, int root) {
  return enqueue("broadcast", 3, x.data, x.data, x.numel(), x.dtype, 0, root);
}
std::shared_ptr<Work> NcclComm::do_send(ConstTensorView x, int peer, int) {
  return enqueue("send", 4, x.data, nullptr, x.numel(), x.dtype, 0, peer);
}
std::shared_ptr<Work> NcclComm::do_recv(TensorView x, int peer, int) {
  return enqueue("recv", 5, nullptr, x.data, x.numel(), x.dtype, 0, peer);
}

void NcclComm::barrier() {
  Tensor one = Tensor::zeros({1}, DType::kI32, device());
  allreduce(one.view(), ReduceOp::kSum);
}

}  // namespace frugal::parallel
