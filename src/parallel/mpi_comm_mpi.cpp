// MpiComm: nonblocking MPI calls completed by MPI_Test polling against a deadline.
#include <mpi.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "core/dtype_dispatch.hpp"
#include "core/mpi_check.hpp"
#include "frugal/parallel/mpi_comm.hpp"

namespace frugal::parallel {
namespace {

using Clock = std::chrono::steady_clock;

// ---- f16 / bf16: 16-bit carriers with user-defined reductions in float ------------------------

MPI_Datatype g_half = MPI_DATATYPE_NULL;
MPI_Datatype g_bf16 = MPI_DATATYPE_NULL;
MPI_Op g_op16[3] = {MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL};  // sum, max, min

template <class T>
void reduce16(const void* in, void* inout, int n, int which) {
  const T* a = static_cast<const T*>(in);
  T* b = static_cast<T*>(inout);
  for (int i = 0; i < n; ++i) {
    const float x = float(a[i]), y = float(b[i]);
    if (which == 0)
      b[i] = T(x + y);
    else if (which == 1)
      b[i] = x > y ? a[i] : b[i];
    else
      b[i] = x < y ? a[i] : b[i];
  }
}

template <int Which>
void op16(void* in, void* inout, int* len, MPI_Datatype* dt) {
  if (*dt == g_half)
    reduce16<Half>(in, inout, *len, Which);
  else
    reduce16<BFloat16>(in, inout, *len, Which);
}

void init_types_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    FRUGAL_MPI_CHECK(MPI_Type_contiguous(1, MPI_UINT16_T, &g_half));
    FRUGAL_MPI_CHECK(MPI_Type_commit(&g_half));
    FRUGAL_MPI_CHECK(MPI_Type_contiguous(1, MPI_UINT16_T, &g_bf16));
    FRUGAL_MPI_CHECK(MPI_Type_commit(&g_bf16));
    FRUGAL_MPI_CHECK(MPI_Op_create(&op16<0>, 1, &g_op16[0]));
    FRUGAL_MPI_CHECK(MPI_Op_create(&op16<1>, 1, &g_op16[1]));
    FRUGAL_MPI_CHECK(MPI_Op_create(&op16<2>, 1, &g_op16[2]));
  });
}

MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::kF32:
      return MPI_FLOAT;
    case DType::kF64:
      return MPI_DOUBLE;
    case DType::kI32:
      return MPI_INT32_T;
    case DType::kI64:
      return MPI_INT64_T;
    case DType::kF16:
      return g_half;
    case DType::kBF16:
      return g_bf16;
    default:
      break;
  }
  frugal::detail::fail(ErrorCode::kUnsupported, "MpiComm", "dtype ", dtype_name(t));
}

MPI_Op mpi_op(ReduceOp op, DType t) {
  const bool b16 = t == DType::kF16 || t == DType::kBF16;
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      return b16 ? g_op16[0] : MPI_SUM;
    case ReduceOp::kMax:
      return b16 ? g_op16[1] : MPI_MAX;
    case ReduceOp::kMin:
      return b16 ? g_op16[2] : MPI_MIN;
  }
  return MPI_SUM;
}

/// x /= n elementwise (truncating for integers): kAvg after an MPI sum.
void divide(void* x, DType t, int64_t count, int n) {
  frugal::detail::visit_dtype(t, "allreduce", [&]<class T>() {
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double> ||
                  std::is_same_v<T, int32_t> || std::is_same_v<T, int64_t>) {
      T* p = static_cast<T*>(x);
      for (int64_t i = 0; i < count; ++i) p[i] = p[i] / static_cast<T>(n);
    } else if constexpr (std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>) {
      T* p = static_cast<T*>(x);
      for (int64_t i = 0; i < count; ++i) p[i] = T(float(p[i]) / static_cast<float>(n));
    }
  });
}

int checked_count(const char* op, int64_t n) {
  FRUGAL_REQUIRE(n <= INT32_MAX, op, "MPI counts are int: ", n, " elements is too many");
  return static_cast<int>(n);
}

/// Polls MPI_Test until `req` completes or the deadline passes (then Timeout naming op and peer).
/// Spins first (a 4 KiB allreduce completes in microseconds), then yields, then (after 2 s) naps.
void poll(MPI_Request& req, const char* op, std::chrono::milliseconds timeout,
          const std::string& peer) {
  const auto start = Clock::now();
  const auto deadline = start + timeout;
  for (uint32_t i = 0;; ++i) {
    int flag = 0;
    FRUGAL_MPI_CHECK(MPI_Test(&req, &flag, MPI_STATUS_IGNORE));
    if (flag) return;
    if ((i & 63) == 63) {
      const auto now = Clock::now();
      if (now > deadline)
        frugal::detail::fail(ErrorCode::kTimeout, op, "timed out after ", timeout.count(),
                             " ms waiting for ", peer);
      // MPI progresses a nonblocking operation only inside MPI calls (each MPI_Test moves the
      // shared-memory fragments along): napping early halves the bandwidth of a large message.
      if (now - start > std::chrono::seconds(2)) {
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      } else if (now - start > std::chrono::milliseconds(1)) {
        std::this_thread::yield();
      }
    }
  }
}

class MpiWork final : public Work {
 public:
  MpiWork(const char* op, std::chrono::milliseconds timeout, std::string peer, bool p2p,
          std::function<void()> on_complete = nullptr)
      : op_(op),
        timeout_(timeout),
        peer_(std::move(peer)),
        p2p_(p2p),
        on_complete_(std::move(on_complete)) {}
  ~MpiWork() override {
    if (req_ == MPI_REQUEST_NULL) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    // A point-to-point request can be cancelled; MPI forbids cancelling or freeing a pending
    // collective, which is left to complete (its buffers must outlive it: see the header).
    if (p2p_) {
      MPI_Cancel(&req_);
      MPI_Wait(&req_, MPI_STATUS_IGNORE);
    }
  }
  MPI_Request* request() { return &req_; }
  /// A second stage started when the first request completes (it sets a new request).
  void set_next_stage(std::function<void(MPI_Request*)> next) { next_ = std::move(next); }
  void wait() override {
    if (done_) return;
    poll(req_, op_, timeout_, peer_);
    if (advance()) return;
    poll(req_, op_, timeout_, peer_);
    finish();
  }
  bool is_completed() override {
    if (done_) return true;
    int flag = 0;
    FRUGAL_MPI_CHECK(MPI_Test(&req_, &flag, MPI_STATUS_IGNORE));
    if (flag && !advance()) {
      FRUGAL_MPI_CHECK(MPI_Test(&req_, &flag, MPI_STATUS_IGNORE));
      if (flag) finish();
    }
    return done_;
  }

 private:
  // The current request completed: start the next stage (returns false) or finish (true).
  bool advance() {
    req_ = MPI_REQUEST_NULL;
    if (!next_) {
      finish();
      return true;
    }
    auto next = std::move(next_);
    next_ = nullptr;
    next(&req_);
    return false;
  }
  void finish() {
    done_ = true;
    req_ = MPI_REQUEST_NULL;
    if (on_complete_) on_complete_();
  }
  std::function<void(MPI_Request*)> next_;
  const char* op_;
  std::chrono::milliseconds timeout_;
  std::string peer_;
  bool p2p_;
  std::function<void()> on_complete_;
  MPI_Request req_ = MPI_REQUEST_NULL;
  bool done_ = false;
};

std::string all_ranks(int size) { return "the other ranks (" + std::to_string(size) + " in all)"; }

// ---- the progress thread: blocking MPI calls, in call order, on a communicator of its own ------

/// One blocking MPI call queued to the progress thread.
struct BlockingTask {
  std::function<int()> run;  // returns the MPI error code
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  int rc = MPI_SUCCESS;
};

class ThreadedWork final : public Work {
 public:
  ThreadedWork(std::shared_ptr<BlockingTask> task, const char* op,
               std::chrono::milliseconds timeout, std::string peer,
               std::function<void()> on_complete)
      : task_(std::move(task)),
        op_(op),
        timeout_(timeout),
        peer_(std::move(peer)),
        on_complete_(std::move(on_complete)) {}
  void wait() override {
    if (finished_) return;
    {
      std::unique_lock lock(task_->mu);
      // Like the polling path, a second wait() gets a fresh timeout.
      const auto deadline = Clock::now() + timeout_;
      if (!task_->cv.wait_until(lock, deadline, [&] { return task_->done; }))
        frugal::detail::fail(ErrorCode::kTimeout, op_, "timed out after ", timeout_.count(),
                             " ms waiting for ", peer_);
    }
    finish();
  }
  bool is_completed() override {
    if (finished_) return true;
    {
      std::lock_guard lock(task_->mu);
      if (!task_->done) return false;
    }
    finish();
    return true;
  }

 private:
  void finish() {
    finished_ = true;
    FRUGAL_MPI_CHECK(task_->rc);
    if (on_complete_) on_complete_();
  }
  std::shared_ptr<BlockingTask> task_;
  const char* op_;
  std::chrono::milliseconds timeout_;
  std::string peer_;
  std::function<void()> on_complete_;
  bool finished_ = false;
};

}  // namespace

struct MpiComm::Impl {
  MPI_Comm comm = MPI_COMM_NULL;
  // Progress thread (MPI_THREAD_MULTIPLE only).
  MPI_Comm comm_bg = MPI_COMM_NULL;
  std::thread worker;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::shared_ptr<BlockingTask>> queue;
  std::shared_ptr<BlockingTask> running;
  bool stop = false;

  void loop() {
    for (;;) {
      std::shared_ptr<BlockingTask> t;
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return stop || !queue.empty(); });
        if (queue.empty()) return;  // stop, nothing left
        t = queue.front();
        queue.pop_front();
        running = t;
      }
      const int rc = t->run();
      {
        std::lock_guard lock(mu);  // before the waiter can return and destroy the communicator
        running = nullptr;
      }
      {
        std::lock_guard lock(t->mu);
        t->rc = rc;
        t->done = true;
      }
      t->cv.notify_all();
    }
  }
  std::shared_ptr<BlockingTask> submit(std::function<int()> fn) {
    auto t = std::make_shared<BlockingTask>();
    t->run = std::move(fn);
    {
      std::lock_guard lock(mu);
      queue.push_back(t);
    }
    cv.notify_one();
    return t;
  }
};

namespace {
void finalize_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}
}  // namespace

std::unique_ptr<MpiComm> MpiComm::world(const CommOptions& options) {
  int initialized = 0;
  FRUGAL_MPI_CHECK(MPI_Initialized(&initialized));
  if (!initialized) {
    int provided = 0;
    FRUGAL_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided));
    std::atexit(finalize_at_exit);
  }
  return std::unique_ptr<MpiComm>(new MpiComm(options));
}

MpiComm::MpiComm(const CommOptions& options) : Communicator(options), impl_(new Impl) {
  init_types_once();
  FRUGAL_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &impl_->comm));
  // Errors come back as codes (FRUGAL_MPI_CHECK turns them into CommError), never abort.
  FRUGAL_MPI_CHECK(MPI_Comm_set_errhandler(impl_->comm, MPI_ERRORS_RETURN));
  FRUGAL_MPI_CHECK(MPI_Comm_rank(impl_->comm, &rank_));
  FRUGAL_MPI_CHECK(MPI_Comm_size(impl_->comm, &size_));
  int level = 0;
  FRUGAL_MPI_CHECK(MPI_Query_thread(&level));
  if (level >= MPI_THREAD_MULTIPLE && size_ > 1) {
    FRUGAL_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &impl_->comm_bg));
    FRUGAL_MPI_CHECK(MPI_Comm_set_errhandler(impl_->comm_bg, MPI_ERRORS_RETURN));
    impl_->worker = std::thread([impl = impl_.get()] { impl->loop(); });
  }
}

MpiComm::~MpiComm() {
  if (impl_->worker.joinable()) {
    bool stuck;
    {
      std::lock_guard lock(impl_->mu);
      impl_->stop = true;
      impl_->queue.clear();  // never started: nobody waits for them any more
      stuck = impl_->running != nullptr;
    }
    impl_->cv.notify_all();
    if (stuck) {
      // A collective whose peers never came (it timed out): it cannot be cancelled, and joining
      // would hang. Leave the thread (and its communicator) to the process's end.
      std::fprintf(stderr, "[MpiComm] a timed-out all-reduce is still pending at destruction\n");
      impl_->worker.detach();
      (void)impl_.release();  // the detached thread still uses it
      return;
    }
    impl_->worker.join();
  }
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && impl_->comm != MPI_COMM_NULL) MPI_Comm_free(&impl_->comm);
  if (!finalized && impl_->comm_bg != MPI_COMM_NULL) MPI_Comm_free(&impl_->comm_bg);
}

void MpiComm::check_header(const char* op, int64_t count, DType dtype, int extra) {
  int64_t mine[3] = {count, static_cast<int64_t>(dtype), extra};
  std::vector<int64_t> all(3 * static_cast<size_t>(size_));
  MPI_Request req;
  FRUGAL_MPI_CHECK(
      MPI_Iallgather(mine, 3, MPI_INT64_T, all.data(), 3, MPI_INT64_T, impl_->comm, &req));
  poll(req, op, timeout(), all_ranks(size_));
  for (int p = 0; p < size_; ++p) {
    const int64_t* h = &all[3 * static_cast<size_t>(p)];
    if (h[0] != count || h[1] != mine[1] || h[2] != extra)
      frugal::detail::fail(ErrorCode::kInvalidArgument, op, "rank ", rank_, " called it with ",
                           count, " x ", dtype_name(dtype), " (", extra, ") but rank ", p, " with ",
                           h[0], " x ", dtype_name(static_cast<DType>(h[1])), " (", h[2], ")");
  }
}

std::shared_ptr<Work> MpiComm::do_allreduce(TensorView x, ReduceOp op) {
  if (options_.check_consistency) check_header("allreduce", x.numel(), x.dtype, int(op));
  if (size_ == 1 && op != ReduceOp::kAvg) return completed_work();
  const int count = checked_count("allreduce", x.numel());
  if (x.nbytes() >= kSplitBytes && impl_->worker.joinable()) return allreduce_threaded(x, op);
  if (x.nbytes() >= kSplitBytes && count >= size_) return allreduce_split(x, op);
  std::function<void()> after;
  if (op == ReduceOp::kAvg) {
    after = [x, n = size_] { divide(x.data, x.dtype, x.numel(), n); };
  }
  auto w = std::make_shared<MpiWork>("allreduce", timeout(), all_ranks(size_), false, after);
  FRUGAL_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, x.data, checked_count("allreduce", x.numel()),
                                  mpi_type(x.dtype), mpi_op(op, x.dtype), impl_->comm,
                                  w->request()));
  return w;
}

std::shared_ptr<Work> MpiComm::allreduce_threaded(TensorView x, ReduceOp op) {
  std::function<void()> after;
  if (op == ReduceOp::kAvg) after = [x, n = size_] { divide(x.data, x.dtype, x.numel(), n); };
  MPI_Comm comm = impl_->comm_bg;
  const int count = static_cast<int>(x.numel());
  MPI_Datatype type = mpi_type(x.dtype);
  MPI_Op mop = mpi_op(op, x.dtype);
  auto task =
      impl_->submit([=] { return MPI_Allreduce(MPI_IN_PLACE, x.data, count, type, mop, comm); });
  return std::make_shared<ThreadedWork>(std::move(task), "allreduce", timeout(), all_ranks(size_),
                                        std::move(after));
}

// Large messages without a progress thread: reduce-scatter then all-gather (Rabenseifner's scheme),
// as two nonblocking stages. Open MPI's default MPI_Iallreduce (libnbc) for 64 MiB on 2 ranks
// measured about 2x slower than the blocking MPI_Allreduce; this split matches or beats it
// (docs/parallel.md). kAvg divides each block once, before the all-gather, so every rank holds
// identical results.
std::shared_ptr<Work> MpiComm::allreduce_split(TensorView x, ReduceOp op) {
  const int n = size_;
  auto counts = std::make_shared<std::vector<int>>(n);
  auto displs = std::make_shared<std::vector<int>>(n);
  for (int c = 0; c < n; ++c) {
    (*displs)[c] = static_cast<int>(x.numel() * c / n);
    (*counts)[c] = static_cast<int>(x.numel() * (c + 1) / n) - (*displs)[c];
  }
  const int64_t esize = dtype_nbytes(x.dtype, 1);
  auto block = std::shared_ptr<std::byte[]>(new std::byte[(*counts)[rank_] * esize]);
  auto w = std::make_shared<MpiWork>("allreduce", timeout(), all_ranks(n), false);
  MPI_Comm comm = impl_->comm;
  const int r = rank_;
  FRUGAL_MPI_CHECK(MPI_Ireduce_scatter(x.data, block.get(), counts->data(), mpi_type(x.dtype),
                                       mpi_op(op, x.dtype), comm, w->request()));
  w->set_next_stage([=](MPI_Request* req) {
    std::byte* mine = static_cast<std::byte*>(x.data) + (*displs)[r] * esize;
    std::memcpy(mine, block.get(), static_cast<size_t>((*counts)[r] * esize));
    if (op == ReduceOp::kAvg) divide(mine, x.dtype, (*counts)[r], n);
    FRUGAL_MPI_CHECK(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, x.data, counts->data(),
                                     displs->data(), mpi_type(x.dtype), comm, req));
  });
  return w;
}

std::shared_ptr<Work> MpiComm::do_reduce_scatter(ConstTensorView in, TensorView out, ReduceOp op) {
  if (options_.check_consistency) check_header("reduce_scatter", out.numel(), out.dtype, int(op));
  std::function<void()> after;
  if (op == ReduceOp::kAvg) {
    after = [out, n = size_] { divide(out.data, out.dtype, out.numel(), n); };
  }
  auto w = std::make_shared<MpiWork>("reduce_scatter", timeout(), all_ranks(size_), false, after);
  FRUGAL_MPI_CHECK(MPI_Ireduce_scatter_block(
      in.data, out.data, checked_count("reduce_scatter", out.numel()), mpi_type(out.dtype),
      mpi_op(op, out.dtype), impl_->comm, w->request()));
  return w;
}

std::shared_ptr<Work> MpiComm::do_allgather(ConstTensorView in, TensorView out) {
  if (options_.check_consistency) check_header("allgather", in.numel(), in.dtype, 0);
  auto w = std::make_shared<MpiWork>("allgather", timeout(), all_ranks(size_), false);
  const int n = checked_count("allgather", in.numel());
  FRUGAL_MPI_CHECK(MPI_Iallgather(in.data, n, mpi_type(in.dtype), out.data, n, mpi_type(out.dtype),
                                  impl_->comm, w->request()));
  return w;
}

std::shared_ptr<Work> MpiComm::do_broadcast(TensorView x, int root) {
  if (options_.check_consistency) check_header("broadcast", x.numel(), x.dtype, root);
  auto w = std::make_shared<MpiWork>("broadcast", timeout(), "rank " + std::to_string(root), false);
  FRUGAL_MPI_CHECK(MPI_Ibcast(x.data, checked_count("broadcast", x.numel()), mpi_type(x.dtype),
                              root, impl_->comm, w->request()));
  return w;
}

std::shared_ptr<Work> MpiComm::do_send(ConstTensorView x, int peer, int tag) {
  auto w = std::make_shared<MpiWork>("send", timeout(), "rank " + std::to_string(peer), true);
  FRUGAL_MPI_CHECK(MPI_Isend(x.data, checked_count("send", x.numel()), mpi_type(x.dtype), peer, tag,
                             impl_->comm, w->request()));
  return w;
}

std::shared_ptr<Work> MpiComm::do_recv(TensorView x, int peer, int tag) {
  auto w = std::make_shared<MpiWork>("recv", timeout(), "rank " + std::to_string(peer), true);
  FRUGAL_MPI_CHECK(MPI_Irecv(x.data, checked_count("recv", x.numel()), mpi_type(x.dtype), peer, tag,
                             impl_->comm, w->request()));
  return w;
}

void MpiComm::barrier() {
  MPI_Request req;
  FRUGAL_MPI_CHECK(MPI_Ibarrier(impl_->comm, &req));
  poll(req, "barrier", timeout(), all_ranks(size_));
}

}  // namespace frugal::parallel
