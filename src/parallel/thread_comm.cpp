// ThreadComm: collectives among worker threads of one process, over shared memory.
//
// Synchronisation. Each rank owns a Slot with one atomic progress word (seq << 32 | tick): seq
// numbers the rank's collectives (every rank calls them in the same order), tick counts the
// steps of the current one. Every collective runs
//   tick 0  post: header (op, dtype, count, root) and buffer addresses are published;
//   tick 1  every rank has read every header (a mismatch is reported by all ranks alike);
//   ticks 2.. the data movement, reading peers' buffers once their progress says the data is there;
//   end     wait until every peer reached the last tick (nobody reads our buffers any more).
// Waits spin briefly, then yield, then sleep in short naps, checking the deadline and the group's
// abort flag.
#include "frugal/parallel/thread_comm.hpp"

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>

#include "core/dtype_dispatch.hpp"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define FRUGAL_CPU_RELAX() _mm_pause()
#else
#define FRUGAL_CPU_RELAX() ((void)0)
#endif

namespace frugal::parallel {
namespace detail {

using Clock = std::chrono::steady_clock;

enum class OpKind : int { kAllreduce, kReduceScatter, kAllgather, kBroadcast, kBarrier };

const char* kind_name(OpKind k) {
  switch (k) {
    case OpKind::kAllreduce: return "allreduce";
    case OpKind::kReduceScatter: return "reduce_scatter";
    case OpKind::kAllgather: return "allgather";
    case OpKind::kBroadcast: return "broadcast";
    case OpKind::kBarrier: return "barrier";
  }
  return "?";
}

struct Header {
  OpKind kind = OpKind::kBarrier;
  DType dtype = DType::kF32;
  ReduceOp op = ReduceOp::kSum;
  int64_t count = 0;  // elements of the per-rank buffer (allreduce: x; reduce_scatter: out; ...)
  int root = 0;
  bool operator==(const Header&) const = default;
};

std::string describe(const Header& h) {
  std::string s = kind_name(h.kind);
  if (h.kind == OpKind::kBarrier) return s;
  s += "(" + std::to_string(h.count) + " x " + std::string(dtype_name(h.dtype));
  if (h.kind == OpKind::kAllreduce || h.kind == OpKind::kReduceScatter)
    s += std::string(", ") + reduce_op_name(h.op);
  if (h.kind == OpKind::kBroadcast) s += ", root " + std::to_string(h.root);
  return s + ")";
}

struct alignas(64) Slot {
  std::atomic<uint64_t> progress{0};
  char pad_[56];  // keep the hot word on its own cache line
  Header header;
  const void* in = nullptr;  // read by peers after post
  void* out = nullptr;
  std::vector<std::byte> staging;  // direct all-reduce: a copy of the input
};

struct P2pMessage {
  int tag = 0;
  const void* data = nullptr;
  int64_t count = 0;
  DType dtype = DType::kF32;
  bool done = false;
  std::string error;  // set by the receiver on a count / dtype mismatch
};

struct Channel {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::shared_ptr<P2pMessage>> pending;
};

struct ThreadGroup {
  explicit ThreadGroup(int n_, int64_t staging_bytes)
      : n(n_), slots(new Slot[n_]), channels(new Channel[static_cast<size_t>(n_) * n_]) {
    for (int i = 0; i < n; ++i) slots[i].staging.resize(static_cast<size_t>(staging_bytes));
  }
  int n;
  std::unique_ptr<Slot[]> slots;
  std::unique_ptr<Channel[]> channels;  // [src * n + dst]
  std::atomic<int> aborted_by{-1};
  Channel& channel(int src, int dst) { return channels[static_cast<size_t>(src) * n + dst]; }
};

struct WorkState {
  std::mutex mu;
  std::condition_variable cv;
  bool started = false;
  bool done = false;
  Clock::time_point started_at;
  std::exception_ptr error;
};

struct AsyncQueue {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::pair<std::function<void()>, std::shared_ptr<WorkState>>> tasks;
  bool busy = false;
  bool stop = false;
  std::thread thread;
};

}  // namespace detail

namespace {

using detail::Clock;
using detail::Header;
using detail::OpKind;
using detail::Slot;
using detail::ThreadGroup;

[[noreturn]] void throw_aborted(const char* op, int by) {
  frugal::detail::fail(ErrorCode::kCommError, op, "rank ", by, " aborted the group");
}

[[noreturn]] void throw_timeout(const char* op, std::chrono::milliseconds t, int peer,
                                const std::string& what) {
  frugal::detail::fail(ErrorCode::kTimeout, op, "timed out after ", t.count(),
                       " ms waiting for rank ", peer, " (", what, ")");
}

/// Spins, then yields, then naps until ready() holds; throws on deadline or group abort.
template <class Ready>
void wait_until(Ready ready, ThreadGroup& g, Clock::time_point deadline,
                std::chrono::milliseconds timeout, const char* op, int peer, const char* what) {
  for (uint32_t i = 0;; ++i) {
    if (ready()) return;
    if (i < 512) {
      FRUGAL_CPU_RELAX();
      continue;
    }
    if ((i & 7) == 0) {
      const int by = g.aborted_by.load(std::memory_order_relaxed);
      if (by >= 0) throw_aborted(op, by);
      if (Clock::now() > deadline) throw_timeout(op, timeout, peer, what);
    }
    if (i < 4096) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }
}

// ---- elementwise kernels (plain loops: the compiler vectorises them for the host ISA) ---------

template <class T>
struct Acc {
  using type = T;
};
template <>
struct Acc<Half> {
  using type = float;
};
template <>
struct Acc<BFloat16> {
  using type = float;
};

/// dst[i] = dst[i] (op) src[i]. f16 / bf16 compute in float and round once per partial result.
template <class T>
void reduce_into(T* __restrict dst, const T* __restrict src, int64_t n, ReduceOp op) {
  using A = typename Acc<T>::type;
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      for (int64_t i = 0; i < n; ++i) dst[i] = T(A(dst[i]) + A(src[i]));
      break;
    case ReduceOp::kMax:
      for (int64_t i = 0; i < n; ++i) dst[i] = A(src[i]) > A(dst[i]) ? src[i] : dst[i];
      break;
    case ReduceOp::kMin:
      for (int64_t i = 0; i < n; ++i) dst[i] = A(src[i]) < A(dst[i]) ? src[i] : dst[i];
      break;
  }
}

/// x[i] /= n (truncating for integers): the last step of kAvg.
template <class T>
void divide_by(T* x, int64_t count, int n) {
  using A = typename Acc<T>::type;
  for (int64_t i = 0; i < count; ++i) x[i] = T(A(x[i]) / A(n));
}

void reduce_bytes(DType t, void* dst, const void* src, int64_t n, ReduceOp op) {
  frugal::detail::visit_dtype(t, "allreduce", [&]<class T>() {
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double> ||
                  std::is_same_v<T, Half> || std::is_same_v<T, BFloat16> ||
                  std::is_same_v<T, int32_t> || std::is_same_v<T, int64_t>) {
      reduce_into(static_cast<T*>(dst), static_cast<const T*>(src), n, op);
    }
  });
}

void divide_bytes(DType t, void* x, int64_t count, int n) {
  frugal::detail::visit_dtype(t, "allreduce", [&]<class T>() {
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double> ||
                  std::is_same_v<T, Half> || std::is_same_v<T, BFloat16> ||
                  std::is_same_v<T, int32_t> || std::is_same_v<T, int64_t>) {
      divide_by(static_cast<T*>(x), count, n);
    }
  });
}

std::byte* bytes(void* p) { return static_cast<std::byte*>(p); }
const std::byte* bytes(const void* p) { return static_cast<const std::byte*>(p); }

class QueuedWork final : public Work {
 public:
  QueuedWork(std::shared_ptr<detail::WorkState> s, std::chrono::milliseconds timeout, const char* op)
      : s_(std::move(s)), timeout_(timeout), op_(op) {}
  void wait() override {
    std::unique_lock lock(s_->mu);
    // The operation bounds its own waits by the timeout; the margin covers its last copy. Before
    // it starts, the operations queued ahead of it are bounded in the same way.
    const auto margin = std::chrono::seconds(1);
    while (!s_->done) {
      s_->cv.wait_for(lock, std::chrono::milliseconds(50));
      if (!s_->done && s_->started && Clock::now() > s_->started_at + timeout_ + margin)
        frugal::detail::fail(ErrorCode::kTimeout, op_, "timed out after ", timeout_.count(),
                             " ms: the asynchronous operation did not finish");
    }
    if (s_->error) {
      auto e = s_->error;
      s_->error = nullptr;  // rethrow once
      std::rethrow_exception(e);
    }
  }
  bool is_completed() override {
    std::lock_guard lock(s_->mu);
    return s_->done;
  }

 private:
  std::shared_ptr<detail::WorkState> s_;
  std::chrono::milliseconds timeout_;
  const char* op_;
};

}  // namespace

// ---- the per-rank engine ----------------------------------------------------------------------

namespace detail {

/// The collective engine of one rank (runs on whichever thread executes the operation).
class RankEngine {
 public:
  RankEngine(ThreadGroup& g, int rank, const ThreadCommOptions& o) : g_(g), r_(rank), o_(o) {}

  void collective(const Header& h, const void* in, void* out, std::chrono::milliseconds timeout) {
    const char* op = kind_name(h.kind);
    if (broken_)
      frugal::detail::fail(ErrorCode::kCommError, op,
                           "communicator unusable after an earlier failure: ", broken_reason_);
    try {
      run(h, in, out, timeout);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kInvalidArgument) {
        broken_ = true;
        broken_reason_ = e.what();
      }
      throw;
    }
  }

 private:
  uint64_t tick(uint64_t t) const { return (seq_ << 32) | t; }
  Slot& slot(int r) { return g_.slots[r]; }
  void set_progress(uint64_t t) { slot(r_).progress.store(tick(t), std::memory_order_release); }
  void wait_peer(int peer, uint64_t t, const char* what) {
    const uint64_t target = tick(t);
    auto& p = slot(peer).progress;
    wait_until([&] { return p.load(std::memory_order_acquire) >= target; }, g_, deadline_, timeout_,
               op_, peer, what);
  }
  void wait_all(uint64_t t, const char* what) {
    for (int p = 0; p < g_.n; ++p)
      if (p != r_) wait_peer(p, t, what);
  }

  void run(const Header& h, const void* in, void* out, std::chrono::milliseconds timeout) {
    const int n = g_.n;
    op_ = kind_name(h.kind);
    timeout_ = timeout;
    deadline_ = Clock::now() + timeout;
    const int64_t esize = h.count == 0 ? 0 : dtype_nbytes(h.dtype, 1);
    const int64_t nbytes = h.count * esize;
    const bool direct = h.kind == OpKind::kAllreduce && nbytes < o_.direct_max_bytes;

    ++seq_;
    Slot& me = slot(r_);
    me.header = h;
    me.in = in;
    me.out = out;
    if (direct && nbytes > 0) std::memcpy(me.staging.data(), in, static_cast<size_t>(nbytes));
    set_progress(0);

    // Header exchange: every rank reads every header before anyone moves on.
    std::string mismatch;
    for (int p = 0; p < n; ++p) {
      if (p == r_) continue;
      wait_peer(p, 0, "start of the operation");
      if (!(slot(p).header == h) && mismatch.empty())
        mismatch = "rank " + std::to_string(r_) + " called " + describe(h) + " but rank " +
                   std::to_string(p) + " called " + describe(slot(p).header);
    }
    set_progress(1);
    wait_all(1, "header exchange");
    if (!mismatch.empty()) frugal::detail::fail(ErrorCode::kInvalidArgument, op_, mismatch);

    uint64_t last = 1;
    switch (h.kind) {
      case OpKind::kBarrier: return;
      case OpKind::kAllreduce:
        if (n == 1) {
          if (h.op == ReduceOp::kAvg) divide_bytes(h.dtype, out, h.count, 1);
          return;
        }
        last = direct ? allreduce_direct(h, out) : allreduce_ring(h, out);
        break;
      case OpKind::kReduceScatter: {
        // out = in_0[r] (op) in_1[r] (op) ... in rank order.
        std::memcpy(out, bytes(slot(0).in) + r_ * nbytes, static_cast<size_t>(nbytes));
        for (int p = 1; p < n; ++p)
          reduce_bytes(h.dtype, out, bytes(slot(p).in) + r_ * nbytes, h.count, h.op);
        if (h.op == ReduceOp::kAvg) divide_bytes(h.dtype, out, h.count, n);
        last = 2;
        break;
      }
      case OpKind::kAllgather:
        for (int p = 0; p < n; ++p)
          std::memcpy(bytes(out) + p * nbytes, slot(p).in, static_cast<size_t>(nbytes));
        last = 2;
        break;
      case OpKind::kBroadcast:
        if (r_ != h.root) std::memcpy(out, slot(h.root).out, static_cast<size_t>(nbytes));
        last = 2;
        break;
    }
    set_progress(last);
    wait_all(last, "end of the operation");
  }

  /// Every rank reduces all staging copies in rank order. Returns the last tick.
  uint64_t allreduce_direct(const Header& h, void* out) {
    const int64_t nbytes = h.count * dtype_nbytes(h.dtype, 1);
    std::memcpy(out, slot(0).staging.data(), static_cast<size_t>(nbytes));
    for (int p = 1; p < g_.n; ++p)
      reduce_bytes(h.dtype, out, slot(p).staging.data(), h.count, h.op);
    if (h.op == ReduceOp::kAvg) divide_bytes(h.dtype, out, h.count, g_.n);
    return 2;
  }

  /// Ring all-reduce in place on `x`: reduce-scatter (N-1 steps) then all-gather (N-1 steps);
  /// chunk c covers elements [count * c / N, count * (c + 1) / N), cut into pieces. Step s, piece q
  /// is tick 2 + s * pieces + q + 1 once done; it needs the left neighbour's (s - 1, q).
  uint64_t allreduce_ring(const Header& h, void* x) {
    const int n = g_.n;
    const int64_t esize = dtype_nbytes(h.dtype, 1);
    const int64_t piece = std::max<int64_t>(1, o_.chunk_bytes / esize);
    const int64_t max_chunk = (h.count + n - 1) / n;
    const int64_t pieces = std::max<int64_t>(1, (max_chunk + piece - 1) / piece);
    const int left = (r_ + n - 1) % n;
    const std::byte* lbuf = bytes(slot(left).out);
    std::byte* mine = bytes(x);
    auto chunk_begin = [&](int c) { return h.count * c / n; };
    auto done_tick = [&](int s, int64_t q) { return 2 + static_cast<uint64_t>(s) * pieces + q + 1; };

    const int steps = 2 * (n - 1);
    for (int s = 0; s < steps; ++s) {
      const bool scatter = s < n - 1;
      const int c = scatter ? ((r_ - 1 - s) % n + n) % n : ((r_ - (s - (n - 1))) % n + n) % n;
      const int64_t b = chunk_begin(c), e = chunk_begin(c + 1);
      for (int64_t q = 0; q < pieces; ++q) {
        if (s > 0) wait_peer(left, done_tick(s - 1, q), scatter ? "reduce-scatter step" :
                                                                  "all-gather step");
        const int64_t pb = std::min(e, b + q * piece), pe = std::min(e, pb + piece);
        if (pe > pb) {
          const int64_t off = pb * esize, len = (pe - pb) * esize;
          if (scatter) {
            reduce_bytes(h.dtype, mine + off, lbuf + off, pe - pb, h.op);
            if (s == n - 2 && h.op == ReduceOp::kAvg) divide_bytes(h.dtype, mine + off, pe - pb, n);
          } else {
            std::memcpy(mine + off, lbuf + off, static_cast<size_t>(len));
          }
        }
        set_progress(done_tick(s, q));
      }
    }
    return done_tick(steps - 1, pieces - 1);
  }

  ThreadGroup& g_;
  int r_;
  ThreadCommOptions o_;
  uint64_t seq_ = 0;
  bool broken_ = false;
  std::string broken_reason_;
  const char* op_ = "";
  std::chrono::milliseconds timeout_{0};
  Clock::time_point deadline_;
};

}  // namespace detail

// ---- ThreadComm -------------------------------------------------------------------------------

std::vector<std::unique_ptr<ThreadComm>> ThreadComm::create_group(int n,
                                                                  const ThreadCommOptions& o) {
  FRUGAL_REQUIRE(n >= 1, "ThreadComm", "group size must be >= 1, got ", n);
  FRUGAL_REQUIRE(o.chunk_bytes > 0, "ThreadComm", "chunk_bytes must be > 0, got ", o.chunk_bytes);
  FRUGAL_REQUIRE(o.direct_max_bytes >= 0, "ThreadComm", "direct_max_bytes must be >= 0, got ",
                 o.direct_max_bytes);
  auto group = std::make_shared<detail::ThreadGroup>(n, o.direct_max_bytes);
  std::vector<std::unique_ptr<ThreadComm>> comms;
  for (int r = 0; r < n; ++r) comms.emplace_back(new ThreadComm(group, r, o));
  return comms;
}

ThreadComm::ThreadComm(std::shared_ptr<detail::ThreadGroup> group, int rank,
                       const ThreadCommOptions& o)
    : Communicator(o.comm),
      group_(std::move(group)),
      rank_(rank),
      topts_(o),
      queue_(std::make_unique<detail::AsyncQueue>()),
      engine_(std::make_unique<detail::RankEngine>(*group_, rank, o)) {}

ThreadComm::~ThreadComm() {
  {
    std::lock_guard lock(queue_->mu);
    queue_->stop = true;
  }
  queue_->cv.notify_all();
  if (queue_->thread.joinable()) queue_->thread.join();
}

int ThreadComm::size() const { return group_->n; }

void ThreadComm::abort() {
  int expected = -1;
  group_->aborted_by.compare_exchange_strong(expected, rank_);
  for (int i = 0; i < group_->n * group_->n; ++i) group_->channels[i].cv.notify_all();
}

std::shared_ptr<Work> ThreadComm::submit(const char* op, std::function<void()> fn) {
  auto& q = *queue_;
  {
    std::unique_lock lock(q.mu);
    if (in_sync_call_ && q.tasks.empty() && !q.busy) {
      lock.unlock();
      fn();  // synchronous call, nothing queued: run on the caller's thread
      return completed_work();
    }
    if (!q.thread.joinable()) {
      q.thread = std::thread([&q] {
        std::unique_lock lk(q.mu);
        for (;;) {
          q.cv.wait(lk, [&] { return q.stop || !q.tasks.empty(); });
          if (q.tasks.empty()) return;  // stop requested and nothing left
          auto [task, state] = std::move(q.tasks.front());
          q.tasks.pop_front();
          q.busy = true;
          lk.unlock();
          {
            std::lock_guard sl(state->mu);
            state->started = true;
            state->started_at = Clock::now();
          }
          std::exception_ptr err;
          try {
            if (q.stop)
              frugal::detail::fail(ErrorCode::kCommError, "ThreadComm",
                                   "communicator destroyed before the operation ran");
            task();
          } catch (...) {
            err = std::current_exception();
          }
          {
            std::lock_guard sl(state->mu);
            state->done = true;
            state->error = err;
          }
          state->cv.notify_all();
          lk.lock();
          q.busy = false;
        }
      });
    }
  }
  auto state = std::make_shared<detail::WorkState>();
  {
    std::lock_guard lock(q.mu);
    q.tasks.emplace_back(std::move(fn), state);
  }
  q.cv.notify_all();
  return std::make_shared<QueuedWork>(state, timeout(), op);
}

std::shared_ptr<Work> ThreadComm::do_allreduce(TensorView x, ReduceOp op) {
  Header h{OpKind::kAllreduce, x.dtype, op, x.numel(), 0};
  void* data = x.data;
  auto t = timeout();
  return submit("allreduce", [this, h, data, t] { engine_->collective(h, data, data, t); });
}

std::shared_ptr<Work> ThreadComm::do_reduce_scatter(ConstTensorView in, TensorView out,
                                                    ReduceOp op) {
  Header h{OpKind::kReduceScatter, out.dtype, op, out.numel(), 0};
  const void* src = in.data;
  void* dst = out.data;
  auto t = timeout();
  return submit("reduce_scatter", [this, h, src, dst, t] { engine_->collective(h, src, dst, t); });
}

std::shared_ptr<Work> ThreadComm::do_allgather(ConstTensorView in, TensorView out) {
  Header h{OpKind::kAllgather, in.dtype, ReduceOp::kSum, in.numel(), 0};
  const void* src = in.data;
  void* dst = out.data;
  auto t = timeout();
  return submit("allgather", [this, h, src, dst, t] { engine_->collective(h, src, dst, t); });
}

std::shared_ptr<Work> ThreadComm::do_broadcast(TensorView x, int root) {
  Header h{OpKind::kBroadcast, x.dtype, ReduceOp::kSum, x.numel(), root};
  void* data = x.data;
  auto t = timeout();
  return submit("broadcast", [this, h, data, t] { engine_->collective(h, data, data, t); });
}

void ThreadComm::barrier() {
  Header h{};
  auto t = timeout();
  bool saved = in_sync_call_;
  in_sync_call_ = true;
  auto w = submit("barrier", [this, h, t] { engine_->collective(h, nullptr, nullptr, t); });
  in_sync_call_ = saved;
  w->wait();
}

// ---- point to point: a rendezvous, the receiver copies from the sender's buffer ---------------

namespace {

class SendWork final : public Work {
 public:
  SendWork(ThreadGroup& g, int src, int dst, std::shared_ptr<detail::P2pMessage> m,
           std::chrono::milliseconds timeout)
      : g_(g), src_(src), dst_(dst), m_(std::move(m)), timeout_(timeout),
        deadline_(Clock::now() + timeout) {}
  ~SendWork() override {
    // Never leave the address of a buffer the caller may free in the channel.
    auto& ch = g_.channel(src_, dst_);
    std::lock_guard lock(ch.mu);
    std::erase(ch.pending, m_);
  }
  void wait() override {
    auto& ch = g_.channel(src_, dst_);
    std::unique_lock lock(ch.mu);
    while (!m_->done) {
      const int by = g_.aborted_by.load();
      if (by >= 0) {
        std::erase(ch.pending, m_);
        throw_aborted("send", by);
      }
      if (Clock::now() > deadline_) {
        std::erase(ch.pending, m_);
        throw_timeout("send", timeout_, dst_, "the matching recv");
      }
      ch.cv.wait_for(lock, std::chrono::milliseconds(10));
    }
    if (!m_->error.empty()) frugal::detail::fail(ErrorCode::kInvalidArgument, "send", m_->error);
  }
  bool is_completed() override {
    std::lock_guard lock(g_.channel(src_, dst_).mu);
    return m_->done;
  }

 private:
  ThreadGroup& g_;
  int src_, dst_;
  std::shared_ptr<detail::P2pMessage> m_;
  std::chrono::milliseconds timeout_;
  Clock::time_point deadline_;
};

class RecvWork final : public Work {
 public:
  RecvWork(ThreadGroup& g, int src, int dst, TensorView x, int tag,
           std::chrono::milliseconds timeout)
      : g_(g), src_(src), dst_(dst), x_(x), tag_(tag), timeout_(timeout),
        deadline_(Clock::now() + timeout) {}
  void wait() override {
    if (done_) return;
    auto& ch = g_.channel(src_, dst_);
    std::unique_lock lock(ch.mu);
    while (!try_match()) {
      const int by = g_.aborted_by.load();
      if (by >= 0) throw_aborted("recv", by);
      if (Clock::now() > deadline_) throw_timeout("recv", timeout_, src_, "the matching send");
      ch.cv.wait_for(lock, std::chrono::milliseconds(10));
    }
    lock.unlock();
    ch.cv.notify_all();
    if (!error_.empty()) frugal::detail::fail(ErrorCode::kInvalidArgument, "recv", error_);
  }
  bool is_completed() override {
    if (done_) return true;
    auto& ch = g_.channel(src_, dst_);
    bool matched;
    {
      std::lock_guard lock(ch.mu);
      matched = try_match();
    }
    if (matched) ch.cv.notify_all();
    return matched;
  }

 private:
  // Called with the channel locked: takes the first message with our tag and copies it.
  bool try_match() {
    auto& ch = g_.channel(src_, dst_);
    for (auto it = ch.pending.begin(); it != ch.pending.end(); ++it) {
      auto& m = **it;
      if (m.tag != tag_) continue;
      if (m.count != x_.numel() || m.dtype != x_.dtype) {
        error_ = frugal::detail::concat("rank ", src_, " sent ", m.count, " x ",
                                        dtype_name(m.dtype), " but rank ", dst_, " expects ",
                                        x_.numel(), " x ", dtype_name(x_.dtype), " (tag ", tag_,
                                        ")");
        m.error = error_;
      } else if (x_.nbytes() > 0) {
        std::memcpy(x_.data, m.data, static_cast<size_t>(x_.nbytes()));
      }
      m.done = true;
      ch.pending.erase(it);
      done_ = true;
      return true;
    }
    return false;
  }

  ThreadGroup& g_;
  int src_, dst_;
  TensorView x_;
  int tag_;
  std::chrono::milliseconds timeout_;
  Clock::time_point deadline_;
  bool done_ = false;
  std::string error_;
};

}  // namespace

std::shared_ptr<Work> ThreadComm::do_send(ConstTensorView x, int peer, int tag) {
  auto m = std::make_shared<detail::P2pMessage>();
  m->tag = tag;
  m->data = x.data;
  m->count = x.numel();
  m->dtype = x.dtype;
  auto& ch = group_->channel(rank_, peer);
  {
    std::lock_guard lock(ch.mu);
    ch.pending.push_back(m);
  }
  ch.cv.notify_all();
  return std::make_shared<SendWork>(*group_, rank_, peer, m, timeout());
}

std::shared_ptr<Work> ThreadComm::do_recv(TensorView x, int peer, int tag) {
  return std::make_shared<RecvWork>(*group_, peer, rank_, x, tag, timeout());
}

// ---- run_workers ------------------------------------------------------------------------------

void run_workers(int n, const std::function<void(Communicator&)>& fn,
                 const ThreadCommOptions& options) {
  auto comms = ThreadComm::create_group(n, options);
  std::mutex mu;
  std::exception_ptr first;
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      try {
        fn(*comms[r]);
      } catch (...) {
        {
          std::lock_guard lock(mu);
          if (!first) first = std::current_exception();
        }
        comms[r]->abort();
      }
    });
  }
  for (auto& t : threads) t.join();
  if (first) std::rethrow_exception(first);
}

}  // namespace frugal::parallel
