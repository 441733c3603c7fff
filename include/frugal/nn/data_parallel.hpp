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

#include "frugal/nn/module.hpp"
#include "frugal/parallel/communicator.hpp"

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
};

/// Counters of the last synchronised step.
struct DataParallelStats {
  int64_t buckets = 0;                 ///< number of gradient buckets
  int64_t bytes_per_step = 0;          ///< gradient bytes each rank all-reduces per step
  int64_t launched_in_backward = 0;    ///< buckets started from the grad-ready hook last step
  int64_t steps = 0;                   ///< finish_gradient_sync() calls so far
};

/// Wraps a model for synchronous data-parallel training. Keeps references: the model and the
/// communicator must outlive it. Installs the model's grad-ready hook (removed by the destructor).
class DataParallel {
 public:
  /// Broadcasts rank 0's parameters and buffers to every rank and builds the buckets from the
  /// trainable parameters (f32 / f64 / f16 / bf16; on the communicator's device).
  DataParallel(Module& model, parallel::Communicator& comm, const DataParallelOptions& options = {});
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  /// The wrapped model's forward and backward (convenience; calling the model directly is the
  /// same: the hook is installed on the model).
  Tensor forward(const Tensor& input) { return model_.forward(input); }
  Tensor backward(const Tensor& grad_output) { return model_.backward(grad_output); }

  /// Starts the buckets not started yet, waits for every bucket (bounded by the communicator's
  /// timeout) and writes the reduced gradients back into the parameters' grads. Call after
  /// backward and before the optimizer step.
  void finish_gradient_sync();

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
  struct Bucket {
    Tensor flat;  // (elements) contiguous, the parameters' dtype and device
    std::vector<Parameter*> params;
    std::vector<int64_t> offsets;  // element offset of each parameter in flat
    int64_t pending = 0;           // gradients not reported yet this step
    std::shared_ptr<parallel::Work> work;
  };
  void on_grad_ready(Parameter& p);
  void pack(Bucket& b, size_t i);
  void launch(Bucket& b);

  Module& model_;
  parallel::Communicator& comm_;
  DataParallelOptions options_;
  std::vector<Bucket> buckets_;
  std::unordered_map<Parameter*, std::pair<size_t, size_t>> where_;  // bucket, index in bucket
  std::vector<std::vector<bool>> packed_;
  bool sync_enabled_ = true;
  int64_t hook_launches_ = 0;  // this step
  DataParallelStats stats_;
};

}  // namespace frugal::nn
