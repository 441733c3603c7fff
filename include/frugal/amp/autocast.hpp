#pragma once
/// What nn layers use to follow the autocast policy (frugal/amp/policy.hpp) while an AmpContext is
/// active: the dtype an op class computes in, the low-precision copies of the fp32 master weights
/// (cached per layer, refreshed after every optimizer step), the casts of activations and
/// gradients, and the low-precision GEMM with fp32 accumulation and fp32 output.
///
/// Output dtype: under autocast the GEMM-class layers (Linear, Conv2d, attention products) return
/// fp32, not the low dtype PyTorch's autocast returns. The products accumulate in fp32 anyway;
/// every op downstream of them here (norms, residual adds, softmax, losses) is an fp32 op, so a
/// low-precision output would only be converted back, costing a rounding and two passes. The
/// activation memory that PyTorch saves by low-precision outputs is saved here by storing the
/// tensors kept for backward in the low dtype (AutocastPolicy::low_saved_activations).
#include <cstdint>

#include "frugal/amp/gemm.hpp"
#include "frugal/amp/policy.hpp"
#include "frugal/core/dtype.hpp"
#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"

namespace frugal::amp {

/// The dtype an op of class `c` computes in now: the active policy's `low` when an AmpContext is
/// active and its policy runs `c` in low precision, else kF32.
DType autocast_dtype(OpClass c);

/// The dtype layers store their saved-for-backward activations in now: the active policy's `low`
/// when an AmpContext is active and policy.low_saved_activations is set, else kF32.
DType saved_activation_dtype();

/// Version of the fp32 master weights: every optimizer step and invalidate_weight_copies() bump
/// it; a WeightCopy made at an older version is recast on its next use.
uint64_t master_weights_version();
/// Marks every low-precision weight copy stale (call after changing weights outside an optimizer,
/// e.g. after load_checkpoint). The mixed-precision hooks call it after each step.
void invalidate_weight_copies();

/// The input of a layer that computes in f32 (norms, pooling, losses, residual adds, the
/// gradients of layers with f32 backward kernels): while an AmpContext is active, an f16 / bf16
/// tensor (a GELU hands its output to the next GEMM in the low dtype, and a gradient may arrive in
/// it) as f32, exactly; any other tensor as it is (a wrong dtype then meets the layer's own check).
/// PyTorch's autocast casts the inputs of its fp32 ops the same way.
Tensor autocast_fp32(const Tensor& x, const ExecContext& ctx = {});

/// f32 `x` rounded to `low` (kBF16 or kF16; nearest even, overflow to Inf so that fp16 overflow
/// stays visible to the loss scaler) as a new contiguous tensor on x's device. x may be strided.
Tensor to_low(const Tensor& x, DType low, const ExecContext& ctx = {});

/// The low-precision copy of one fp32 master weight, kept by the layer that uses it and recast
/// only when the master changed (master_weights_version, its storage or shape) or the dtype did.
class WeightCopy {
 public:
  /// The copy of `master` (contiguous f32) in `dtype` (kBF16, kF16, kF8E4M3, kF8E5M2; fp8 after
  /// multiplying by `scale`). Recasting computes the master's amax in the same pass and throws
  /// InvalidArgument "[amp::autocast] Inf or NaN in master weights of <layer>" when it is not
  /// finite: a diverged run stops at the first layer that sees it.
  const Tensor& get(const Tensor& master, DType dtype, const char* layer, float scale = 1.f,
                    const ExecContext& ctx = {});
  /// The max |master| measured by the last recast (0 before the first).
  float amax() const { return amax_; }
  /// Drops the copy (its memory is freed when no saved tensor shares it).
  void reset() { copy_ = Tensor(); }
  /// Bytes held by the copy.
  int64_t nbytes() const { return copy_.defined() ? copy_.nbytes() : 0; }

 private:
  Tensor copy_;
  uint64_t version_ = 0;
  const void* source_ = nullptr;
  float scale_ = 1.f;
  float amax_ = 0.f;
};

/// C (f32, (M, N) or (B, M, N)) = alpha * (a_scale op(A)) (b_scale op(B)) + beta * C for A and B
/// in bf16 or f16 (one dtype) or fp8 (any mix of E4M3 and E5M2), with fp32 accumulation: the
/// layers' entry to amp::gemm_into. A, B and C contiguous, rank 2 or 3, on one device. On the CPU
/// a product below 2^28 flops runs on the calling thread (ctx.num_threads = 1; docs/amp.md).
void low_gemm_into(ConstTensorView a, ConstTensorView b, TensorView c, const GemmOptions& o,
                   const ExecContext& ctx = {});

}  // namespace frugal::amp
