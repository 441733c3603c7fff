// ThreadComm: collectives against closed-form / double references, bit-identical results across
// ranks, async ordering, timeouts, abort, cross-rank mismatches and bad input.
#include "frugal/parallel/thread_comm.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>
#include <thread>

#include "parallel/dp_support.hpp"
#include "support/tolerance.hpp"

namespace frugal::parallel {
namespace {

using namespace std::chrono_literals;

using testing::make_input;
using testing::value_of;

double expected(ReduceOp op, int world, int64_t i, bool integer) {
  double acc = value_of(0, i);
  for (int r = 1; r < world; ++r) {
    const double v = value_of(r, i);
    if (op == ReduceOp::kMax)
      acc = std::max(acc, v);
    else if (op == ReduceOp::kMin)
      acc = std::min(acc, v);
    else
      acc += v;
  }
  if (op == ReduceOp::kAvg) acc = integer ? std::trunc(acc / world) : acc / world;
  return acc;
}

struct Case {
  int world;
  int64_t count;
  DType dtype;
};

ThreadCommOptions small_chunks() {
  ThreadCommOptions o;
  o.chunk_bytes = 256;       // many pipeline pieces per ring chunk
  o.direct_max_bytes = 512;  // most counts below take the ring
  o.comm.timeout = 20s;
  return o;
}

TEST(ThreadComm, AllreduceMatchesReferenceForEveryOpDtypeAndSize) {
  const std::vector<DType> dtypes = {DType::kF32, DType::kF64, DType::kI32,
                                     DType::kI64, DType::kF16, DType::kBF16};
  const std::vector<ReduceOp> ops = {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax,
                                     ReduceOp::kMin};
  for (int world : {1, 2, 3, 4}) {
    for (int64_t count : {int64_t{0}, int64_t{1}, int64_t{3}, int64_t{37}, int64_t{1001}}) {
      for (DType t : dtypes) {
        for (ReduceOp op : ops) {
          std::vector<Tensor> results(static_cast<size_t>(world));
          run_workers(
              world,
              [&](Communicator& c) {
                Tensor x = make_input(c.rank(), count, t);
                c.allreduce(x.view(), op);
                results[c.rank()] = x;
              },
              small_chunks());
          const bool integer = !is_float(t);
          for (int r = 0; r < world; ++r) {
            auto got = results[r].to_vector<double>();
            for (int64_t i = 0; i < count; ++i) {
              double want = expected(op, world, i, integer);
              // Sums of <= 4 integers in [-15, 15]: exact in every dtype; float avg of them is
              // exact only after rounding to the dtype, hence the dtype's half-ulp at 15.
              double tol = (op == ReduceOp::kAvg && !integer) ? 15.0 * 0.004 : 0.0;
              ASSERT_NEAR(got[i], want, tol)
                  << "world " << world << " count " << count << " " << dtype_name(t) << " "
                  << reduce_op_name(op) << " rank " << r << " i " << i;
            }
          }
        }
      }
    }
  }
}

TEST(ThreadComm, RingAndDirectResultsAreBitIdenticalAcrossRanks) {
  for (int64_t direct_max : {int64_t{0}, int64_t{1} << 20}) {  // ring only, direct only
    ThreadCommOptions o;
    o.chunk_bytes = 4096;
    o.direct_max_bytes = direct_max;
    const int world = 3;
    const int64_t n = 10007;
    std::vector<Tensor> results(world);
    run_workers(
        world,
        [&](Communicator& c) {
          Tensor x = testing::random_uniform({n}, 100 + c.rank(), -1.0, 1.0);
          c.allreduce(x.view(), ReduceOp::kAvg);
          results[c.rank()] = x;
        },
        o);
    for (int r = 1; r < world; ++r)
      EXPECT_EQ(0, std::memcmp(results[0].data_ptr(), results[r].data_ptr(), n * sizeof(float)));
    // And close to the double reference.
    std::vector<double> ref(n, 0.0);
    for (int r = 0; r < world; ++r) {
      auto v = testing::random_uniform({n}, 100 + r, -1.0, 1.0).to_vector<double>();
      for (int64_t i = 0; i < n; ++i) ref[i] += v[i] / world;
    }
    auto got = results[0].to_vector<double>();
    for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(got[i], ref[i], 1e-6);  // f32 rounding of 3 adds
  }
}

TEST(ThreadComm, ReduceScatterAllgatherBroadcast) {
  const int world = 3;
  const int64_t n = 5;
  run_workers(world, [&](Communicator& c) {
    const int r = c.rank();
    // reduce_scatter: in holds world * n values; out = sum over ranks of block r.
    Tensor in = make_input(r, world * n, DType::kF64);
    Tensor out = Tensor::zeros({n}, DType::kF64);
    c.reduce_scatter(in.view(), out.view(), ReduceOp::kSum);
    auto o = out.to_vector<double>();
    for (int64_t i = 0; i < n; ++i) {
      double want = 0;
      for (int p = 0; p < world; ++p) want += value_of(p, r * n + i);
      EXPECT_EQ(o[i], want);
    }
    // allgather: block p of out = in of rank p.
    Tensor mine = make_input(r, n, DType::kI64);
    Tensor all = Tensor::zeros({world * n}, DType::kI64);
    c.allgather(mine.view(), all.view());
    auto a = all.to_vector<int64_t>();
    for (int p = 0; p < world; ++p)
      for (int64_t i = 0; i < n; ++i) EXPECT_EQ(a[p * n + i], static_cast<int64_t>(value_of(p, i)));
    // broadcast from rank 2.
    Tensor b = make_input(r, n, DType::kF32);
    c.broadcast(b.view(), 2);
    auto bv = b.to_vector<double>();
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(bv[i], value_of(2, i));
    c.barrier();
  });
}

TEST(ThreadComm, SendRecvRingAndTags) {
  const int world = 3;
  run_workers(world, [&](Communicator& c) {
    const int r = c.rank(), right = (r + 1) % world, left = (r + world - 1) % world;
    Tensor a = make_input(r, 4, DType::kF32), b = make_input(r + 10, 4, DType::kF32);
    auto s1 = c.send_async(a.view(), right, 1);
    auto s2 = c.send_async(b.view(), right, 2);
    Tensor ra = Tensor::zeros({4}), rb = Tensor::zeros({4});
    c.recv(rb.view(), left, 2);  // tags match out of send order
    c.recv(ra.view(), left, 1);
    s1->wait();
    s2->wait();
    auto va = ra.to_vector<double>(), vb = rb.to_vector<double>();
    for (int i = 0; i < 4; ++i) {
      EXPECT_EQ(va[i], value_of(left, i));
      EXPECT_EQ(vb[i], value_of(left + 10, i));
    }
  });
}

TEST(ThreadComm, AsyncOperationsCompleteInOrderAndOverlapCallerWork) {
  run_workers(2, [&](Communicator& c) {
    std::vector<Tensor> xs;
    std::vector<std::shared_ptr<Work>> ws;
    for (int k = 0; k < 6; ++k) {
      xs.push_back(make_input(c.rank() + k, 3000 + 100 * k, DType::kF32));
      ws.push_back(c.allreduce_async(xs.back().view(), ReduceOp::kSum));
    }
    Tensor y = make_input(c.rank(), 10, DType::kF64);
    c.allreduce(y.view(), ReduceOp::kMax);  // a sync call after queued ones waits its turn
    for (auto& w : ws) w->wait();
    for (int k = 0; k < 6; ++k) {
      auto v = xs[k].to_vector<double>();
      for (int64_t i = 0; i < static_cast<int64_t>(v.size()); ++i)
        ASSERT_EQ(v[i], value_of(k, i) + value_of(1 + k, i));
    }
    EXPECT_TRUE(ws[0]->is_completed());
    auto yv = y.to_vector<double>();
    for (int i = 0; i < 10; ++i) EXPECT_EQ(yv[i], std::max(value_of(0, i), value_of(1, i)));
  });
}

TEST(ThreadComm, WorldSizeOneAndFromEnvironment) {
  auto c = Communicator::from_environment();
  ASSERT_EQ(c->size(), 1);
  EXPECT_EQ(c->rank(), 0);
  EXPECT_EQ(c->backend(), "thread");
  Tensor x = make_input(0, 100000, DType::kF32);
  c->allreduce(x.view(), ReduceOp::kAvg);
  EXPECT_EQ(x.to_vector<double>()[5], value_of(0, 5));
  Tensor all = Tensor::zeros({3});
  c->allgather(make_input(0, 3, DType::kF32).view(), all.view());
  EXPECT_EQ(all.to_vector<double>()[2], value_of(0, 2));
  c->barrier();
}

TEST(ThreadComm, StoppedPeerRaisesTimeoutNamingOpAndPeer) {
  ThreadCommOptions o;
  o.comm.timeout = 200ms;
  for (bool large : {false, true}) {
    std::atomic<int> timeouts{0};
    std::string message;
    const auto start = std::chrono::steady_clock::now();
    run_workers(
        2,
        [&](Communicator& c) {
          if (c.rank() == 1) {
            Tensor x = make_input(1, large ? 1 << 20 : 8, DType::kF32);
            c.allreduce(x.view());  // one collective, then this worker stops calling
            return;
          }
          Tensor x = make_input(0, large ? 1 << 20 : 8, DType::kF32);
          c.allreduce(x.view());
          try {
            c.allreduce(x.view());
          } catch (const Error& e) {
            EXPECT_EQ(e.code(), ErrorCode::kTimeout);
            message = e.what();
            ++timeouts;
          }
          // The communicator is unusable afterwards.
          try {
            c.barrier();
            ADD_FAILURE() << "barrier after a timeout should throw";
          } catch (const Error& e) {
            EXPECT_EQ(e.code(), ErrorCode::kCommError);
          }
        },
        o);
    EXPECT_EQ(timeouts.load(), 1);
    EXPECT_EQ(message.rfind("[allreduce]", 0), 0u) << message;
    EXPECT_NE(message.find("rank 1"), std::string::npos) << message;
    // Bounded: the timeout (200 ms) plus slack for a loaded machine.
    EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
  }
}

TEST(ThreadComm, AsyncWaitAndRecvTimeOut) {
  ThreadCommOptions o;
  o.comm.timeout = 150ms;
  run_workers(
      2,
      [&](Communicator& c) {
        if (c.rank() == 1) return;
        Tensor x = Tensor::zeros({4});
        auto w = c.allreduce_async(x.view());
        try {
          w->wait();
          ADD_FAILURE() << "expected Timeout";
        } catch (const Error& e) {
          EXPECT_EQ(e.code(), ErrorCode::kTimeout);
        }
        try {
          c.recv(x.view(), 1);
          ADD_FAILURE() << "expected Timeout";
        } catch (const Error& e) {
          EXPECT_EQ(e.code(), ErrorCode::kTimeout);
          EXPECT_EQ(std::string(e.what()).rfind("[recv]", 0), 0u) << e.what();
        }
      },
      o);
}

TEST(ThreadComm, ThrowingWorkerAbortsGroupAndIsRethrown) {
  std::atomic<int> comm_errors{0};
  const auto start = std::chrono::steady_clock::now();
  try {
    run_workers(3, [&](Communicator& c) {
      if (c.rank() == 2) throw std::runtime_error("worker 2 failed");
      Tensor x = Tensor::zeros({1000});
      try {
        c.allreduce(x.view());
      } catch (const Error& e) {
        if (e.code() == ErrorCode::kCommError) ++comm_errors;
        throw;
      }
    });
    FAIL() << "run_workers should rethrow";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "worker 2 failed");
  }
  EXPECT_EQ(comm_errors.load(), 2);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);  // far below the 5 minute default
}

TEST(ThreadComm, MismatchAcrossRanksIsReportedByEveryRank) {
  std::atomic<int> reported{0};
  run_workers(2, [&](Communicator& c) {
    Tensor x = Tensor::zeros({c.rank() == 0 ? 4 : 5});
    try {
      c.allreduce(x.view());
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      EXPECT_EQ(std::string(e.what()).rfind("[allreduce]", 0), 0u);
      EXPECT_NE(std::string(e.what()).find("4 x f32"), std::string::npos) << e.what();
      ++reported;
    }
    Tensor y = Tensor::zeros({3}, c.rank() == 0 ? DType::kF32 : DType::kF64);
    try {
      c.allreduce(y.view());
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      ++reported;
    }
    // Different collectives at the same point.
    try {
      if (c.rank() == 0)
        c.barrier();
      else
        c.broadcast(y.view(), 0);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      ++reported;
    }
    // The group is still usable.
    Tensor z = make_input(c.rank(), 6, DType::kI32);
    c.allreduce(z.view());
    EXPECT_EQ(z.to_vector<int32_t>()[1], value_of(0, 1) + value_of(1, 1));
  });
  EXPECT_EQ(reported.load(), 6);
}

TEST(ThreadComm, SendRecvMismatchIsReported) {
  ThreadCommOptions o;
  o.comm.timeout = 5s;
  run_workers(
      2,
      [&](Communicator& c) {
        try {
          if (c.rank() == 0)
            c.send(Tensor::zeros({3}).view(), 1);
          else
            c.recv(Tensor::zeros({4}).view(), 0);
          ADD_FAILURE() << "expected a mismatch";
        } catch (const Error& e) {
          EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
        }
      },
      o);
}

void expect_invalid(const std::function<void()>& f, const char* op) {
  try {
    f();
    ADD_FAILURE() << "expected InvalidArgument from " << op;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
    EXPECT_EQ(std::string(e.what()).rfind(std::string("[") + op + "]", 0), 0u) << e.what();
  }
}

TEST(ThreadComm, BadInputIsRejectedBeforeCommunicating) {
  auto comms = ThreadComm::create_group(2);
  auto& c = *comms[0];
  Tensor m = Tensor::zeros({4, 4});
  expect_invalid([&] { c.allreduce(m.t().view()); }, "allreduce");  // not contiguous
  expect_invalid([&] { c.allreduce(Tensor::zeros({4}, DType::kI8).view()); }, "allreduce");
  expect_invalid([&] { c.allreduce(Tensor::zeros({4}, DType::kBool).view()); }, "allreduce");
  expect_invalid([&] { c.reduce_scatter(Tensor::zeros({5}).view(), Tensor::zeros({2}).view()); },
                 "reduce_scatter");
  expect_invalid(
      [&] { c.reduce_scatter(Tensor::zeros({4}).view(), Tensor::zeros({2}, DType::kF64).view()); },
      "reduce_scatter");
  expect_invalid([&] { c.allgather(Tensor::zeros({2}).view(), Tensor::zeros({5}).view()); },
                 "allgather");
  expect_invalid([&] { c.broadcast(Tensor::zeros({2}).view(), 2); }, "broadcast");
  expect_invalid([&] { c.broadcast(Tensor::zeros({2}).view(), -1); }, "broadcast");
  expect_invalid([&] { c.send(Tensor::zeros({2}).view(), 0); }, "send");
  expect_invalid([&] { c.recv(Tensor::zeros({2}).view(), 7); }, "recv");
  expect_invalid([&] { c.send(Tensor::zeros({2}).view(), 1, -3); }, "send");
  expect_invalid([&] { c.set_timeout(std::chrono::milliseconds(0)); }, "set_timeout");
  try {
    ThreadComm::create_group(0);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("[ThreadComm]", 0), 0u);
  }
}

}  // namespace
}  // namespace frugal::parallel
