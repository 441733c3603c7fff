#pragma once
/// SimulatedLinkComm: a Communicator decorator that makes another communicator behave as if its
/// ranks were joined by a network link of a given bandwidth and latency. The data still moves
/// through the inner communicator (results are the inner communicator's, bit for bit); what
/// changes is WHEN an operation completes: no earlier than
///
///     latency + wire_bytes / bandwidth
///
/// after the inner communicator has taken it and the link is free for it, with wire_bytes what one
/// rank sends over its link in the ring algorithms (Patarasuk & Yuan 2009): allreduce 2(N-1)/N *
/// bytes, reduce_scatter and allgather (N-1)/N * (the N-times larger buffer), broadcast and send /
/// recv the message bytes. The link is full duplex and carries one operation at a time in call
/// order (one NCCL stream, one NIC): collectives occupy both directions, a send only the outgoing
/// one, a recv only the incoming one. World size 1 sends nothing and takes no time.
///
/// Waiting for the modeled time SLEEPS (no CPU is used, as with a NIC's DMA or NCCL's copy
/// engines), so a run on a machine whose cores are busy computing can show how much of the
/// communication a data-parallel step hides behind backward on a given network; use it to plan
/// a run on a slower network (e.g. 1 Gb/s Ethernet between machines) before renting one.
///
/// Model limits: the link's clock for an asynchronous operation starts when this rank has handed
/// it to the inner communicator (or when this rank's previous operation leaves the link), not
/// when the last peer joins; a late peer still delays completion through the inner operation,
/// but the modeled transfer then overlaps that wait instead of following it. (A synchronous call
/// runs the inner operation first, so its transfer follows the rendezvous.) Contention between
/// ranks sharing a switch, congestion and protocol overheads are not modeled.
///
/// Timeouts: the inner communicator's timeout is kept equal to this one's; a peer that does not
/// call raises the inner Timeout, and an operation whose modeled time exceeds the timeout raises
/// Error(kTimeout, "[allreduce] timed out after ... ms: the simulated link needs ...") when the
/// timeout has passed (a second wait() gets a fresh timeout, as MpiComm's).
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "frugal/parallel/communicator.hpp"

namespace frugal::parallel {

/// One rank's network link.
struct LinkModel {
  /// Bytes per second in each direction (> 0); 1.25e8 is 1 Gb/s Ethernet, 1.25e9 10 Gb/s.
  double bandwidth_bytes_per_s = 1.25e9;
  /// Seconds every operation pays once, whatever its size (>= 0); ~50e-6 for TCP over Ethernet.
  double latency_s = 50e-6;
};

/// Totals of the operations a SimulatedLinkComm has started.
struct LinkStats {
  int64_t operations = 0;  ///< operations started (barriers included)
  int64_t wire_bytes = 0;  ///< bytes this rank sent (or received, for recv) over the link
  /// Seconds of modeled link time (latency + wire bytes / bandwidth), summed over operations:
  /// the communication time with nothing else running.
  double busy_seconds = 0;
};

/// A communicator whose operations complete as if over a link of the given bandwidth and
/// latency. Keeps a reference to `inner`, which must outlive it. Operations called on `inner`
/// directly are not delayed and not counted (every rank must still call the same sequence).
class SimulatedLinkComm final : public Communicator {
 public:
  /// Throws InvalidArgument ("[SimulatedLinkComm] ...") unless bandwidth > 0 and latency >= 0
  /// (both finite). Takes the inner communicator's options (timeout, consistency checks).
  SimulatedLinkComm(Communicator& inner, const LinkModel& link);

  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  /// The inner backend's name followed by "+link" ("thread+link").
  std::string backend() const override;
  Device device() const override { return inner_.device(); }
  /// The inner barrier, then the link's latency (after the operations ahead of it on the link).
  void barrier() override;

  const LinkModel& link() const { return link_; }
  const LinkStats& link_stats() const { return stats_; }
  /// Modeled seconds of one all-reduce of `bytes` on an idle link: latency + 2(N-1)/N bytes / bw
  /// (0 for world size 1). For planning: the all-reduce time of a model's gradients.
  double allreduce_seconds(int64_t bytes) const;

 protected:
  std::shared_ptr<Work> do_allreduce(TensorView x, ReduceOp op) override;
  std::shared_ptr<Work> do_reduce_scatter(ConstTensorView in, TensorView out, ReduceOp op) override;
  std::shared_ptr<Work> do_allgather(ConstTensorView in, TensorView out) override;
  std::shared_ptr<Work> do_broadcast(TensorView x, int root) override;
  std::shared_ptr<Work> do_send(ConstTensorView x, int peer, int tag) override;
  std::shared_ptr<Work> do_recv(TensorView x, int peer, int tag) override;

 private:
  using Clock = std::chrono::steady_clock;
  /// Which directions of the full-duplex link an operation occupies.
  enum class Direction { kBoth, kSend, kRecv };
  /// Reserves the link for `wire_bytes` and returns the modeled completion time.
  Clock::time_point reserve(double wire_bytes, Direction d);
  /// Reserves the link, runs the inner operation and returns its handle wrapped with the
  /// modeled completion time.
  std::shared_ptr<Work> start(const char* op, double wire_bytes, Direction d,
                              const std::function<std::shared_ptr<Work>()>& run);

  Communicator& inner_;
  LinkModel link_;
  LinkStats stats_;
  Clock::time_point send_free_{};  // when the outgoing direction is free again
  Clock::time_point recv_free_{};  // when the incoming direction is free again
};

}  // namespace frugal::parallel
