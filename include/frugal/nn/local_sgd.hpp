#pragma once
/// Local SGD (model averaging): every rank trains its own replica on its own shard and the
/// replicas are averaged every `period` optimizer steps (Lin et al. 2020, "Don't Use Large
/// Mini-Batches, Use Local SGD"; Stich 2019, "Local SGD Converges Fast and Communicates Little").
/// Communication drops by a factor of `period` against synchronous data parallel; the optimizer
/// state (momentum, Adam moments) stays local, as in the papers.
///
///   nn::LocalSGD avg(model, comm, {.period = 8});
///   for (...) { zero_grad; forward; backward; opt.step(); avg.after_step(); }
#include <cstdint>

#include "frugal/nn/module.hpp"
#include "frugal/parallel/communicator.hpp"

namespace frugal::nn {

/// Options of LocalSGD.
struct LocalSgdOptions {
  int64_t period = 8;           ///< H: average the replicas every H steps (>= 1; 1 = every step)
  bool average_buffers = true;  ///< also average float buffers (batch-norm running statistics)
};

/// Averages the replicas of a model across ranks every `period` steps. Keeps references: the
/// model and communicator must outlive it.
class LocalSGD {
 public:
  /// Broadcasts rank 0's parameters and buffers (the replicas start equal). Parameters and float
  /// buffers must be contiguous, of one dtype among f32 / f64, on the communicator's device.
  LocalSGD(Module& model, parallel::Communicator& comm, const LocalSgdOptions& options = {});

  /// Call after every optimizer step: counts it and, every `period` steps, replaces every
  /// parameter (and float buffer) by its average over ranks (one all-reduce of all of them).
  /// Returns whether it averaged.
  bool after_step();
  /// Averages now, whatever the step count (e.g. before evaluating or saving).
  void average();

  int64_t steps() const { return steps_; }                      ///< after_step() calls
  int64_t averages() const { return averages_; }                ///< averages done
  int64_t bytes_per_average() const { return flat_.nbytes(); }  ///< all-reduced bytes each time

 private:
  std::vector<Tensor*> tensors();
  Module& model_;
  parallel::Communicator& comm_;
  LocalSgdOptions options_;
  Tensor flat_;
  int64_t steps_ = 0;
  int64_t averages_ = 0;
};

}  // namespace frugal::nn
