#pragma once
// Shared by the communicator and data-parallel tests (tests/nn/data_parallel_test.cpp,
// tests/parallel/*): the integer-valued collective inputs, the optimizer and training step of the
// "K workers equal one worker" comparisons, and the waits of the late-peer timeout tests.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "frugal/nn/data_parallel.hpp"
#include "frugal/nn/loss.hpp"
#include "frugal/nn/optim.hpp"
#include "frugal/parallel/communicator.hpp"

namespace frugal::testing {

/// Element i of rank r's collective input: an integer in [-15, 15], exact in every supported dtype
/// and in every sum of a few ranks, so results compare exactly across backends.
inline double value_of(int r, int64_t i) { return static_cast<double>((i * 7 + r * 13) % 31 - 15); }

/// Rank r's input of n elements (value_of) in dtype t, on the CPU.
inline Tensor make_input(int r, int64_t n, DType t) {
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = value_of(r, i);
  return Tensor::from_vector(v, {n}).to(t);
}

/// SGD with momentum and weight decay, so every term of the update takes part in a comparison.
inline nn::SgdOptions dp_sgd() {
  nn::SgdOptions o;
  o.lr = 0.1;
  o.momentum = 0.9;
  o.weight_decay = 1e-3;
  return o;
}

/// One training step on (x, y): zero_grad, forward, MSE loss, backward, then `dp`'s gradient
/// sync (when not null) and the optimizer step.
inline void dp_train_step(nn::Module& m, nn::Optimizer& opt, const Tensor& x, const Tensor& y,
                          nn::DataParallel* dp) {
  nn::MSELoss loss;
  m.zero_grad();
  loss.forward(m.forward(x), y);
  m.backward(loss.backward());
  if (dp) dp->finish_gradient_sync();
  opt.step();
}

/// Expects one wait on `w` to raise Timeout with a message starting with `prefix` ("[allreduce]").
inline void expect_wait_times_out(parallel::Work& w, const std::string& prefix) {
  try {
    w.wait();
    ADD_FAILURE() << "expected Timeout";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kTimeout);
    EXPECT_EQ(std::string(e.what()).rfind(prefix, 0), 0u) << e.what();
  }
}

/// Waits on `w` again after each Timeout until it completes (its peer joins late); fails the
/// test after `attempts` timeouts.
inline void wait_until_peer_arrives(parallel::Work& w, int attempts = 100) {
  for (int attempt = 0;; ++attempt) {
    try {
      w.wait();
      return;
    } catch (const Error& e) {
      ASSERT_EQ(e.code(), ErrorCode::kTimeout);
      ASSERT_LT(attempt, attempts);
    }
  }
}

}  // namespace frugal::testing
