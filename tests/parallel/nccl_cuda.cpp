// NcclComm at world size 1 on a real GPU (skips without one): collectives give the identity /
// closed-form results, and bad input is rejected.
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace frugal::parallel
