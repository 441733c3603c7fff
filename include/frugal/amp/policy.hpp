#pragma once
/// The autocast policy as data: which op classes run in low precision while an AmpContext is
/// active. Defaults follow PyTorch's autocast op lists (torch.amp docs, "CUDA Ops that can
/// autocast to float16" / "CUDA Ops that can autocast to float32").
#include <map>

#include "frugal/core/dtype.hpp"

namespace frugal::amp {

/// Classes of ops that an autocast policy decides about.
enum class OpClass {
  kGemm,              ///< matmul, linear, addmm, bmm
  kConv,              ///< convolutions (and transposed)
  kAttentionProduct,  ///< Q K^T and P V products of attention
  kSoftmax,           ///< softmax
  kLogSoftmax,        ///< log-softmax
  kLoss,              ///< losses (cross-entropy, MSE, KL, ...)
  kNorm,              ///< layer / batch / group norms
  kReduction,         ///< sum, mean, norms of tensors, cumulative ops
  kExpLog,            ///< exp, log, pow and friends
  kElementwise,       ///< other elementwise ops: run in the dtype of their inputs
};

/// Which op classes run in `low` precision; a class missing from the map runs in fp32. Editable.
struct AutocastPolicy {
  DType low = DType::kBF16;               ///< the low-precision dtype (kBF16 or kF16)
  std::map<OpClass, bool> low_precision;  ///< true: cast inputs to `low`; false: compute in fp32
  /// Layers store the tensors they keep for backward (a Linear's input, attention's qkv and
  /// probabilities, an activation's input) in `low` instead of fp32: the activation-memory half
  /// of mixed precision. Backward then works from the rounded values.
  bool low_saved_activations = true;

  /// Whether `c` runs in low precision under this policy (false for a missing entry).
  bool is_low(OpClass c) const {
    auto it = low_precision.find(c);
    return it != low_precision.end() && it->second;
  }
};

/// PyTorch's lists: GEMM, convolution and attention products in `low`; softmax, log-softmax,
/// losses, norms, reductions and exp/log in fp32; elementwise ops follow their inputs (false).
AutocastPolicy default_policy(DType low = DType::kBF16);

/// RAII guard that makes `policy` the current autocast policy of this thread until destruction,
/// then restores the previous one (guards nest).
class AmpContext {
 public:
  /// Activates `policy` (copied) on this thread. Errors "[amp::AmpContext] ..." unless
  /// policy.low is kBF16 or kF16.
  explicit AmpContext(AutocastPolicy policy = default_policy());
  ~AmpContext();
  AmpContext(const AmpContext&) = delete;
  AmpContext& operator=(const AmpContext&) = delete;

  /// The policy of the innermost active guard of this thread, or nullptr when none is active.
  static const AutocastPolicy* current();

 private:
  AutocastPolicy policy_;
  const AutocastPolicy* previous_;
};

}  // namespace frugal::amp
