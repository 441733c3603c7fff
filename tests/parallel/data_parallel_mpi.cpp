// nn::DataParallel and ZeroOptimizer over MpiComm under `mpirun -np 2`: equal to one process with
// the whole batch, and a rank that stops mid-run makes the other raise Timeout.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "frugal/nn/data_parallel.hpp"
#include "frugal/nn/loss.hpp"
#include "frugal/nn/models.hpp"
#include "frugal/nn/optim.hpp"
#include "frugal/nn/zero.hpp"
#include "frugal/parallel/mpi_comm.hpp"
#include "parallel/dp_support.hpp"
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

using testing::dp_sgd;
using testing::dp_train_step;

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
  SGD opt(m->named_parameters(), dp_sgd());
  for (int s = 0; s < kSteps; ++s) {
    auto [x, y] = batch(s);
    dp_train_step(*m, opt, x, y, nullptr);
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
    SGD opt(m->named_parameters(), dp_sgd());
    for (int s = 0; s < kSteps; ++s) {
      auto [x, y] = batch(s);
      auto [xs, ys] = shard(x, y, comm->rank(), comm->size());
      dp_train_step(*m, opt, xs, ys, &dp);
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
    return std::make_unique<SGD>(p, dp_sgd());
  });
  for (int s = 0; s < kSteps; ++s) {
    auto [x, y] = batch(s);
    auto [xs, ys] = shard(x, y, comm->rank(), comm->size());
    dp_train_step(*m, opt, xs, ys, nullptr);
  }
  EXPECT_TRUE(testing::all_close(flat_params(*m), want, 0, 1e-12));  // as above
}

TEST(DataParallelMpi, ZeroCheckpointResumesBitIdentical) {
  auto comm = world();
  // One path for both processes (same machine, same TempDir); each rank writes its own shard.
  const std::string path = ::testing::TempDir() + "/zero_mpi_checkpoint.safetensors";
  auto make_opt = [](const std::vector<NamedParameter>& p) -> std::unique_ptr<Optimizer> {
    return std::make_unique<AdamW>(p, AdamWOptions{});
  };
  auto run = [&](Module& m, Optimizer& opt, int from, int to) {
    for (int s = from; s < to; ++s) {
      auto [x, y] = batch(s);
      auto [xs, ys] = shard(x, y, comm->rank(), comm->size());
      dp_train_step(m, opt, xs, ys, nullptr);
    }
  };
  auto m = make_mlp({kIn, 16, 16, kOut}, 7, DType::kF64);
  ZeroOptimizer opt(*m, *comm, make_opt);
  run(*m, opt, 0, 3);
  TrainState st;
  st.step = 3;
  save_parallel_checkpoint(path, *comm, *m, &opt, st);
  run(*m, opt, 3, kSteps);
  const auto straight = flat_params(*m);

  auto fresh = make_mlp({kIn, 16, 16, kOut}, 30 + comm->rank(), DType::kF64);
  ZeroOptimizer resumed(*fresh, *comm, make_opt);
  EXPECT_EQ(load_parallel_checkpoint(path, *comm, *fresh, &resumed).step, 3);
  run(*fresh, resumed, 3, kSteps);
  EXPECT_EQ(flat_params(*fresh), straight);  // same ops in the same order: bit-identical
  comm->barrier();
  std::remove(zero_shard_path(path, comm->rank(), comm->size()).c_str());
  if (comm->rank() == 0) std::remove(path.c_str());
}

TEST(DataParallelMpi, RankThatStopsMidRunMakesTheOtherRaiseTimeout) {
  auto comm = world();
  const auto timeout = 500ms;
  auto m = make_mlp({kIn, 16, kOut}, 7, DType::kF64);
  DataParallel dp(*m, *comm);
  SGD opt(m->named_parameters(), dp_sgd());
  comm->set_timeout(timeout);
  for (int s = 0; s < 3; ++s) {
    auto [x, y] = batch(s);
    auto [xs, ys] = shard(x, y, comm->rank(), comm->size());
    if (s < 2 || comm->rank() == 0) {
      const auto t0 = std::chrono::steady_clock::now();
      try {
        dp_train_step(*m, opt, xs, ys, &dp);
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
      dp_train_step(*m, opt, xs, ys, &dp);
    }
  }
  comm->set_timeout(30s);
  comm->barrier();  // rank 0's polling here also completes the abandoned all-reduce
}

}  // namespace
}  // namespace frugal::nn
