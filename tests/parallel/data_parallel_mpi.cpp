// nn::DataParallel and ZeroOptimizer over MpiComm under `mpirun -np 2`: equal to one process with
// the whole batch, and a rank that stops mid-run makes the other raise Timeout.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "frugal/nn/data_parallel.hpp"
#include "frugal/nn/loss.hpp"
#include "frugal/nn/models.hpp"
#include "frugal/nn/optim.hpp"
#include "frugal/nn/zero.hpp"
#include "frugal/parallel/mpi_comm.hpp"
#include "support/tolerance.hpp"

namespace frugal::nn {
namespace {

using namespace std::chrono_literals;
constexpr int64_t kBatch = 8, kIn = 6, kOut = 3;
constexpr int kSteps = 5;

std::pair<Tensor, Tensor> batch(int s) {
  return {testing::random_uniform({kBatch, kIn}, 1000 + s).to(DType::kF64),
          testing::random_uniform({kBatch, kOut}, 2000 + s).to(DType::kF64)};
}

SgdOptions sgd() {
  SgdOptions o;
  o.lr = 0.1;
  o.momentum = 0.9;
  o.weight_decay = 1e-3;
  return o;
}

void step(Module& m, Optimizer& opt, const Tensor& x, const Tensor& y, DataParallel* dp) {
  MSELoss loss;
  m.zero_grad();
  loss.forward(m.forward(x), y);
  m.backward(loss.backward());
  if (dp) dp->finish_gradient_sync();
  opt.step();
}

std::vector<double> flat_params(Module& m) {
  std::vector<double> out;
  for (auto& np : m.named_parameters()) {
    auto v = np.param->value.to_vector<double>();
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

std::vector<double> single_process() {
  auto m = make_mlp({kIn, 16, 16, kOut}, 7, DType::kF64);
  SGD opt(m->named_parameters(), sgd());
  for (int s = 0; s < kSteps; ++s) {
    auto [x, y] = batch(s);
    step(*m, opt, x, y, nullptr);
  }
  return flat_params(*m);
}

std::unique_ptr<parallel::Communicator> world() {
  parallel::CommOptions o;
  o.timeout = 30s;
  return parallel::Communicator::from_environment(o);
}

std::pair<Tensor, Tensor> shard(const Tensor& x, const Tensor& y, int rank, int size) {
  const int64_t rows = kBatch / size;
  return {x.slice(0, rank * rows, (rank + 1) * rows).contiguous(),
          y.slice(0, rank * rows, (rank + 1) * rows).contiguous()};
}

TEST(DataParallelMpi, TwoProcessesWithShardsEqualOneProcessWithTheBatch) {
  auto comm = world();
  ASSERT_EQ(comm->backend(), "mpi");
  const auto want = single_process();
  for (int64_t bucket : {int64_t{600}, int64_t{25} << 20}) {
    // A different seed per rank: the constructor's broadcast makes rank 0's replica win.
    auto m = make_mlp({kIn, 16, 16, kOut}, comm->rank() == 0 ? 7 : 8, DType::kF64);
    DataParallelOptions o;
    o.bucket_bytes = bucket;
    o.debug_check = true;
    DataParallel dp(*m, *comm, o);
    SGD opt(m->named_parameters(), sgd());
    for (int s = 0; s < kSteps; ++s) {
      auto [x, y] = batch(s);
      auto [xs, ys] = shard(x, y, comm->rank(), comm->size());
      step(*m, opt, xs, ys, &dp);
    }
    // f64: only the summation order differs (1e-16 relative per op over 5 steps).
    EXPECT_TRUE(testing::all_close(flat_params(*m), want, 0, 1e-12)) << "bucket " << bucket;
  }
}

TEST(DataParallelMpi, ZeroStage1EqualsOneProcess) {
  auto comm = world();
  const auto want = single_process();
  auto m = make_mlp({kIn, 16, 16, kOut}, comm->rank() == 0 ? 7 : 8, DType::kF64);
  ZeroOptimizer opt(*m, *comm, [](const std::vector<NamedParameter>& p) {
    return std::make_unique<SGD>(p, sgd());
  });
  for (int s = 0; s < kSteps; ++s) {
    auto [x, y] = batch(s);
    auto [xs, ys] = shard(x, y, comm->rank(), comm->size());
    step(*m, opt, xs, ys, nullptr);
  }
  EXPECT_TRUE(testing::all_close(flat_params(*m), want, 0, 1e-12));  // as above
}

TEST(DataParallelMpi, RankThatStopsMidRunMakesTheOtherRaiseTimeout) {
  auto comm = world();
  const auto timeout = 500ms;
  auto m = make_mlp({kIn, 16, kOut}, 7, DType::kF64);
  DataParallel dp(*m, *comm);
  SGD opt(m->named_parameters(), sgd());
  comm->set_timeout(timeout);
  for (int s = 0; s < 3; ++s) {
    auto [x, y] = batch(s);
    auto [xs, ys] = shard(x, y, comm->rank(), comm->size());
    if (s < 2 || comm->rank() == 0) {
      const auto t0 = std::chrono::steady_clock::now();
      try {
        step(*m, opt, xs, ys, &dp);
        if (s == 2) ADD_FAILURE() << "rank 0 expected Timeout at step 2";
      } catch (const Error& e) {
        const auto waited = std::chrono::steady_clock::now() - t0;
        EXPECT_EQ(s, 2);
        EXPECT_EQ(e.code(), ErrorCode::kTimeout) << e.what();
        EXPECT_EQ(std::string(e.what()).rfind("[allreduce]", 0), 0u) << e.what();
        // Raised after the configured time, not before (and not after a hang: generous bound).
        EXPECT_GE(waited, timeout);
        EXPECT_LT(waited, timeout + 10s);
      }
    } else {
      // Rank 1 stops for 3x the timeout, then joins the step (completing rank 0's all-reduce).
      std::this_thread::sleep_for(3 * timeout);
      comm->set_timeout(30s);
      step(*m, opt, xs, ys, &dp);
    }
  }
  comm->set_timeout(30s);
  comm->barrier();  // rank 0's polling here also completes the abandoned all-reduce
}

}  // namespace
}  // namespace frugal::nn
