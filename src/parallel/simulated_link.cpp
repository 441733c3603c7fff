// SimulatedLinkComm: the inner communicator moves the data; each handle completes no earlier than
// the modeled link time (sleeping, not spinning).
#include "frugal/parallel/simulated_link.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <thread>

namespace frugal::parallel {
namespace {

using Clock = std::chrono::steady_clock;

class LinkWork final : public Work {
 public:
  LinkWork(const char* op, std::shared_ptr<Work> inner, Clock::time_point issued,
           Clock::time_point ready, std::chrono::milliseconds timeout, double wire_bytes,
           const LinkModel& link)
      : op_(op),
        inner_(std::move(inner)),
        issued_(issued),
        ready_(ready),
        timeout_(timeout),
        wire_bytes_(wire_bytes),
        link_(link) {}

  void wait() override {
    if (done_) return;
    if (!inner_done_) {
      inner_->wait();  // bounded by the inner communicator's timeout (kept equal to ours)
      inner_done_ = true;
    }
    const auto deadline = issued_ + timeout_;
    if (ready_ > deadline) {
      std::this_thread::sleep_until(deadline);
      issued_ = Clock::now();  // a second wait() gets a fresh timeout
      frugal::detail::fail(
          ErrorCode::kTimeout, op_, "timed out after ", timeout_.count(),
          " ms: the simulated link completes it ",
          std::chrono::duration<double, std::milli>(ready_ - deadline + timeout_).count(),
          " ms after the call (", wire_bytes_, " wire bytes at ", link_.bandwidth_bytes_per_s,
          " bytes/s, latency ", link_.latency_s, " s, after the operations ahead of it)");
    }
    std::this_thread::sleep_until(ready_);
    done_ = true;
  }

  bool is_completed() override {
    if (done_) return true;
    return inner_->is_completed() && Clock::now() >= ready_;
  }

 private:
  const char* op_;
  std::shared_ptr<Work> inner_;
  Clock::time_point issued_;
  Clock::time_point ready_;
  std::chrono::milliseconds timeout_;
  double wire_bytes_;
  LinkModel link_;
  bool inner_done_ = false;
  bool done_ = false;
};

/// (N-1)/N: the share of a buffer each rank sends per pass of a ring (0 for one rank).
double ring_fraction(int n) { return n > 1 ? static_cast<double>(n - 1) / n : 0.0; }

}  // namespace

SimulatedLinkComm::SimulatedLinkComm(Communicator& inner, const LinkModel& link)
    : Communicator(inner.options()), inner_(inner), link_(link) {
  FRUGAL_REQUIRE(std::isfinite(link.bandwidth_bytes_per_s) && link.bandwidth_bytes_per_s > 0,
                 "SimulatedLinkComm", "bandwidth must be finite and > 0 bytes/s, got ",
                 link.bandwidth_bytes_per_s);
  FRUGAL_REQUIRE(std::isfinite(link.latency_s) && link.latency_s >= 0, "SimulatedLinkComm",
                 "latency must be finite and >= 0 s, got ", link.latency_s);
}

std::string SimulatedLinkComm::backend() const { return inner_.backend() + "+link"; }

double SimulatedLinkComm::allreduce_seconds(int64_t bytes) const {
  if (size() <= 1) return 0;
  return link_.latency_s +
         2 * ring_fraction(size()) * static_cast<double>(bytes) / link_.bandwidth_bytes_per_s;
}

SimulatedLinkComm::Clock::time_point SimulatedLinkComm::reserve(double wire_bytes, Direction d) {
  const auto now = Clock::now();
  ++stats_.operations;
  if (size() <= 1) return now;  // nothing goes on the wire
  const double seconds = link_.latency_s + wire_bytes / link_.bandwidth_bytes_per_s;
  stats_.wire_bytes += static_cast<int64_t>(std::llround(wire_bytes));
  stats_.busy_seconds += seconds;
  auto start = now;
  if (d != Direction::kRecv) start = std::max(start, send_free_);
  if (d != Direction::kSend) start = std::max(start, recv_free_);
  const auto ready =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  if (d != Direction::kRecv) send_free_ = ready;
  if (d != Direction::kSend) recv_free_ = ready;
  return ready;
}

std::shared_ptr<Work> SimulatedLinkComm::start(const char* op, double wire_bytes, Direction d,
                                               const std::function<std::shared_ptr<Work>()>& run) {
  inner_.set_timeout(timeout());  // a silent peer times out inside as it does here
  const auto issued = Clock::now();
  // The link's clock starts once the inner communicator has taken the operation (as a NIC's
  // transfer starts after the enqueue): CPU time the inner call takes, e.g. ThreadComm's woken
  // background thread preempting the caller, is not counted as transfer time. A synchronous
  // inner call returns when every rank has joined, so the transfer then follows the rendezvous.
  auto w = run();
  const auto ready = reserve(wire_bytes, d);
  return std::make_shared<LinkWork>(op, std::move(w), issued, ready, timeout(), wire_bytes, link_);
}

// A synchronous call runs the inner operation synchronously too (ThreadComm then runs it on the
// caller's thread, as it would without the link) and returns a handle that only sleeps.
std::shared_ptr<Work> SimulatedLinkComm::do_allreduce(TensorView x, ReduceOp op) {
  const double wire = 2 * ring_fraction(size()) * static_cast<double>(x.nbytes());
  return start("allreduce", wire, Direction::kBoth, [&] {
    if (!in_sync_call_) return inner_.allreduce_async(x, op);
    inner_.allreduce(x, op);
    return completed_work();
  });
}

std::shared_ptr<Work> SimulatedLinkComm::do_reduce_scatter(ConstTensorView in, TensorView out,
                                                           ReduceOp op) {
  const double wire = ring_fraction(size()) * static_cast<double>(in.nbytes());
  return start("reduce_scatter", wire, Direction::kBoth, [&] {
    if (!in_sync_call_) return inner_.reduce_scatter_async(in, out, op);
    inner_.reduce_scatter(in, out, op);
    return completed_work();
  });
}

std::shared_ptr<Work> SimulatedLinkComm::do_allgather(ConstTensorView in, TensorView out) {
  const double wire = ring_fraction(size()) * static_cast<double>(out.nbytes());
  return start("allgather", wire, Direction::kBoth, [&] {
    if (!in_sync_call_) return inner_.allgather_async(in, out);
    inner_.allgather(in, out);
    return completed_work();
  });
}

std::shared_ptr<Work> SimulatedLinkComm::do_broadcast(TensorView x, int root) {
  return start("broadcast", static_cast<double>(x.nbytes()), Direction::kBoth, [&] {
    if (!in_sync_call_) return inner_.broadcast_async(x, root);
    inner_.broadcast(x, root);
    return completed_work();
  });
}

std::shared_ptr<Work> SimulatedLinkComm::do_send(ConstTensorView x, int peer, int tag) {
  return start("send", static_cast<double>(x.nbytes()), Direction::kSend,
               [&] { return inner_.send_async(x, peer, tag); });
}

std::shared_ptr<Work> SimulatedLinkComm::do_recv(TensorView x, int peer, int tag) {
  return start("recv", static_cast<double>(x.nbytes()), Direction::kRecv,
               [&] { return inner_.recv_async(x, peer, tag); });
}

void SimulatedLinkComm::barrier() {
  // A barrier is an empty collective: latency only, after the operations ahead of it.
  start("barrier", 0, Direction::kBoth, [&] {
    inner_.barrier();
    return completed_work();
  })->wait();
}

}  // namespace frugal::parallel
