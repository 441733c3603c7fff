#pragma once
/// ZeRO stage 1 (Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion
/// Parameter Models"): the optimizer state is sharded across ranks. All trainable parameters are
/// seen as one flat vector of n elements padded to a multiple of size(); rank r owns the
/// contiguous shard [r n / K, (r + 1) n / K). One step:
///   1. reduce_scatter (average) of the flat gradient: each rank receives its shard's gradient;
///   2. the inner optimizer (SGD, AdamW, ...; elementwise updates) updates that shard only, with
///      state of shard size: K times less optimizer memory per rank;
///   3. allgather of the updated shards: every rank holds the full new parameters.
/// Communication equals one all-reduce (reduce-scatter + all-gather), as synchronous DP.
///
///   nn::ZeroOptimizer opt(model, comm, [](auto& p) { return std::make_unique<nn::AdamW>(p, o); });
///   for (...) { opt.zero_grad(); forward; backward; opt.step(); }   // no DataParallel needed
#include <functional>
#include <memory>
#include <string>

#include "frugal/nn/module.hpp"
#include "frugal/nn/optim.hpp"
#include "frugal/parallel/communicator.hpp"

namespace frugal::nn {

/// Optimizer-state-sharded data parallel (ZeRO-1). An Optimizer, so the training loops take it.
/// Keeps references: the model and communicator must outlive it.
class ZeroOptimizer : public Optimizer {
 public:
  /// Builds the inner optimizer of this rank's shard from one parameter "shard" (value and grad
  /// of shard length). The inner update must be elementwise (SGD, AdamW: not LAMB-like norms).
  using Factory =
      std::function<std::unique_ptr<Optimizer>(const std::vector<NamedParameter>& shard)>;

  /// Broadcasts rank 0's parameters (replicas start equal). Trainable parameters must share one
  /// dtype (f32 or f64), be contiguous and live on the communicator's device.
  ZeroOptimizer(Module& model, parallel::Communicator& comm, const Factory& make_inner);

  /// Reduce-scatter of the gradients, inner step on the shard (with this optimizer's lr), and
  /// all-gather of the parameters. Collective: every rank calls it.
  void step(const ExecContext& ctx = {}) override;
  std::string type_name() const override;

  /// Elements of this rank's shard (ceil(n / K)).
  int64_t shard_elements() const { return shard_.value.numel(); }
  /// Bytes of optimizer state this rank holds (the inner optimizer's slots).
  int64_t state_bytes() const;
  /// Bytes of optimizer state one unsharded optimizer would hold (state_bytes() * K / padding).
  int64_t unsharded_state_bytes() const;
  /// The inner optimizer of the shard.
  const Optimizer& inner() const { return *inner_; }
  /// This rank's index (the communicator's rank): its shard of the state.
  int rank() const { return comm_.rank(); }
  /// Number of ranks the state is sharded over (the communicator's size).
  int world_size() const { return comm_.size(); }
  /// Trainable elements of the model (before padding to a multiple of world_size()).
  int64_t total_elements() const { return numel_; }

  /// This rank's shard of the optimizer state: the inner optimizer's state (slot tensors of
  /// shard_elements(), its "lr", "step" and hyperparameters). Slots share storage (copy to keep).
  OptimizerState shard_state() const { return inner_->state(); }
  /// Restores this rank's shard of the state (shard_state() of the same rank and world size, or
  /// one resharded by load_zero_shard) and re-reads this rank's shard of the parameters from
  /// the model, so call it after the model's parameters are loaded. Throws InvalidArgument
  /// ("[<inner>::load_state] ...") when the state does not fit; nothing changes then.
  void load_shard_state(const OptimizerState& s, const ExecContext& ctx = {});

 protected:
  std::map<std::string, double> hyperparameters() const override;
  void set_hyperparameters(const std::map<std::string, double>&) override {}
  void check_hyperparameters(const std::map<std::string, double>&,
                             const std::string&) const override {}

 private:
  parallel::Communicator& comm_;
  Parameter shard_;
  Tensor flat_;  // (K * shard) gradients, then parameters
  int64_t numel_ = 0;
  std::unique_ptr<Optimizer> inner_;
};

/// The file that holds rank `rank`'s shard of a ZeRO checkpoint written to `path`:
/// "<path>.zero-<rank>-of-<world_size>".
std::string zero_shard_path(const std::string& path, int rank, int world_size);

/// Writes this rank's shard of `opt`'s state to zero_shard_path(path, rank, K) atomically
/// (core/io write_file_atomic: a reader sees the old file or the whole new one). Tensors
/// "optim.<slot>" (shard length); metadata "zero.rank", "zero.world_size", "zero.elements",
/// "zero.step" (opt.step_count()) and the inner scalars as "optim.<scalar>" (%.17g, exact).
/// Every rank calls it for its own shard (no gather: each rank writes 1 / K of the state).
/// Throws IoError ("[save_zero_shard] <file> ...") when the file cannot be written.
void save_zero_shard(const std::string& path, const ZeroOptimizer& opt);

/// Reads this rank's shard file of `path` into `opt` (load_shard_state), after the model and
/// opt's own scalars were loaded (load_checkpoint). When the run was saved by another number of
/// ranks (no shard files for opt.world_size(), exactly one set "<path>.zero-*-of-<K>" next to
/// `path`), the state is resharded, as DeepSpeed's universal checkpoints allow: this rank reads
/// the old shards that overlap its range of the unsharded vector and takes its elements (zeros
/// in the padding); every old shard must agree on the scalars. Throws IoError
/// ("[load_zero_shard] <file> ...") when a needed file is missing or unreadable, or when no or
/// several shard sets exist; InvalidArgument ("[load_zero_shard] ...") when a shard was written
/// for another rank, world size or model size, at another step than opt.step_count() (the main
/// checkpoint and the shards come from different saves), or for another optimizer.
void load_zero_shard(const std::string& path, ZeroOptimizer& opt, const ExecContext& ctx = {});

}  // namespace frugal::nn
