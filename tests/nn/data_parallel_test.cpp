// nn::DataParallel over ThreadComm: K workers with B / K rows each equal one worker with B rows
// after N SGD steps; initial broadcast; bucket overlap; the parameter checksum check.
#include "frugal/nn/data_parallel.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "frugal/core/io.hpp"
#include "frugal/nn/activation.hpp"
#include "frugal/nn/linear.hpp"
#include "frugal/nn/local_sgd.hpp"
#include "frugal/nn/loss.hpp"
#include "frugal/nn/models.hpp"
#include "frugal/nn/optim.hpp"
#include "frugal/nn/train.hpp"
#include "frugal/nn/zero.hpp"
#include "frugal/parallel/simulated_link.hpp"
#include "frugal/parallel/thread_comm.hpp"
#include "parallel/dp_support.hpp"
#include "support/check.hpp"
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

using testing::dp_sgd;
using testing::dp_train_step;

std::vector<std::vector<double>> params_of(Module& m) {
  std::vector<std::vector<double>> out;
  for (auto& np : m.named_parameters()) out.push_back(np.param->value.to_vector<double>());
  return out;
}

std::vector<std::vector<double>> train_single(DType t) {
  auto m = make_mlp(7, t);
  SGD opt(m->named_parameters(), dp_sgd());
  for (int s = 0; s < kSteps; ++s) {
    auto [x, y] = batch(s, t);
    dp_train_step(*m, opt, x, y, nullptr);
  }
  return params_of(*m);
}

std::vector<std::vector<std::vector<double>>> train_parallel(
    int k, DType t, const DataParallelOptions& o, const parallel::LinkModel* link = nullptr) {
  std::vector<std::vector<std::vector<double>>> result(k);
  parallel::run_workers(k, [&](parallel::Communicator& plain) {
    std::unique_ptr<parallel::SimulatedLinkComm> linked;
    if (link) linked = std::make_unique<parallel::SimulatedLinkComm>(plain, *link);
    parallel::Communicator& comm = linked ? *linked : plain;
    // A different seed per rank: the constructor's broadcast must make rank 0's replica win.
    auto m = make_mlp(comm.rank() == 0 ? 7 : 50 + comm.rank(), t);
    DataParallel dp(*m, comm, o);
    SGD opt(m->named_parameters(), dp_sgd());
    const int64_t rows = kBatch / k;
    for (int s = 0; s < kSteps; ++s) {
      auto [x, y] = batch(s, t);
      Tensor xs = x.slice(0, comm.rank() * rows, (comm.rank() + 1) * rows).contiguous();
      Tensor ys = y.slice(0, comm.rank() * rows, (comm.rank() + 1) * rows).contiguous();
      dp_train_step(*m, opt, xs, ys, &dp);
      if (o.overlap)
        EXPECT_EQ(dp.stats().launched_in_backward, dp.stats().buckets);
      else
        EXPECT_EQ(dp.stats().launched_in_backward, 0);
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

TEST(DataParallel, OverASimulatedLinkEqualsOverThreadCommBitForBit) {
  // The link only delays completion: the same gradients, the same parameters, to the bit.
  const parallel::LinkModel link{1e8, 20e-6};
  for (int k : {2, 3}) {
    for (bool overlap : {true, false}) {
      DataParallelOptions o;
      o.bucket_bytes = 600;
      o.overlap = overlap;
      const auto plain = train_parallel(k, DType::kF32, o);
      const auto linked = train_parallel(k, DType::kF32, o, &link);
      for (int r = 0; r < k; ++r) EXPECT_EQ(linked[r], plain[r]) << "K=" << k << " rank " << r;
    }
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
    SGD opt(m->named_parameters(), dp_sgd());
    auto [x, y] = batch(0, DType::kF32);
    dp_train_step(*m, opt, x, y, &dp);
  });
}

// ---- compression ---------------------------------------------------------------------------

// 2 workers train an MLP on the digits for a few epochs with the recipe's optimizer, each on its
// shard with half the batch; returns rank 0's test accuracy and the bytes sent per step.
std::pair<double, int64_t> digits_accuracy(const std::string& compressor, int64_t epochs) {
  static const TrainTestData data = split_data(load_digits(), 0.2, 0);
  double acc = 0;
  int64_t sent = 0;
  parallel::run_workers(2, [&](parallel::Communicator& comm) {
    auto model = nn::make_mlp({64, 64, 10}, 0);
    DataParallelOptions o;
    o.compressor = parallel::make_compressor(compressor);
    DataParallel dp(*model, comm, o);
    AdamW opt(model->named_parameters(), mlp_digits_recipe().adamw);
    TrainOptions t = mlp_digits_recipe().train;
    t.epochs = epochs;
    t.batch_size /= 2;
    t.progress = false;
    t.num_threads = 1;
    t.hooks.before_step = [&](int64_t) { return dp.finish_gradient_sync(); };
    TrainResult r =
        train_classifier(*model, opt, shard_rows(data.train, comm.rank(), 2), data.test, t);
    dp.check_parameters_in_sync();
    if (comm.rank() == 0) {
      acc = r.test_accuracy;
      sent = dp.stats().sent_bytes_per_step;
    }
  });
  return {acc, sent};
}

TEST(DataParallel, EachCompressorWithErrorFeedbackConvergesOnDigits) {
  const auto [base, base_bytes] = digits_accuracy("none", 10);
  // The uncompressed run reaches about 96% in 10 epochs; a compressor with error feedback should
  // stay within 3 points (it converges, at most slower; 3 points = 11 of 360 test images).
  EXPECT_GE(base, 0.93);
  std::printf("  %-10s test accuracy %.4f, %lld bytes sent per step\n", "none", base,
              static_cast<long long>(base_bytes));
  for (const char* name : {"fp16", "bf16", "int8", "topk0.05", "powersgd2"}) {
    const auto [acc, bytes] = digits_accuracy(name, 10);
    EXPECT_GE(acc, base - 0.03) << name;
    EXPECT_LT(bytes, base_bytes) << name;
    std::printf("  %-10s test accuracy %.4f, %lld bytes sent per step (uncompressed %lld)\n", name,
                acc, static_cast<long long>(bytes), static_cast<long long>(base_bytes));
  }
}

// ---- bounded staleness ----------------------------------------------------------------------

TEST(DataParallel, StalenessAppliesTheAveragedGradientSStepsLate) {
  for (int s : {1, 2}) {
    // Reference: one worker with the full batch applies at step t the gradient of step t - s,
    // computed at the parameters of step t - s (no update for t < s).
    auto ref = make_mlp(7, DType::kF64);
    SgdOptions so = dp_sgd();
    SGD ropt(ref->named_parameters(), so);
    std::deque<std::vector<Tensor>> grads;
    MSELoss loss;
    for (int t = 0; t < kSteps + 2; ++t) {
      auto [x, y] = batch(t, DType::kF64);
      ref->zero_grad();
      loss.forward(ref->forward(x), y);
      ref->backward(loss.backward());
      std::vector<Tensor> g;
      for (auto& np : ref->named_parameters()) g.push_back(np.param->grad.clone());
      grads.push_back(g);
      if (static_cast<int>(grads.size()) <= s) continue;
      auto params = ref->named_parameters();
      for (size_t i = 0; i < params.size(); ++i) params[i].param->grad.copy_from(grads.front()[i]);
      grads.pop_front();
      ropt.step();
    }
    const auto want = params_of(*ref);
    parallel::run_workers(2, [&](parallel::Communicator& comm) {
      auto m = make_mlp(7, DType::kF64);
      DataParallelOptions o;
      o.staleness = s;
      o.bucket_bytes = 600;  // several buckets in flight
      DataParallel dp(*m, comm, o);
      SGD opt(m->named_parameters(), so);
      int skipped = 0;
      for (int t = 0; t < kSteps + 2; ++t) {
        auto [x, y] = batch(t, DType::kF64);
        Tensor xs = x.slice(0, comm.rank() * 4, comm.rank() * 4 + 4).contiguous();
        Tensor ys = y.slice(0, comm.rank() * 4, comm.rank() * 4 + 4).contiguous();
        MSELoss l;
        m->zero_grad();
        l.forward(m->forward(xs), ys);
        m->backward(l.backward());
        if (dp.finish_gradient_sync())
          opt.step();
        else
          ++skipped;
      }
      EXPECT_EQ(skipped, s);
      dp.check_parameters_in_sync();
      // f64, only the summation order differs from the reference.
      expect_close(params_of(*m), want, 1e-12);
    });
  }
}

// ---- local SGD ------------------------------------------------------------------------------

TEST(DataParallel, LocalSgdWithPeriodOneEqualsSynchronousPlainSgd) {
  // For plain SGD the average of the replicas after p - lr g_r is p - lr avg(g_r): local SGD
  // with H = 1 equals synchronous data parallel (momentum would differ: it stays local).
  SgdOptions so;
  so.lr = 0.1;
  std::vector<std::vector<double>> sync;
  parallel::run_workers(2, [&](parallel::Communicator& comm) {
    for (int h : {1, 3}) {
      auto m = make_mlp(comm.rank() == 0 ? 7 : 8, DType::kF64);
      LocalSGD avg(*m, comm, {.period = h});
      SGD opt(m->named_parameters(), so);
      for (int t = 0; t < 6; ++t) {
        auto [x, y] = batch(t, DType::kF64);
        Tensor xs = x.slice(0, comm.rank() * 4, comm.rank() * 4 + 4).contiguous();
        Tensor ys = y.slice(0, comm.rank() * 4, comm.rank() * 4 + 4).contiguous();
        dp_train_step(*m, opt, xs, ys, nullptr);
        avg.after_step();
      }
      EXPECT_EQ(avg.averages(), 6 / h);
      DataParallel check(*m, comm);  // (broadcasts rank 0's values: check first)
      if (h == 1 && comm.rank() == 0) sync = params_of(*m);
    }
  });
  // Synchronous DP with the same plain SGD, 6 steps.
  std::vector<std::vector<double>> dp_params;
  parallel::run_workers(2, [&](parallel::Communicator& comm) {
    auto m = make_mlp(7, DType::kF64);
    DataParallel dp(*m, comm);
    SGD opt(m->named_parameters(), so);
    for (int t = 0; t < 6; ++t) {
      auto [x, y] = batch(t, DType::kF64);
      Tensor xs = x.slice(0, comm.rank() * 4, comm.rank() * 4 + 4).contiguous();
      Tensor ys = y.slice(0, comm.rank() * 4, comm.rank() * 4 + 4).contiguous();
      dp_train_step(*m, opt, xs, ys, &dp);
    }
    if (comm.rank() == 0) dp_params = params_of(*m);
  });
  expect_close(sync, dp_params, 1e-12);  // f64: summation order only
}

TEST(DataParallel, LocalSgdReplicasAreIdenticalAfterEachAverage) {
  parallel::run_workers(2, [&](parallel::Communicator& comm) {
    auto m = make_mlp(comm.rank() == 0 ? 7 : 8, DType::kF32);
    LocalSGD avg(*m, comm, {.period = 2});
    AdamW opt(m->named_parameters(), {});
    for (int t = 0; t < 4; ++t) {
      auto [x, y] = batch(t, DType::kF32);
      Tensor xs = x.slice(0, comm.rank() * 4, comm.rank() * 4 + 4).contiguous();
      Tensor ys = y.slice(0, comm.rank() * 4, comm.rank() * 4 + 4).contiguous();
      dp_train_step(*m, opt, xs, ys, nullptr);
      if (avg.after_step()) {
        DataParallelOptions o;
        auto before = params_of(*m);
        DataParallel check(*m, comm, o);  // broadcast of rank 0's values changes nothing
        EXPECT_EQ(params_of(*m), before);
      }
    }
    EXPECT_EQ(avg.bytes_per_average(), m->num_parameters() * 4);
  });
}

// ---- ZeRO stage 1 ---------------------------------------------------------------------------

TEST(DataParallel, ZeroStage1EqualsDataParallel) {
  for (int k : {2, 4}) {  // 435 parameters: padded shards for both
    for (bool adam : {false, true}) {
      auto make_opt = [&](const std::vector<NamedParameter>& p) -> std::unique_ptr<Optimizer> {
        if (adam) return std::make_unique<AdamW>(p, AdamWOptions{});
        return std::make_unique<SGD>(p, dp_sgd());
      };
      std::vector<std::vector<double>> dp_params;
      int64_t full_state = 0;
      parallel::run_workers(k, [&](parallel::Communicator& comm) {
        auto m = make_mlp(7, DType::kF64);
        DataParallel dp(*m, comm);
        auto opt = make_opt(m->named_parameters());
        for (int t = 0; t < kSteps; ++t) {
          auto [x, y] = batch(t, DType::kF64);
          const int64_t rows = kBatch / k, lo = comm.rank() * rows;
          dp_train_step(*m, *opt, x.slice(0, lo, lo + rows).contiguous(),
                        y.slice(0, lo, lo + rows).contiguous(), &dp);
        }
        if (comm.rank() == 0) {
          dp_params = params_of(*m);
          for (auto& [n, t] : opt->state().tensors) full_state += t.nbytes();
        }
      });
      parallel::run_workers(k, [&](parallel::Communicator& comm) {
        auto m = make_mlp(comm.rank() == 0 ? 7 : 9, DType::kF64);
        ZeroOptimizer opt(*m, comm, make_opt);
        for (int t = 0; t < kSteps; ++t) {
          auto [x, y] = batch(t, DType::kF64);
          const int64_t rows = kBatch / k, lo = comm.rank() * rows;
          dp_train_step(*m, opt, x.slice(0, lo, lo + rows).contiguous(),
                        y.slice(0, lo, lo + rows).contiguous(), nullptr);
        }
        SCOPED_TRACE(::testing::Message() << "K=" << k << " adam=" << adam);
        expect_close(params_of(*m), dp_params, 1e-12);  // f64: summation order only
        DataParallel(*m, comm).check_parameters_in_sync();
        EXPECT_EQ(opt.shard_elements(), (m->num_parameters() + k - 1) / k);
        EXPECT_EQ(opt.state_bytes(), full_state / m->num_parameters() * opt.shard_elements());
        EXPECT_EQ(opt.unsharded_state_bytes(), full_state);
      });
    }
  }
}

// ---- checkpoints ----------------------------------------------------------------------------

TEST(DataParallel, CheckpointOfRankZeroResumesEveryRank) {
  const std::string path = ::testing::TempDir() + "/dp_checkpoint.safetensors";
  auto step_range = [&](parallel::Communicator& comm, Module& m, Optimizer& opt, DataParallel& dp,
                        int from, int to) {
    for (int t = from; t < to; ++t) {
      auto [x, y] = batch(t, DType::kF32);
      Tensor xs = x.slice(0, comm.rank() * 4, comm.rank() * 4 + 4).contiguous();
      Tensor ys = y.slice(0, comm.rank() * 4, comm.rank() * 4 + 4).contiguous();
      dp_train_step(m, opt, xs, ys, &dp);
    }
  };
  std::vector<std::vector<std::vector<double>>> straight(2), resumed(2);
  parallel::run_workers(2, [&](parallel::Communicator& comm) {
    auto m = make_mlp(7, DType::kF32);
    DataParallel dp(*m, comm);
    AdamW opt(m->named_parameters(), {});
    step_range(comm, *m, opt, dp, 0, 3);
    TrainState st;
    st.step = 3;
    save_parallel_checkpoint(path, comm, *m, &opt, st);
    step_range(comm, *m, opt, dp, 3, 6);
    straight[comm.rank()] = params_of(*m);
  });
  parallel::run_workers(2, [&](parallel::Communicator& comm) {
    auto m = make_mlp(20 + comm.rank(), DType::kF32);  // fresh, different replicas
    AdamW opt(m->named_parameters(), {});
    const TrainState st = load_parallel_checkpoint(path, comm, *m, &opt);
    EXPECT_EQ(st.step, 3);
    DataParallel dp(*m, comm);
    step_range(comm, *m, opt, dp, static_cast<int>(st.step), 6);
    resumed[comm.rank()] = params_of(*m);
  });
  for (int r = 0; r < 2; ++r) EXPECT_EQ(resumed[r], straight[r]);  // same ops, same order
  std::remove(path.c_str());
}

TEST(DataParallel, ZeroCheckpointResumesBitIdentical) {
  const std::string path = ::testing::TempDir() + "/zero_checkpoint.safetensors";
  auto make_opt = [](const std::vector<NamedParameter>& p) -> std::unique_ptr<Optimizer> {
    return std::make_unique<AdamW>(p, AdamWOptions{});  // moments and step: state that matters
  };
  auto step_range = [&](parallel::Communicator& comm, Module& m, Optimizer& opt, int from, int to) {
    const int64_t rows = kBatch / comm.size(), lo = comm.rank() * rows;
    for (int t = from; t < to; ++t) {
      auto [x, y] = batch(t, DType::kF32);
      dp_train_step(m, opt, x.slice(0, lo, lo + rows).contiguous(),
                    y.slice(0, lo, lo + rows).contiguous(), nullptr);
    }
  };
  std::vector<std::vector<double>> straight4;  // K = 4, steps 0-6 without a resume
  for (int k : {2, 4}) {  // 435 parameters: padded shards for both
    SCOPED_TRACE(::testing::Message() << "K=" << k);
    std::vector<std::vector<std::vector<double>>> straight(k), resumed(k);
    parallel::run_workers(k, [&](parallel::Communicator& comm) {
      auto m = make_mlp(7, DType::kF32);
      ZeroOptimizer opt(*m, comm, make_opt);
      step_range(comm, *m, opt, 0, 3);
      TrainState st;
      st.step = 3;
      save_parallel_checkpoint(path, comm, *m, &opt, st);
      step_range(comm, *m, opt, 3, 6);
      straight[comm.rank()] = params_of(*m);
    });
    for (int r = 0; r < k; ++r)
      EXPECT_TRUE(std::filesystem::exists(zero_shard_path(path, r, k))) << "rank " << r;
    parallel::run_workers(k, [&](parallel::Communicator& comm) {
      auto m = make_mlp(20 + comm.rank(), DType::kF32);  // fresh, different replicas
      ZeroOptimizer opt(*m, comm, make_opt);
      const TrainState st = load_parallel_checkpoint(path, comm, *m, &opt);
      EXPECT_EQ(st.step, 3);
      EXPECT_EQ(opt.step_count(), 3);
      EXPECT_EQ(opt.inner().step_count(), 3);  // AdamW's bias correction continues
      step_range(comm, *m, opt, static_cast<int>(st.step), 6);
      resumed[comm.rank()] = params_of(*m);
    });
    for (int r = 0; r < k; ++r) EXPECT_EQ(resumed[r], straight[r]);  // same ops, same order
    straight4 = straight[0];
  }
  // Resuming the K = 4 checkpoint with 1, 2 or 3 ranks: the state is resharded. Reference: the
  // unsharded slots, the four shard files concatenated here (each holds ceil(435 / 4) = 109
  // elements, the last 8 of the last one padding).
  for (int r = 0; r < 2; ++r) std::remove(zero_shard_path(path, r, 2).c_str());
  std::map<std::string, std::vector<double>> full;
  for (int r = 0; r < 4; ++r) {
    for (const auto& [name, t] : load_safetensors(zero_shard_path(path, r, 4)).tensors) {
      const std::vector<double> v = t.to_vector<double>();
      full[name].insert(full[name].end(), v.begin(), v.end());
    }
  }
  ASSERT_FALSE(full.empty());
  for (int k : {1, 2, 3}) {
    SCOPED_TRACE(::testing::Message() << "resharded to K=" << k);
    std::vector<std::vector<std::vector<double>>> resumed(k);
    parallel::run_workers(k, [&](parallel::Communicator& comm) {
      auto m = make_mlp(20 + comm.rank(), DType::kF32);
      ZeroOptimizer opt(*m, comm, make_opt);
      const TrainState st = load_parallel_checkpoint(path, comm, *m, &opt);
      EXPECT_EQ(st.step, 3);
      EXPECT_EQ(opt.inner().step_count(), 3);
      const int64_t n = opt.total_elements(), s = opt.shard_elements();
      for (const auto& [name, t] : opt.shard_state().tensors) {
        const auto it = full.find("optim." + name);
        ASSERT_NE(it, full.end()) << name;
        const std::vector<double> got = t.to_vector<double>();
        ASSERT_EQ(static_cast<int64_t>(got.size()), s);
        for (int64_t i = 0; i < s; ++i) {
          const int64_t g = comm.rank() * s + i;
          ASSERT_EQ(got[i], g < n ? it->second[g] : 0.0) << name << " " << g;
        }
      }
      step_range(comm, *m, opt, static_cast<int>(st.step), 6);
      resumed[comm.rank()] = params_of(*m);
    });
    // The same steps as the K = 4 run, the gradient averaged in another order (f32); with 3
    // ranks the batch does not split evenly (other data), so only the state is compared.
    if (kBatch % k == 0) {
      for (int r = 0; r < k; ++r) expect_close(resumed[r], straight4, 1e-5);
    }
  }
  // Two shard sets next to the checkpoint and none for this world size: ambiguous, refused.
  std::filesystem::copy_file(zero_shard_path(path, 0, 4), zero_shard_path(path, 0, 3));
  parallel::run_workers(2, [&](parallel::Communicator& comm) {
    auto m = make_mlp(7, DType::kF32);
    ZeroOptimizer opt(*m, comm, make_opt);
    testing::expect_error([&] { load_parallel_checkpoint(path, comm, *m, &opt); },
                          ErrorCode::kIoError, "load_zero_shard");
  });
  std::remove(zero_shard_path(path, 0, 3).c_str());
  // An incomplete set (a lost shard file) is refused too.
  std::filesystem::rename(zero_shard_path(path, 3, 4), zero_shard_path(path, 3, 4) + ".lost");
  parallel::run_workers(2, [&](parallel::Communicator& comm) {
    auto m = make_mlp(7, DType::kF32);
    ZeroOptimizer opt(*m, comm, make_opt);
    if (comm.rank() == 1) {
      testing::expect_error([&] { load_zero_shard(path, opt); }, ErrorCode::kIoError,
                            "load_zero_shard");
    }
  });
  std::filesystem::rename(zero_shard_path(path, 3, 4) + ".lost", zero_shard_path(path, 3, 4));
  // Shards from another save than the main file (a crash between the two writes): refused.
  parallel::run_workers(2, [&](parallel::Communicator& comm) {
    auto m = make_mlp(7, DType::kF32);
    ZeroOptimizer opt(*m, comm, make_opt);
    step_range(comm, *m, opt, 0, 1);
    save_zero_shard(path, opt);  // shards at step 1; the main file says step 3
    auto fresh = make_mlp(7, DType::kF32);
    ZeroOptimizer opt2(*fresh, comm, make_opt);
    testing::expect_error([&] { load_parallel_checkpoint(path, comm, *fresh, &opt2); },
                          ErrorCode::kInvalidArgument, "load_zero_shard");
  });
  std::remove(path.c_str());
  for (int k : {2, 4})
    for (int r = 0; r < k; ++r) std::remove(zero_shard_path(path, r, k).c_str());
}

TEST(DataParallel, ModelsThatDifferAcrossRanksAreReported) {
  std::mutex mu;
  int reported = 0;
  parallel::run_workers(2, [&](parallel::Communicator& comm) {
    auto m = std::make_shared<Sequential>();
    m->add(std::make_shared<Linear>(kIn, comm.rank() == 0 ? 4 : 5, true, 1, DType::kF32));
    try {
      DataParallel dp(*m, comm);
      ADD_FAILURE() << "rank " << comm.rank();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      EXPECT_EQ(std::string(e.what()).rfind("[broadcast]", 0), 0u) << e.what();
      std::lock_guard lock(mu);
      ++reported;
    }
  });
  EXPECT_EQ(reported, 2);
}

TEST(DataParallel, ShardRowsTakesEveryKthRow) {
  LabeledData d{
      Tensor::from_vector(std::vector<float>{0, 1, 10, 11, 20, 21, 30, 31, 40, 41}, {5, 2}),
      Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 3, 4}, {5})};
  LabeledData s0 = shard_rows(d, 0, 2), s1 = shard_rows(d, 1, 2);
  EXPECT_EQ(s0.labels.to_vector<int64_t>(), (std::vector<int64_t>{0, 2, 4}));
  EXPECT_EQ(s1.labels.to_vector<int64_t>(), (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(s1.inputs.to_vector<float>(), (std::vector<float>{10, 11, 30, 31}));
}

TEST(DataParallel, BadOptionsAreRejected) {
  parallel::run_workers(1, [&](parallel::Communicator& comm) {
    using testing::expect_error;
    auto m = make_mlp(3, DType::kF32);
    DataParallelOptions o;
    o.staleness = -1;
    expect_error([&] { DataParallel dp(*m, comm, o); }, ErrorCode::kInvalidArgument,
                 "DataParallel");
    o.staleness = 1;
    o.compressor = parallel::make_compressor("fp16");
    expect_error([&] { DataParallel dp(*m, comm, o); }, ErrorCode::kInvalidArgument,
                 "DataParallel");
    o.staleness = 0;
    auto m64 = make_mlp(3, DType::kF64);
    expect_error([&] { DataParallel dp(*m64, comm, o); }, ErrorCode::kInvalidArgument,
                 "DataParallel");
    expect_error([&] { LocalSGD l(*m, comm, {.period = 0}); }, ErrorCode::kInvalidArgument,
                 "LocalSGD");
    expect_error([&] { shard_rows({}, 2, 2); }, ErrorCode::kInvalidArgument, "shard_rows");
  });
}

}  // namespace
}  // namespace frugal::nn
