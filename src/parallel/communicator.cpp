// Communicator public entries: argument validation (once, here), then the backend's do_* call.
#include "frugal/parallel/communicator.hpp"

#include <cstdlib>

#include "frugal/core/build_config.hpp"
#include "frugal/parallel/mpi_comm.hpp"
#include "frugal/parallel/thread_comm.hpp"

namespace frugal::parallel {

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kAvg: return "avg";
    case ReduceOp::kMax: return "max";
    case ReduceOp::kMin: return "min";
  }
  return "?";
}

bool comm_supports(DType t) {
  switch (t) {
    case DType::kF32:
    case DType::kF64:
    case DType::kF16:
    case DType::kBF16:
    case DType::kI32:
    case DType::kI64: return true;
    default: return false;
  }
}

namespace {

class DoneWork final : public Work {
 public:
  void wait() override {}
  bool is_completed() override { return true; }
};

void check_buffer(const char* op, const char* what, const ConstTensorView& v, Device dev) {
  FRUGAL_REQUIRE(v.data != nullptr || v.numel() == 0, op, what, " has no data");
  FRUGAL_REQUIRE(v.device == dev, op, what, " is on ", v.device.str(), " but the communicator uses ",
                 dev.str());
  FRUGAL_REQUIRE(v.is_contiguous(), op, what, " must be contiguous");
  FRUGAL_REQUIRE(comm_supports(v.dtype), op, what, " has dtype ", dtype_name(v.dtype),
                 " (supported: f32, f64, f16, bf16, i32, i64)");
}

void check_op(const char* op, ReduceOp r) {
  FRUGAL_REQUIRE(r == ReduceOp::kSum || r == ReduceOp::kAvg || r == ReduceOp::kMax ||
                     r == ReduceOp::kMin,
                 op, "unknown reduction ", static_cast<int>(r));
}

}  // namespace

std::shared_ptr<Work> completed_work() { return std::make_shared<DoneWork>(); }

Communicator::Communicator(const CommOptions& options) : options_(options) {
  FRUGAL_REQUIRE(options.timeout.count() > 0, "Communicator", "timeout must be > 0 ms, got ",
                 options.timeout.count());
}

void Communicator::set_timeout(std::chrono::milliseconds t) {
  FRUGAL_REQUIRE(t.count() > 0, "set_timeout", "timeout must be > 0 ms, got ", t.count());
  options_.timeout = t;
}

std::shared_ptr<Work> Communicator::allreduce_async(TensorView x, ReduceOp op) {
  check_buffer("allreduce", "x", x, device());
  check_op("allreduce", op);
  return do_allreduce(x, op);
}

std::shared_ptr<Work> Communicator::reduce_scatter_async(ConstTensorView in, TensorView out,
                                                         ReduceOp op) {
  check_buffer("reduce_scatter", "in", in, device());
  check_buffer("reduce_scatter", "out", out, device());
  check_op("reduce_scatter", op);
  FRUGAL_REQUIRE(in.dtype == out.dtype, "reduce_scatter", "in has dtype ", dtype_name(in.dtype),
                 " but out has ", dtype_name(out.dtype));
  FRUGAL_REQUIRE(in.numel() == out.numel() * size(), "reduce_scatter", "in has ", in.numel(),
                 " elements; expected size() * out.numel() = ", size(), " * ", out.numel());
  FRUGAL_REQUIRE(in.data != out.data || in.numel() == 0, "reduce_scatter",
                 "in and out must not alias");
  return do_reduce_scatter(in, out, op);
}

std::shared_ptr<Work> Communicator::allgather_async(ConstTensorView in, TensorView out) {
  check_buffer("allgather", "in", in, device());
  check_buffer("allgather", "out", out, device());
  FRUGAL_REQUIRE(in.dtype == out.dtype, "allgather", "in has dtype ", dtype_name(in.dtype),
                 " but out has ", dtype_name(out.dtype));
  FRUGAL_REQUIRE(out.numel() == in.numel() * size(), "allgather", "out has ", out.numel(),
                 " elements; expected size() * in.numel() = ", size(), " * ", in.numel());
  return do_allgather(in, out);
}

std::shared_ptr<Work> Communicator::broadcast_async(TensorView x, int root) {
  check_buffer("broadcast", "x", x, device());
  FRUGAL_REQUIRE(root >= 0 && root < size(), "broadcast", "root ", root, " is not a rank in [0, ",
                 size(), ")");
  return do_broadcast(x, root);
}

std::shared_ptr<Work> Communicator::send_async(ConstTensorView x, int peer, int tag) {
  check_buffer("send", "x", x, device());
  FRUGAL_REQUIRE(peer >= 0 && peer < size(), "send", "peer ", peer, " is not a rank in [0, ",
                 size(), ")");
  FRUGAL_REQUIRE(peer != rank(), "send", "peer ", peer, " is this rank");
  FRUGAL_REQUIRE(tag >= 0, "send", "tag must be >= 0, got ", tag);
  return do_send(x, peer, tag);
}

std::shared_ptr<Work> Communicator::recv_async(TensorView x, int peer, int tag) {
  check_buffer("recv", "x", x, device());
  FRUGAL_REQUIRE(peer >= 0 && peer < size(), "recv", "peer ", peer, " is not a rank in [0, ",
                 size(), ")");
  FRUGAL_REQUIRE(peer != rank(), "recv", "peer ", peer, " is this rank");
  FRUGAL_REQUIRE(tag >= 0, "recv", "tag must be >= 0, got ", tag);
  return do_recv(x, peer, tag);
}

bool launched_by_mpirun() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMI_SIZE") != nullptr;
}

std::unique_ptr<Communicator> Communicator::from_environment(const CommOptions& options) {
#if FRUGAL_HAS_MPI
  if (launched_by_mpirun()) return MpiComm::world(options);
#endif
  ThreadCommOptions t;
  t.comm = options;
  auto group = ThreadComm::create_group(1, t);
  return std::move(group[0]);
}

#if !FRUGAL_HAS_MPI
// Without MPI the class exists so code compiles; creating one reports NotCompiled.
std::unique_ptr<MpiComm> MpiComm::world(const CommOptions&) {
  detail::fail(ErrorCode::kNotCompiled, "MpiComm", "frugal was built without MPI");
}
#endif

}  // namespace frugal::parallel

namespace frugal::parallel {
namespace {
/// Sets a flag for the duration of a synchronous call.
struct SyncScope {
  bool& flag;
  explicit SyncScope(bool& f) : flag(f) { flag = true; }
  ~SyncScope() { flag = false; }
};
}  // namespace

void Communicator::allreduce(TensorView x, ReduceOp op) {
  std::shared_ptr<Work> w;
  {
    SyncScope s(in_sync_call_);
    w = allreduce_async(x, op);
  }
  w->wait();
}
void Communicator::reduce_scatter(ConstTensorView in, TensorView out, ReduceOp op) {
  std::shared_ptr<Work> w;
  {
    SyncScope s(in_sync_call_);
    w = reduce_scatter_async(in, out, op);
  }
  w->wait();
}
void Communicator::allgather(ConstTensorView in, TensorView out) {
  std::shared_ptr<Work> w;
  {
    SyncScope s(in_sync_call_);
    w = allgather_async(in, out);
  }
  w->wait();
}
void Communicator::broadcast(TensorView x, int root) {
  std::shared_ptr<Work> w;
  {
    SyncScope s(in_sync_call_);
    w = broadcast_async(x, root);
  }
  w->wait();
}
void Communicator::send(ConstTensorView x, int peer, int tag) { send_async(x, peer, tag)->wait(); }
void Communicator::recv(TensorView x, int peer, int tag) { recv_async(x, peer, tag)->wait(); }

}  // namespace frugal::parallel
