// nn::DataParallel over ThreadComm: K workers with B / K rows each equal one worker with B rows
// after N SGD steps; initial broadcast; bucket overlap; the parameter checksum check.
#include <gtest/gtest.h>

#include <mutex>

#include "frugal/nn/activation.hpp"
#include "frugal/nn/data_parallel.hpp"
#include "frugal/nn/linear.hpp"
#include "frugal/nn/loss.hpp"
#include "frugal/nn/optim.hpp"
#include "frugal/parallel/thread_comm.hpp"
#include "support/tolerance.hpp"

namespace frugal::nn {
namespace {

constexpr int64_t kIn = 6, kHidden = 16, kOut = 3, kBatch = 8;
constexpr int kSteps = 5;

std::shared_ptr<Sequential> make_mlp(uint64_t seed, DType t) {
  auto m = std::make_shared<Sequential>();
  m->add(std::make_shared<Linear>(kIn, kHidden, true, seed, t));
  m->add(std::make_shared<ReLU>());
  m->add(std::make_shared<Linear>(kHidden, kHidden, true, seed + 1, t));
  m->add(std::make_shared<ReLU>());
  m->add(std::make_shared<Linear>(kHidden, kOut, true, seed + 2, t));
  return m;
}

// The full batch of step s: rows [k * B / K, (k + 1) * B / K) are worker k's shard.
std::pair<Tensor, Tensor> batch(int s, DType t) {
  return {testing::random_uniform({kBatch, kIn}, 1000 + s).to(t),
          testing::random_uniform({kBatch, kOut}, 2000 + s).to(t)};
}

SgdOptions sgd() {
  SgdOptions o;
  o.lr = 0.1;
  o.momentum = 0.9;
  o.weight_decay = 1e-3;
  return o;
}

void train_step(Module& m, Optimizer& opt, const Tensor& x, const Tensor& y, DataParallel* dp) {
  MSELoss loss;
  m.zero_grad();
  Tensor pred = m.forward(x);
  loss.forward(pred, y);
  m.backward(loss.backward());
  if (dp) dp->finish_gradient_sync();
  opt.step();
}

std::vector<std::vector<double>> params_of(Module& m) {
  std::vector<std::vector<double>> out;
  for (auto& np : m.named_parameters()) out.push_back(np.param->value.to_vector<double>());
  return out;
}

std::vector<std::vector<double>> train_single(DType t) {
  auto m = make_mlp(7, t);
  SGD opt(m->named_parameters(), sgd());
  for (int s = 0; s < kSteps; ++s) {
    auto [x, y] = batch(s, t);
    train_step(*m, opt, x, y, nullptr);
  }
  return params_of(*m);
}

std::vector<std::vector<std::vector<double>>> train_parallel(int k, DType t,
                                                             const DataParallelOptions& o) {
  std::vector<std::vector<std::vector<double>>> result(k);
  parallel::run_workers(k, [&](parallel::Communicator& comm) {
    // A different seed per rank: the constructor's broadcast must make rank 0's replica win.
    auto m = make_mlp(comm.rank() == 0 ? 7 : 50 + comm.rank(), t);
    DataParallel dp(*m, comm, o);
    SGD opt(m->named_parameters(), sgd());
    const int64_t rows = kBatch / k;
    for (int s = 0; s < kSteps; ++s) {
      auto [x, y] = batch(s, t);
      Tensor xs = x.slice(0, comm.rank() * rows, (comm.rank() + 1) * rows).contiguous();
      Tensor ys = y.slice(0, comm.rank() * rows, (comm.rank() + 1) * rows).contiguous();
      train_step(*m, opt, xs, ys, &dp);
      if (o.overlap) EXPECT_EQ(dp.stats().launched_in_backward, dp.stats().buckets);
      else EXPECT_EQ(dp.stats().launched_in_backward, 0);
    }
    dp.check_parameters_in_sync();
    result[comm.rank()] = params_of(*m);
  });
  return result;
}

void expect_close(const std::vector<std::vector<double>>& a,
                  const std::vector<std::vector<double>>& b, double tol) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t p = 0; p < a.size(); ++p) {
    ASSERT_EQ(a[p].size(), b[p].size());
    for (size_t i = 0; i < a[p].size(); ++i)
      ASSERT_NEAR(a[p][i], b[p][i], tol) << "parameter " << p << " element " << i;
  }
}

TEST(DataParallel, KWorkersWithShardsEqualOneWorkerWithTheBatch) {
  for (DType t : {DType::kF64, DType::kF32}) {
    const auto single = train_single(t);
    // f64: only summation order differs (about 1e-16 relative per op over 5 steps);
    // f32: the same differences at float epsilon, amplified by momentum over 5 steps.
    const double tol = t == DType::kF64 ? 1e-12 : 2e-5;
    for (int k : {2, 4}) {
      for (int64_t bucket : {int64_t{1}, int64_t{600}, int64_t{25} << 20}) {
        for (bool overlap : {true, false}) {
          DataParallelOptions o;
          o.bucket_bytes = bucket;
          o.overlap = overlap;
          o.debug_check = true;
          auto replicas = train_parallel(k, t, o);
          for (int r = 0; r < k; ++r) {
            SCOPED_TRACE(::testing::Message() << dtype_name(t) << " K=" << k << " bucket=" << bucket
                                            << " overlap=" << overlap << " rank " << r);
            expect_close(replicas[r], single, tol);
            EXPECT_EQ(replicas[r], replicas[0]);  // bit-identical replicas
          }
        }
      }
    }
  }
}

TEST(DataParallel, BucketsFollowReverseLayerOrderAndSize) {
  parallel::run_workers(2, [&](parallel::Communicator& comm) {
    auto m = make_mlp(1, DType::kF32);
    DataParallelOptions o;
    o.bucket_bytes = 25 << 20;
    DataParallel one(*m, comm, o);
    EXPECT_EQ(one.stats().buckets, 1);
    EXPECT_EQ(one.stats().bytes_per_step, m->num_parameters() * 4);
  });
  parallel::run_workers(2, [&](parallel::Communicator& comm) {
    auto m = make_mlp(1, DType::kF32);
    DataParallelOptions o;
    o.bucket_bytes = 1;  // one bucket per parameter
    DataParallel dp(*m, comm, o);
    EXPECT_EQ(dp.stats().buckets, 6);
  });
}

TEST(DataParallel, CheckDetectsDivergedReplicas) {
  std::mutex mu;
  int detected = 0;
  parallel::run_workers(2, [&](parallel::Communicator& comm) {
    auto m = make_mlp(3, DType::kF32);
    DataParallel dp(*m, comm);
    dp.check_parameters_in_sync();  // equal after the broadcast
    if (comm.rank() == 1) {
      auto& w = m->named_parameters()[0].param->value;
      w.data<float>()[0] += 1e-6f;
    }
    try {
      dp.check_parameters_in_sync();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kCommError);
      EXPECT_EQ(std::string(e.what()).rfind("[DataParallel]", 0), 0u) << e.what();
      std::lock_guard lock(mu);
      ++detected;
    }
  });
  EXPECT_EQ(detected, 2);
}

TEST(DataParallel, SyncDisabledAccumulatesLocally) {
  parallel::run_workers(2, [&](parallel::Communicator& comm) {
    auto m = make_mlp(3, DType::kF64);
    DataParallel dp(*m, comm);
    auto [x, y] = batch(0, DType::kF64);
    Tensor xs = x.slice(0, comm.rank() * 4, comm.rank() * 4 + 4).contiguous();
    Tensor ys = y.slice(0, comm.rank() * 4, comm.rank() * 4 + 4).contiguous();
    MSELoss loss;
    m->zero_grad();
    dp.set_sync_enabled(false);
    loss.forward(m->forward(xs), ys);
    m->backward(loss.backward());
    dp.finish_gradient_sync();  // no-op
    auto local = m->named_parameters()[0].param->grad.to_vector<double>();
    dp.set_sync_enabled(true);
    loss.forward(m->forward(xs), ys);
    m->backward(loss.backward());  // grads now 2 * local
    dp.finish_gradient_sync();
    // The average over ranks of 2 * local gradients equals the full-batch gradient times 2.
    auto synced = m->named_parameters()[0].param->grad.to_vector<double>();
    Tensor l = Tensor::from_vector(local, {static_cast<int64_t>(local.size())}).to(DType::kF64);
    comm.allreduce(l.view(), parallel::ReduceOp::kAvg);
    auto avg = l.to_vector<double>();
    for (size_t i = 0; i < avg.size(); ++i) ASSERT_NEAR(synced[i], 2 * avg[i], 1e-12);
  });
}

TEST(DataParallel, BadInput) {
  parallel::run_workers(1, [&](parallel::Communicator& comm) {
    auto m = make_mlp(3, DType::kF32);
    DataParallelOptions o;
    o.bucket_bytes = 0;
    try {
      DataParallel dp(*m, comm, o);
      ADD_FAILURE();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      EXPECT_EQ(std::string(e.what()).rfind("[DataParallel]", 0), 0u);
    }
    // World size 1 trains like a single worker.
    DataParallel dp(*m, comm);
    SGD opt(m->named_parameters(), sgd());
    auto [x, y] = batch(0, DType::kF32);
    train_step(*m, opt, x, y, &dp);
  });
}

}  // namespace
}  // namespace frugal::nn
