#pragma once
/// Training checkpoints: a model's parameters and buffers, an optimizer's state and the training
/// counters in ONE safetensors file (frugal/core/io.hpp), written atomically.
///
/// File layout:
///   tensors   "model.<name>"               every parameter and buffer of the model
///             "optim.<param>.<slot>"       every optimizer slot ("optim.fc.weight.exp_avg")
///   metadata  "frugal.checkpoint" = "1"   format version
///             "train.step", "train.epoch", "train.seed", "train.rng_offset"   (decimal integers)
///             "train.extra.<key>"          TrainState::extra
///             "optim.type"                 Optimizer::type_name(), when an optimizer is saved
///             "optim.<scalar>"             "lr", "step" and the hyperparameters, as %.17g
///                                          (round-trips a double exactly)
/// Gradients are not saved (as torch's state_dict).
#include <cstdint>
#include <map>
#include <string>

#include "frugal/nn/module.hpp"
#include "frugal/nn/optim.hpp"

namespace frugal::nn {

/// Where training stands, saved beside the model.
struct TrainState {
  int64_t step = 0;         ///< optimizer steps taken
  int64_t epoch = 0;        ///< current epoch (DataLoader::set_epoch)
  uint64_t seed = 0;        ///< seed of the run's random streams (dropout, sampling)
  uint64_t rng_offset = 0;  ///< Philox counter offset reached (ExecContext::offset)
  std::map<std::string, std::string> extra;  ///< anything else the caller wants kept
};

/// Writes `model` (parameters and buffers), `optim` (when not null) and `state` to `path`
/// atomically (a temporary file renamed over it; on failure `path` is unchanged). Tensors may be
/// on any device. Throws InvalidArgument ("[save_checkpoint] ...") when a parameter and a buffer
/// share a name or an extra key is empty, IoError when the file cannot be written.
void save_checkpoint(const std::string& path, Module& model, const Optimizer* optim,
                     const TrainState& state);

/// Reads a checkpoint written by save_checkpoint into `model` and (when not null) `optim`, and
/// returns its TrainState. Strict: the file must hold exactly the model's parameters and buffers
/// with the same shapes and dtypes, and, when `optim` is given, the optimizer type and every slot
/// (see Optimizer::check_state). Everything is read and validated before anything is assigned, so
/// on any error the model and optimizer are untouched. Values are copied into the existing
/// tensors (on their devices), so pointers held by an optimizer stay valid.
/// Throws IoError ("[load_checkpoint] <path> ...") when the file is missing or not a valid
/// checkpoint, InvalidArgument ("[load_checkpoint] ...") when it does not match the model or
/// optimizer.
TrainState load_checkpoint(const std::string& path, Module& model, Optimizer* optim,
                           const ExecContext& ctx = {});

}  // namespace frugal::nn
