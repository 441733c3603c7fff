// MpiComm under `mpirun -np 2`: collectives against references, identical results to ThreadComm
// for integer-valued data, header checks, timeouts of a silent peer.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <thread>

#include "frugal/parallel/mpi_comm.hpp"
#include "frugal/parallel/simulated_link.hpp"
#include "frugal/parallel/thread_comm.hpp"
#include "parallel/dp_support.hpp"

namespace frugal::parallel {
namespace {

using namespace std::chrono_literals;

using testing::make_input;
using testing::value_of;

std::unique_ptr<Communicator> world() {
  CommOptions o;
  o.timeout = 30s;
  return Communicator::from_environment(o);
}

TEST(MpiComm, FromEnvironmentPicksMpi) {
  auto c = world();
  EXPECT_EQ(c->backend(), "mpi");
  EXPECT_EQ(c->size(), 2);
  EXPECT_TRUE(launched_by_mpirun());
}

TEST(MpiComm, AllreduceIdenticalToThreadCommForIntegerValuedData) {
  auto c = world();
  const int world_size = c->size();
  for (DType t : {DType::kF32, DType::kF64, DType::kI32, DType::kI64, DType::kF16, DType::kBF16}) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin}) {
      for (int64_t n : {int64_t{1}, int64_t{1000}, int64_t{100000}}) {
        Tensor x = make_input(c->rank(), n, t);
        c->allreduce(x.view(), op);
        // The same reduction among threads in this process.
        std::vector<Tensor> thread_results(world_size);
        run_workers(world_size, [&](Communicator& tc) {
          Tensor y = make_input(tc.rank(), n, t);
          tc.allreduce(y.view(), op);
          thread_results[tc.rank()] = y;
        });
        ASSERT_EQ(0, std::memcmp(x.data_ptr(), thread_results[0].data_ptr(), x.nbytes()))
            << dtype_name(t) << " " << reduce_op_name(op) << " n " << n;
        // And the closed form at a few points.
        auto v = x.to_vector<double>();
        for (int64_t i : {int64_t{0}, n - 1}) {
          double a = value_of(0, i), b = value_of(1, i);
          double want = op == ReduceOp::kMax   ? std::max(a, b)
                        : op == ReduceOp::kMin ? std::min(a, b)
                        : op == ReduceOp::kSum ? a + b
                        : is_float(t)          ? (a + b) / 2
                                               : std::trunc((a + b) / 2);
          EXPECT_EQ(v[i], want);
        }
      }
    }
  }
}

TEST(MpiComm, ReduceScatterAllgatherBroadcastSendRecvBarrier) {
  auto c = world();
  const int r = c->rank(), size = c->size();
  const int64_t n = 7;
  Tensor in = make_input(r, size * n, DType::kF64);
  Tensor out = Tensor::zeros({n}, DType::kF64);
  c->reduce_scatter(in.view(), out.view(), ReduceOp::kSum);
  auto o = out.to_vector<double>();
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(o[i], value_of(0, r * n + i) + value_of(1, r * n + i));

  Tensor all = Tensor::zeros({size * n}, DType::kI32);
  c->allgather(make_input(r, n, DType::kI32).view(), all.view());
  auto a = all.to_vector<int32_t>();
  for (int p = 0; p < size; ++p)
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(a[p * n + i], value_of(p, i));

  Tensor b = make_input(r, n, DType::kF32);
  c->broadcast(b.view(), 1);
  EXPECT_EQ(b.to_vector<double>()[3], value_of(1, 3));

  Tensor s = make_input(r, n, DType::kF32), got = Tensor::zeros({n});
  auto sw = c->send_async(s.view(), 1 - r, 5);
  c->recv(got.view(), 1 - r, 5);
  sw->wait();
  EXPECT_EQ(got.to_vector<double>()[2], value_of(1 - r, 2));
  c->barrier();
}

TEST(MpiComm, ConsistencyCheckReportsMismatchedSizes) {
  CommOptions o;
  o.timeout = 30s;
  o.check_consistency = true;
  auto c = Communicator::from_environment(o);
  Tensor x = Tensor::zeros({c->rank() == 0 ? 3 : 4});
  try {
    c->allreduce(x.view());
    ADD_FAILURE() << "expected a mismatch";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(std::string(e.what()).rfind("[allreduce]", 0), 0u) << e.what();
  }
  Tensor y = make_input(c->rank(), 4, DType::kI64);  // still usable
  c->allreduce(y.view());
  EXPECT_EQ(y.to_vector<int64_t>()[1], value_of(0, 1) + value_of(1, 1));
}

TEST(MpiComm, SilentPeerRaisesTimeout) {
  auto c = world();
  c->set_timeout(300ms);
  Tensor x = make_input(c->rank(), 16, DType::kF32);
  if (c->rank() == 0) {
    // Rank 1 does not send: the receive times out, naming the peer.
    Tensor got = Tensor::zeros({16});
    try {
      c->recv(got.view(), 1, 9);
      ADD_FAILURE() << "expected Timeout";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kTimeout);
      EXPECT_EQ(std::string(e.what()).rfind("[recv]", 0), 0u) << e.what();
      EXPECT_NE(std::string(e.what()).find("rank 1"), std::string::npos) << e.what();
    }
    // Rank 1 joins this allreduce late: the first wait times out, a second wait completes it.
    auto w = c->allreduce_async(x.view());
    testing::expect_wait_times_out(*w, "[allreduce]");
    // The handle keeps the timeout it was started with (300 ms): wait again until rank 1 joins.
    testing::wait_until_peer_arrives(*w);
    c->set_timeout(30s);
  } else {
    std::this_thread::sleep_for(1500ms);
    c->set_timeout(30s);
    c->allreduce(x.view());
  }
  EXPECT_EQ(x.to_vector<double>()[0], value_of(0, 0) + value_of(1, 0));
  c->barrier();
}

TEST(MpiComm, LargeAllreduceTimesOutThenCompletesWhenThePeerArrives) {
  // 2 MiB: the progress-thread path when MPI provides MPI_THREAD_MULTIPLE, else the split path.
  auto c = world();
  const int64_t n = 512 * 1024;
  Tensor x = make_input(c->rank(), n, DType::kF32);
  if (c->rank() == 0) {
    c->set_timeout(300ms);
    auto w = c->allreduce_async(x.view(), ReduceOp::kAvg);
    testing::expect_wait_times_out(*w, "[allreduce]");
    testing::wait_until_peer_arrives(*w);
    c->set_timeout(30s);
  } else {
    std::this_thread::sleep_for(1500ms);
    c->allreduce(x.view(), ReduceOp::kAvg);
  }
  auto v = x.to_vector<double>();
  for (int64_t i : {int64_t{0}, int64_t{12345}, n - 1})
    EXPECT_EQ(v[i], (value_of(0, i) + value_of(1, i)) / 2);  // small integers: exact in f32
  c->barrier();
}

TEST(MpiComm, UnderASimulatedLinkGivesTheSameResults) {
  // The link decorator over MpiComm: the same bits as MpiComm alone, small and large (progress
  // thread) all-reduces, sync and async; a silent peer still times out through it.
  auto c = world();
  SimulatedLinkComm link(*c, {1e9, 20e-6});
  EXPECT_EQ(link.backend(), "mpi+link");
  for (int64_t n : {int64_t{1000}, int64_t{512 * 1024}}) {
    Tensor a = make_input(c->rank(), n, DType::kF32), b = a.clone();
    c->allreduce(a.view(), ReduceOp::kAvg);
    link.allreduce_async(b.view(), ReduceOp::kAvg)->wait();
    EXPECT_EQ(0, std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes())) << n;
    link.allreduce(b.view(), ReduceOp::kMax);
    c->allreduce(a.view(), ReduceOp::kMax);
    EXPECT_EQ(0, std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes())) << n;
  }
  link.barrier();
  link.set_timeout(300ms);  // applied to MpiComm too
  Tensor x = make_input(c->rank(), 16, DType::kF32);
  if (c->rank() == 0) {
    auto w = link.allreduce_async(x.view());
    testing::expect_wait_times_out(*w, "[allreduce]");
    testing::wait_until_peer_arrives(*w);
  } else {
    std::this_thread::sleep_for(1500ms);
    link.allreduce(x.view());
  }
  EXPECT_EQ(x.to_vector<double>()[0], value_of(0, 0) + value_of(1, 0));
  link.set_timeout(30s);
  link.barrier();
}

}  // namespace
}  // namespace frugal::parallel
