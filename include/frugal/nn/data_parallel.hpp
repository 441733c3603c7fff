#pragma once
/// Synchronous data-parallel training over a parallel::Communicator (the DDP recipe: Li et al.,
/// "PyTorch Distributed: Experiences on Accelerating Data Parallel Training", VLDB 2020).
///
/// Every rank holds a full replica of the model and reads its own shard of each batch (DataLoader
/// with rank / world_size). The constructor broadcasts rank 0's parameters (and buffers), so all
/// replicas start equal. Gradients are packed into buckets of about `bucket_bytes`, filled in
/// reverse registration order (the order backward produces them). Through the model's
/// grad-ready hook, a bucket's asynchronous all-reduce starts as soon as its last gradient is
/// final, so communication overlaps the rest of backward. finish_gradient_sync() launches any
/// bucket whose gradients were not reported (models whose backward calls no hook), waits for
/// all of them in bucket order, and unpacks the averaged gradients before the optimizer step.
///
///   nn::DataParallel dp(model, comm);
///   for (...) { model.zero_grad(); auto y = model.forward(x_shard);
///               model.backward(loss.backward()); dp.finish_gradient_sync(); opt.step(); }
///
/// All ranks must run the same model and the same sequence of calls. Averaging gradients of
/// mean-reduced losses over K ranks with B / K rows each gives the gradient of batch B.
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "frugal/nn/checkpoint.hpp"
#include "frugal/nn/data.hpp"
#include "frugal/nn/module.hpp"
#include "frugal/nn/optim.hpp"
#include "frugal/parallel/communicator.hpp"
#include "frugal/parallel/compression.hpp"

namespace frugal::nn {

/// Options of DataParallel.
struct DataParallelOptions {
  /// Target bucket size in bytes (> 0); a parameter larger than this gets a bucket of its own.
  int64_t bucket_bytes = 25 << 20;
  /// Start each bucket's all-reduce from the grad-ready hook (overlap with backward). When false,
  /// every bucket starts in finish_gradient_sync().
  bool overlap = true;
  /// Average gradients over ranks (true, as DDP) or sum them.
  bool average = true;
  /// After every finish_gradient_sync(), check that all ranks hold identical parameters
  /// (check_parameters_in_sync). Costs two small all-reduces and a pass over the parameters.
  bool debug_check = false;
  /// Compresses every bucket instead of all-reducing its f32 gradient (parallel/compression.hpp;
  /// f32 parameters, CPU, average = true). One compressor per DataParallel: it keeps per-bucket
  /// residuals. nullptr: plain all-reduce.
  std::shared_ptr<parallel::GradCompressor> compressor;
  /// Bounded staleness s >= 0: the averaged gradient of step t is applied at step t + s, so the
  /// all-reduce of a step has s steps of compute to finish in and waiting rarely blocks
  /// (asynchronous data parallel with a staleness bound, Ho et al. 2013 "SSP"). The first s calls
  /// of finish_gradient_sync() have no averaged gradient yet and return false (skip the update).
  /// 0: synchronous. Not combined with a compressor.
  int staleness = 0;
};

/// Counters of the last synchronised step.
struct DataParallelStats {
  int64_t buckets = 0;               ///< number of gradient buckets
  int64_t bytes_per_step = 0;        ///< f32 (uncompressed) gradient bytes of one step
  int64_t sent_bytes_per_step = 0;   ///< bytes handed to collectives last step (compressed)
  int64_t launched_in_backward = 0;  ///< buckets started from the grad-ready hook last step
  int64_t steps = 0;                 ///< finish_gradient_sync() calls so far
  /// Seconds spent in finish_gradient_sync(), summed over the steps: the communication time
  /// not hidden behind backward (plus packing / unpacking), what the training step waits for.
  double sync_seconds = 0;
  /// Bytes (f32) of the buckets whose communication had already completed when
  /// finish_gradient_sync() was called, summed over the steps: communication entirely hidden
  /// behind backward. Divide by steps * bytes_per_step for the hidden fraction.
  int64_t hidden_bytes = 0;
};

/// Wraps a model for synchronous data-parallel training. Keeps references: the model and the
/// communicator must outlive it. Installs the grad-ready hook of the model and of every module
/// inside it (removed by the destructor).
class DataParallel {
 public:
  /// Broadcasts rank 0's parameters and buffers to every rank and builds the buckets from the
  /// trainable parameters (f32 / f64 / f16 / bf16; on the communicator's device).
  DataParallel(Module& model, parallel::Communicator& comm,
               const DataParallelOptions& options = {});
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  /// The wrapped model's forward and backward (convenience; calling the model directly is the
  /// same: the hook is installed on the model).
  Tensor forward(const Tensor& input) { return model_.forward(input); }
  Tensor backward(const Tensor& grad_output) { return model_.backward(grad_output); }

  /// Starts the buckets not started yet, waits for every bucket (bounded by the communicator's
  /// timeout) and writes the reduced gradients back into the parameters' grads. Call after
  /// backward and before the optimizer step. Returns whether the grads now hold an averaged
  /// gradient: always true when synchronous; with staleness s, false for the first s steps
  /// (skip the optimizer step: StepHooks::before_step can return this value).
  bool finish_gradient_sync();

  /// Copies rank `root`'s parameters and buffers to every rank.
  void broadcast_parameters(int root = 0);

  /// Throws Error(kCommError, "[DataParallel] parameters differ across ranks ...") unless every
  /// rank holds bit-identical parameters (compared through a checksum: all-reduce max and min).
  void check_parameters_in_sync();

  /// Enables (default) or suspends gradient synchronisation: while suspended, the hook starts
  /// nothing and finish_gradient_sync() does nothing (gradient accumulation, as DDP's no_sync).
  void set_sync_enabled(bool on) { sync_enabled_ = on; }

  const DataParallelStats& stats() const { return stats_; }
  Module& module() { return model_; }
  parallel::Communicator& communicator() { return comm_; }

 private:
  struct InFlight {
    Tensor flat;
    std::shared_ptr<parallel::Work> work;
  };
  struct Bucket {
    Tensor flat;  // (elements) contiguous, the parameters' dtype and device
    std::vector<Parameter*> params;
    std::vector<int64_t> offsets;  // element offset of each parameter in flat
    parallel::BucketLayout layout;
    int64_t pending = 0;  // gradients not reported yet this step
    std::shared_ptr<parallel::Work> work;
    std::vector<InFlight> queue;  // staleness > 0: steps launched, oldest first
    std::vector<Tensor> spare;    // staleness > 0: buffers to reuse
  };
  void on_grad_ready(Parameter& p);
  void pack(Bucket& b, size_t i);
  void launch(size_t bi);
  void unpack(Bucket& b, const Tensor& flat);

  Module& model_;
  parallel::Communicator& comm_;
  DataParallelOptions options_;
  std::vector<Bucket> buckets_;
  std::unordered_map<Parameter*, std::pair<size_t, size_t>> where_;  // bucket, index in bucket
  std::vector<std::vector<bool>> packed_;
  std::vector<Module*> hooked_;  // modules whose grad-ready hook we installed
  bool sync_enabled_ = true;
  int64_t hook_launches_ = 0;  // this step
  DataParallelStats stats_;
};

/// Rank `rank`'s shard of a data set for data-parallel training: rows rank, rank + world_size,
/// ... (a fixed split; each rank's DataLoader then shuffles its own shard). Throws
/// InvalidArgument ("[shard_rows] ...") unless 0 <= rank < world_size.
LabeledData shard_rows(const LabeledData& data, int rank, int world_size);

/// Saves a data-parallel run: rank 0 writes `model`, `optim` and `state` with save_checkpoint
/// (atomically: a reader sees the old file or the whole new one), then every rank waits at a
/// barrier, so the file is complete when any rank returns. The replicas are identical, so rank
/// 0's copy is the run's. When `optim` is a ZeroOptimizer (ZeRO-1: each rank holds only its
/// shard of the optimizer state), every rank first writes its shard to its own file
/// zero_shard_path(path, rank, K) (save_zero_shard, atomic), then all meet at a barrier, then
/// rank 0 writes `path`. Errors of a rank's write are rethrown there; the other ranks then time
/// out at the barrier or see the abort (ThreadComm).
void save_parallel_checkpoint(const std::string& path, parallel::Communicator& comm, Module& model,
                              const Optimizer* optim, const TrainState& state);

/// Resumes a data-parallel run: every rank reads `path` (a file system all ranks see) with
/// load_checkpoint into its replica and optimizer; a ZeroOptimizer then reads its rank's shard
/// file (load_zero_shard: same world size, same step as `path`, else an error). The replicas
/// are then checked to be identical (DataParallel's checksum). Returns the saved TrainState.
TrainState load_parallel_checkpoint(const std::string& path, parallel::Communicator& comm,
                                    Module& model, Optimizer* optim);

}  // namespace frugal::nn
