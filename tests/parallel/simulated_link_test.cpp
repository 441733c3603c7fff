// SimulatedLinkComm: the results are the inner communicator's bit for bit, the link's bookkeeping
// (wire bytes, modeled seconds) matches the ring formulas, timeouts are still raised (silent peer,
// link too slow for the timeout), bad input. No timing assertions.
#include "frugal/parallel/simulated_link.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <thread>

#include "frugal/parallel/thread_comm.hpp"
#include "parallel/dp_support.hpp"
#include "support/check.hpp"

namespace frugal::parallel {
namespace {

using namespace std::chrono_literals;

using testing::make_input;
using testing::value_of;

// A fast link: the tests check results, not time.
LinkModel fast_link() { return {1e10, 1e-6}; }

ThreadCommOptions comm_options() {
  ThreadCommOptions o;
  o.comm.timeout = 20s;
  o.direct_max_bytes = 512;  // the larger sizes below take the ring
  o.chunk_bytes = 256;
  return o;
}

// Every collective and point-to-point operation of rank r, sync and async, on `c`; the outputs in
// call order.
std::vector<Tensor> exercise(Communicator& c, DType t, int64_t n) {
  const int r = c.rank(), k = c.size();
  std::vector<Tensor> out;
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin}) {
    Tensor x = make_input(r, n, t);
    c.allreduce(x.view(), op);
    out.push_back(x);
    Tensor y = make_input(r + 5, n, t);
    c.allreduce_async(y.view(), op)->wait();
    out.push_back(y);
  }
  Tensor in = make_input(r, k * n, t);
  Tensor rs = Tensor::zeros({n}, t);
  c.reduce_scatter(in.view(), rs.view(), ReduceOp::kSum);
  out.push_back(rs);
  Tensor ag = Tensor::zeros({k * n}, t);
  c.allgather_async(make_input(r, n, t).view(), ag.view())->wait();
  out.push_back(ag);
  Tensor b = make_input(r, n, t);
  c.broadcast(b.view(), k - 1);
  out.push_back(b);
  // A ring exchange: send to the right, receive from the left.
  if (k > 1) {
    Tensor s = make_input(r, n, t), got = Tensor::zeros({n}, t);
    auto ws = c.send_async(s.view(), (r + 1) % k, 3);
    c.recv(got.view(), (r + k - 1) % k, 3);
    ws->wait();
    out.push_back(got);
  }
  c.barrier();
  return out;
}

TEST(SimulatedLinkComm, ResultsIdenticalToTheInnerCommunicator) {
  for (int world : {1, 2, 3}) {
    for (DType t : {DType::kF32, DType::kF64, DType::kBF16, DType::kI32}) {
      for (int64_t n : {int64_t{0}, int64_t{5}, int64_t{1001}}) {
        std::vector<std::vector<Tensor>> plain(world), linked(world);
        run_workers(
            world, [&](Communicator& c) { plain[c.rank()] = exercise(c, t, n); }, comm_options());
        run_workers(
            world,
            [&](Communicator& c) {
              SimulatedLinkComm link(c, fast_link());
              EXPECT_EQ(link.rank(), c.rank());
              EXPECT_EQ(link.size(), c.size());
              EXPECT_EQ(link.backend(), "thread+link");
              linked[c.rank()] = exercise(link, t, n);
            },
            comm_options());
        for (int r = 0; r < world; ++r) {
          ASSERT_EQ(plain[r].size(), linked[r].size());
          for (size_t i = 0; i < plain[r].size(); ++i)
            ASSERT_TRUE(testing::same_bits(plain[r][i], linked[r][i]))
                << "world " << world << " " << dtype_name(t) << " n " << n << " output " << i;
        }
      }
    }
  }
}

TEST(SimulatedLinkComm, ResultsMatchTheClosedForm) {
  // Independent of the inner communicator: the sum over 3 ranks of integer-valued inputs.
  const int64_t n = 777;
  run_workers(
      3,
      [&](Communicator& c) {
        SimulatedLinkComm link(c, {1e9, 20e-6});
        Tensor x = make_input(c.rank(), n, DType::kF64);
        auto w = link.allreduce_async(x.view(), ReduceOp::kSum);
        w->wait();
        EXPECT_TRUE(w->is_completed());
        w->wait();  // a second wait does nothing
        auto v = x.to_vector<double>();
        for (int64_t i = 0; i < n; ++i)
          ASSERT_EQ(v[i], value_of(0, i) + value_of(1, i) + value_of(2, i)) << i;
      },
      comm_options());
}

TEST(SimulatedLinkComm, WireBytesAndModeledSecondsFollowTheRingFormulas) {
  const double bw = 1e9, lat = 1e-5;
  for (int world : {1, 2, 4}) {
    std::vector<LinkStats> stats(world);
    std::vector<double> planned(world);
    run_workers(
        world,
        [&](Communicator& c) {
          SimulatedLinkComm link(c, {bw, lat});
          const int k = c.size();
          Tensor x = Tensor::zeros({1000}, DType::kF32);  // 4000 bytes
          link.allreduce(x.view());                       // 2 (k-1)/k 4000
          Tensor big = Tensor::zeros({1000 * k}, DType::kF32);
          link.reduce_scatter(big.view(), x.view());  // (k-1)/k 4000 k
          link.allgather(x.view(), big.view());       // (k-1)/k 4000 k
          link.broadcast(x.view());                   // 4000
          link.barrier();                             // latency only
          stats[c.rank()] = link.link_stats();
          planned[c.rank()] = link.allreduce_seconds(4000);
        },
        comm_options());
    const double f = static_cast<double>(world - 1) / world;
    const double wire = world == 1 ? 0 : 2 * f * 4000 + f * 4000 * world * 2 + 4000;
    for (int r = 0; r < world; ++r) {
      EXPECT_EQ(stats[r].operations, 5);
      EXPECT_EQ(stats[r].wire_bytes, static_cast<int64_t>(std::llround(wire)));
      // Sums of 5 terms in double: a few ulps.
      EXPECT_NEAR(stats[r].busy_seconds, world == 1 ? 0 : 5 * lat + wire / bw, 1e-15);
      EXPECT_NEAR(planned[r], world == 1 ? 0 : lat + 2 * f * 4000 / bw, 1e-15);
    }
  }
}

TEST(SimulatedLinkComm, SilentPeerStillTimesOut) {
  ThreadCommOptions o = comm_options();
  o.comm.timeout = 200ms;
  run_workers(
      2,
      [&](Communicator& c) {
        SimulatedLinkComm link(c, fast_link());
        EXPECT_EQ(link.timeout(), 200ms);
        if (c.rank() == 1) return;  // never calls
        Tensor x = Tensor::zeros({64}, DType::kF32);
        auto w = link.allreduce_async(x.view());
        testing::expect_wait_times_out(*w, "[allreduce]");
      },
      o);
}

TEST(SimulatedLinkComm, LinkTooSlowForTheTimeoutRaisesTimeout) {
  ThreadCommOptions o = comm_options();
  run_workers(
      2,
      [&](Communicator& c) {
        SimulatedLinkComm link(c, {100, 0});  // 100 B/s: 4000 bytes take 40 s
        // Also applied to the inner communicator, which has this long to move the data (ample:
        // both ranks call at once).
        link.set_timeout(500ms);
        Tensor x = make_input(c.rank(), 1000, DType::kF32);
        auto w = link.allreduce_async(x.view(), ReduceOp::kSum);
        EXPECT_FALSE(w->is_completed());
        testing::expect_wait_times_out(*w, "[allreduce]");
        testing::expect_wait_times_out(*w, "[allreduce]");  // a fresh timeout, still too short
        // The data moved through the inner communicator all the same.
        auto v = x.to_vector<double>();
        for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(v[i], value_of(0, i) + value_of(1, i));
        testing::expect_error([&] { link.barrier(); }, ErrorCode::kTimeout, "barrier",
                              "simulated link");
      },
      o);
}

TEST(SimulatedLinkComm, BadInput) {
  auto group = ThreadComm::create_group(1);
  Communicator& c = *group[0];
  for (double bw : {0.0, -1.0, std::nan(""), std::numeric_limits<double>::infinity()})
    testing::expect_error(
        [&] {
          SimulatedLinkComm l(c, {bw, 0});
        },
        ErrorCode::kInvalidArgument, "SimulatedLinkComm", "bandwidth");
  for (double lat : {-1e-6, std::nan("")})
    testing::expect_error(
        [&] {
          SimulatedLinkComm l(c, {1e9, lat});
        },
        ErrorCode::kInvalidArgument, "SimulatedLinkComm", "latency");
  SimulatedLinkComm link(c, fast_link());
  Tensor u8 = Tensor::zeros({4}, DType::kU8);
  testing::expect_error([&] { link.allreduce(u8.view()); }, ErrorCode::kInvalidArgument,
                        "allreduce", "dtype");
  Tensor x = Tensor::zeros({4}, DType::kF32), y = Tensor::zeros({3}, DType::kF32);
  testing::expect_error([&] { link.allgather(x.view(), y.view()); }, ErrorCode::kInvalidArgument,
                        "allgather");
  testing::expect_error([&] { link.set_timeout(0ms); }, ErrorCode::kInvalidArgument, "set_timeout");
  EXPECT_EQ(link.link_stats().operations, 0);  // nothing was started
}

}  // namespace
}  // namespace frugal::parallel
