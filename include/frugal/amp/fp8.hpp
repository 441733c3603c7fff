#pragma once
/// FP8 training recipes after NVIDIA Transformer Engine (transformer_engine.common.recipe): per-
/// tensor scales with an amax history, delayed scaling (the scale of step n comes from the amaxes
/// of earlier steps) or current scaling (from the tensor itself), E4M3 everywhere or HYBRID (E4M3
/// forward: inputs and weights; E5M2 backward: output gradients), the amax optionally reduced
/// (max) over data-parallel ranks. An nn::Linear run inside an Fp8Autocast quantizes its input,
/// weight and output gradient with amp::cast (scale and amax fused) and multiplies them with
/// amp::gemm (fp8 operands, dequantization scales, fp32 accumulation).
///
/// Scale rule (TE's _default_sf_compute): scale = fp8_max / amax / 2^margin, kept unchanged when
/// amax is 0 or not finite; a tensor is quantized as cast(x * scale) and the GEMM multiplies by
/// 1 / scale (scale_inv). fp8_max is 448 for E4M3 and 57344 for E5M2.
#include <cstdint>
#include <vector>

#include "frugal/core/dtype.hpp"
#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"

namespace frugal::parallel {
class Communicator;
}

namespace frugal::amp {

/// Which fp8 formats a recipe uses.
enum class Fp8Format {
  kE4M3,    ///< E4M3 for inputs, weights and gradients
  kHybrid,  ///< E4M3 forward (inputs, weights), E5M2 backward (output gradients): TE's HYBRID
};

/// Where a tensor's scale comes from.
enum class Fp8Scaling {
  kDelayed,  ///< from the amax history of earlier steps (TE DelayedScaling): one pass per cast
  kCurrent,  ///< from the tensor's own amax (TE Float8CurrentScaling): an extra amax pass
};

/// How the delayed recipe turns the history into one amax.
enum class AmaxCompute {
  kMax,         ///< max over the history window
  kMostRecent,  ///< the newest entry
};

/// An FP8 recipe (TE's DelayedScaling defaults: HYBRID is the common choice for training).
struct Fp8Recipe {
  Fp8Format format = Fp8Format::kHybrid;         ///< formats forward / backward
  Fp8Scaling scaling = Fp8Scaling::kDelayed;     ///< delayed or current scaling
  int64_t amax_history_len = 1024;               ///< entries of each tensor's amax history, >= 1
  AmaxCompute amax_compute = AmaxCompute::kMax;  ///< history -> amax (delayed scaling)
  int margin = 0;                                ///< scale = fp8_max / amax / 2^margin, >= 0
  /// When not null, every amax is reduced with max over its ranks before a scale is computed, so
  /// every data-parallel replica quantizes with the same scale. Not owned.
  parallel::Communicator* amax_reduce = nullptr;

  /// The dtype of forward tensors (inputs, weights): E4M3.
  DType forward_dtype() const { return DType::kF8E4M3; }
  /// The dtype of backward tensors (output gradients): E5M2 for kHybrid, E4M3 for kE4M3.
  DType backward_dtype() const {
    return format == Fp8Format::kHybrid ? DType::kF8E5M2 : DType::kF8E4M3;
  }
};

/// The largest finite value of an fp8 dtype: 448 (E4M3), 57344 (E5M2). Errors "[amp::fp8_max] ..."
/// for any other dtype.
float fp8_max(DType fp8);

/// TE's scale rule: fp8_max / amax / 2^margin, or `previous` when amax is 0, Inf or NaN.
float fp8_scale_from_amax(float amax, float fp8_max, int margin, float previous);

/// Scaling state of one tensor (a layer's input, weight or output gradient).
/// History convention: entry 0 is the current step's amax, entry k the amax of k steps ago.
class Fp8TensorMeta {
 public:
  /// Scale 1, an empty history (sized on first use to the recipe's amax_history_len).
  Fp8TensorMeta() = default;
  /// The scale the next delayed-scaling cast uses (quantized value = x * scale).
  float scale() const { return scale_; }
  /// 1 / scale: the dequantization factor the GEMM applies.
  float scale_inv() const { return 1.f / scale_; }
  /// The amax history, newest first (empty before first use).
  const std::vector<float>& amax_history() const { return history_; }
  /// Casts to this tensor so far.
  int64_t uses() const { return uses_; }

  /// Records the amax of a cast of the current step: history[0] = max(history[0], amax).
  void record_amax(float amax, int64_t history_len);
  /// Closes a step: the amax from the history (max or most recent, reduced over the recipe's
  /// communicator first), the new scale by fp8_scale_from_amax for `fp8`, then the history rolls
  /// by one (every entry ages a step, the oldest drops, entry 0 starts at 0).
  void update(DType fp8, const Fp8Recipe& recipe);

  /// Quantizes contiguous f32 `x` to `fp8` under `recipe` (saturating, nearest even):
  /// delayed: update() the scale from the earlier steps (except on the first use), then one fused
  /// cast x * scale -> fp8 that also records amax(x); current: amax(x) first (reduced over the
  /// communicator), scale from it, then the cast. Returns the fp8 tensor; scale_inv() is the
  /// factor to dequantize it with.
  Tensor quantize(const Tensor& x, DType fp8, const Fp8Recipe& recipe, const ExecContext& ctx = {});

 private:
  float scale_ = 1.f;
  std::vector<float> history_;
  int64_t uses_ = 0;
};

/// Checks a recipe: amax_history_len >= 1, margin >= 0. Errors "[amp::Fp8Recipe] ...".
void check_recipe(const Fp8Recipe& recipe);

/// RAII guard: nn::Linear layers of this thread run their GEMMs in fp8 under `recipe` until
/// destruction (takes precedence over an AmpContext for Linear; other layers follow the
/// AmpContext or run in fp32). Guards nest.
class Fp8Autocast {
 public:
  /// Activates `recipe` (copied, checked with check_recipe) on this thread.
  explicit Fp8Autocast(const Fp8Recipe& recipe = {});
  ~Fp8Autocast();
  Fp8Autocast(const Fp8Autocast&) = delete;
  Fp8Autocast& operator=(const Fp8Autocast&) = delete;
  /// The recipe of the innermost active guard of this thread, or nullptr.
  static const Fp8Recipe* current();

 private:
  Fp8Recipe recipe_;
  const Fp8Recipe* previous_;
};

}  // namespace frugal::amp
