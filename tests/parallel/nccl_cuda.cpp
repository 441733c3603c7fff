// NcclComm at world size 1 on a real GPU (skips without one): collectives give the identity /
// closed-form results, and bad input is rejected; an initialisation whose peer never joins
// raises Timeout instead of hanging.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "frugal/parallel/nccl_comm.hpp"
#include "support/gpu.hpp"

namespace frugal::parallel {
namespace {

TEST(NcclComm, WorldSizeOneCollectives) {
  FRUGAL_REQUIRE_GPU();
  auto comm = NcclComm::create(1, 0, 0, "");
  EXPECT_EQ(comm->size(), 1);
  EXPECT_EQ(comm->backend(), "nccl");
  std::vector<float> v = {1, -2, 3.5f, 4};
  Tensor x = Tensor::from_vector(v, {4}).to(Device::cuda());
  comm->allreduce(x.view(), ReduceOp::kSum);
  EXPECT_EQ(x.to(Device::cpu()).to_vector<float>(), v);  // one rank: the sum is the input
  comm->allreduce(x.view(), ReduceOp::kAvg);
  EXPECT_EQ(x.to(Device::cpu()).to_vector<float>(), v);
  Tensor all = Tensor::zeros({4}, DType::kF32, Device::cuda());
  comm->allgather(x.view(), all.view());
  EXPECT_EQ(all.to(Device::cpu()).to_vector<float>(), v);
  Tensor rs = Tensor::zeros({4}, DType::kF32, Device::cuda());
  comm->reduce_scatter(x.view(), rs.view(), ReduceOp::kMax);
  EXPECT_EQ(rs.to(Device::cpu()).to_vector<float>(), v);
  comm->broadcast(x.view(), 0);
  auto w = comm->allreduce_async(x.view(), ReduceOp::kMin);
  w->wait();
  EXPECT_TRUE(w->is_completed());
  comm->barrier();
  // A host tensor is refused.
  try {
    comm->allreduce(Tensor::zeros({4}).view());
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(std::string(e.what()).rfind("[allreduce]", 0), 0u);
  }
}

TEST(NcclComm, InitWhosePeerNeverJoinsTimesOut) {
  FRUGAL_REQUIRE_GPU();
  using namespace std::chrono_literals;
  // Rank 0 of 2 writes the id and starts the nonblocking init; rank 1 never comes.
  const std::string id_path = ::testing::TempDir() + "/nccl_never_joins.id";
  std::remove(id_path.c_str());
  CommOptions o;
  o.timeout = 2s;
  const auto t0 = std::chrono::steady_clock::now();
  try {
    NcclComm::create(2, 0, 0, id_path, o);
    ADD_FAILURE() << "expected Timeout";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kTimeout) << e.what();
    EXPECT_EQ(std::string(e.what()).rfind("[NcclComm::init]", 0), 0u) << e.what();
  }
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, o.timeout);
  EXPECT_LT(waited, o.timeout + 30s);  // generous: ncclCommAbort tears down the bootstrap
  std::remove(id_path.c_str());
  // The device is still usable: a fresh world-size-1 communicator works.
  auto comm = NcclComm::create(1, 0, 0, "");
  Tensor x = Tensor::from_vector(std::vector<float>{2}, {1}).to(Device::cuda());
  comm->allreduce(x.view(), ReduceOp::kSum);
  EXPECT_EQ(x.to(Device::cpu()).to_vector<float>()[0], 2.0f);
}

}  // namespace
}  // namespace frugal::parallel
