#pragma once
/// Embedding lookup (token and position embeddings of GPT-2; llm.c encoder_forward/backward):
/// out[..., :] = weight[ids[...], :]. Dtypes f32 and f64 on CPU and CUDA; ids are i64.
/// The weight gradient is a scatter-add that is deterministic on both backends: the rows that
/// hit one embedding are summed in index order (CPU: counting sort by id; CUDA: a stable radix
/// sort of the ids, then one segmented sum per distinct id, no atomics), in double.
#include <cstdint>

#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"
#include "frugal/nn/module.hpp"

namespace frugal::nn {

/// ids (any shape, rank >= 1, i64) and weight (V, D) -> (ids..., D). Every id must be in [0, V):
/// checked on the host for CPU tensors; for CUDA tensors checked by the gather kernel, which
/// costs one 8-byte device-to-host read (this call synchronizes ctx's stream). An out-of-range
/// id throws InvalidArgument.
Tensor embedding_forward(ConstTensorView ids, ConstTensorView weight, const ExecContext& ctx = {});

/// Accumulates (+=) dL/dweight into grad_weight (V, D, contiguous): row ids[i] receives
/// grad_out[i, :] for every position i. grad_out is (ids..., D). ids are not differentiable, so
/// there is no input gradient. The ids must be the ones embedding_forward accepted (in range):
/// CPU checks them again; CUDA skips out-of-range ids without an error (no synchronization).
void embedding_backward(ConstTensorView grad_out, ConstTensorView ids, TensorView grad_weight,
                        const ExecContext& ctx = {});

/// Embedding(V, D): parameter "weight" (V, D) initialised N(0, 1) like PyTorch, drawn with Philox
/// from `seed`. forward(ids i64) -> (ids..., D) and keeps the ids; backward(grad_out)
/// accumulates the weight gradient and returns an undefined Tensor (ids have no gradient).
class Embedding : public Module {
 public:
  Embedding(int64_t num_embeddings, int64_t dim, uint64_t seed, DType dtype = DType::kF32);

  Tensor forward(const Tensor& input) override;
  /// Returns an undefined Tensor: token ids are not differentiable.
  Tensor backward(const Tensor& grad_output) override;
  std::string type_name() const override { return "Embedding"; }

  int64_t num_embeddings() const { return num_; }
  int64_t dim() const { return dim_; }
  Parameter& weight() { return *weight_; }

 private:
  int64_t num_, dim_;
  Parameter* weight_ = nullptr;
  Tensor ids_;  // saved by forward
};

}  // namespace frugal::nn
