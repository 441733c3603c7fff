#pragma once
/// Dense layers: Linear (y = x W^T + b, as torch.nn.Linear) and Flatten, plus the two bias ops
/// Linear is built from. The products go through frugal::gemm / gemm_into (Eigen on the CPU,
/// cuBLAS on CUDA); the bias add and the bias-gradient column sum are nn ops of their own.
///
/// Every layer keeps what its backward needs from its LAST forward (llm.c style, no tape):
/// call forward, then backward with the gradient of that forward's output, before the next
/// forward. A backward without a forward throws.
#include <cstdint>

#include "frugal/amp/autocast.hpp"
#include "frugal/amp/fp8.hpp"
#include "frugal/core/dtype.hpp"
#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"
#include "frugal/nn/module.hpp"

namespace frugal::nn {

/// In place y[r, :] += bias for every row r. y is (M, N) with unit inner stride rows (contiguous),
/// bias is (N); same floating dtype (f32, f64, f16, bf16) and device.
void linear_add_bias(TensorView y, ConstTensorView bias, const ExecContext& ctx = {});

/// grad_bias (N) += the sum over rows of grad (M, N): the bias gradient of y = x W^T + b.
/// Same floating dtype and device; grad_bias contiguous. Sums accumulate in double in row order,
/// so CPU results do not depend on the thread count and CUDA results are deterministic.
void linear_bias_grad(ConstTensorView grad, TensorView grad_bias, const ExecContext& ctx = {});

/// y = x W^T + b as a new (..., out) tensor for x (..., in) and weight (out, in) (PyTorch layout);
/// `bias` (out) may be an undefined Tensor for no bias. Leading dims of x are flattened.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias,
              const ExecContext& ctx = {});

/// Fully connected layer y = x W^T + b (torch.nn.Linear). Input (..., in_features), output
/// (..., out_features); the leading dims are flattened to rows N. Parameters "weight"
/// (out_features, in_features) and "bias" (out_features), initialised as PyTorch does
/// (kaiming_uniform(a = sqrt(5)): U(-1/sqrt(in), 1/sqrt(in)) for both) from Philox with `seed`:
/// the weight from stream (seed, offset 0), the bias from (seed, offset philox_counters(out*in)).
/// Created on the CPU; move with to(Device::cuda()). Backward computes grad_x = g W and
/// accumulates grad_W += g^T x (gemm_into, beta = 1) and grad_b += column sums of g; a frozen
/// (trainable = false) parameter's gradient is left untouched.
///
/// Mixed precision (f32 layers only; see frugal/amp/autocast.hpp and frugal/amp/fp8.hpp):
/// - inside an amp::AmpContext whose policy runs kGemm low: the three GEMMs take bf16 / f16
///   operands (the input and grad_output cast per call, the weight from a cached copy refreshed
///   after each optimizer step) with fp32 accumulation; the output and the parameter gradients
///   are f32 (the master weights are f32). The saved input is kept in the low dtype and released
///   by backward. The input and grad_output may also arrive in the low dtype (from a GELU between
///   two Linears, as in the GPT MLP); grad_input has the dtype of the forward's input.
/// - inside an amp::Fp8Autocast: input and weight are quantized to E4M3 and grad_output to E5M2
///   (HYBRID) or E4M3 with per-tensor scales of the recipe (input_meta(), weight_meta(),
///   grad_meta()); the saved input and weight are the fp8 tensors (1 byte per element).
/// Backward follows the mode of the forward it differentiates, whatever guard is active then.
class Linear : public Module {
 public:
  /// dtype: f32 or f64 (f64 on the CPU for finite-difference tests; f16 / bf16 also work).
  Linear(int64_t in_features, int64_t out_features, bool bias = true, uint64_t seed = 0,
         DType dtype = DType::kF32);

  Tensor forward(const Tensor& input) override;
  Tensor backward(const Tensor& grad_output) override;
  std::string type_name() const override { return "Linear"; }

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }
  Parameter& weight() { return *weight_; }
  /// The bias parameter, or nullptr for a layer built with bias = false.
  Parameter* bias() { return bias_; }
  /// FP8 scaling state of the input, the weight and the output gradient (Fp8Autocast only).
  const amp::Fp8TensorMeta& input_meta() const { return fp8_input_; }
  const amp::Fp8TensorMeta& weight_meta() const { return fp8_weight_; }
  const amp::Fp8TensorMeta& grad_meta() const { return fp8_grad_; }

 private:
  int64_t in_features_;
  int64_t out_features_;
  Parameter* weight_;
  Parameter* bias_ = nullptr;
  Tensor input_;     // (N, in), the last forward's input as rows
  Shape out_shape_;  // (..., out) of the last forward
  Shape in_shape_;   // (..., in) of the last forward
  // Mixed precision: how the last forward ran, and what its backward needs besides input_.
  enum class Mode { kPlain, kLow, kFp8 } mode_ = Mode::kPlain;
  DType low_ = DType::kF32;  // kLow: the GEMM dtype
  bool input_low_ = false;   // kLow: the input arrived in low_ (grad_input is returned in low_)
  amp::WeightCopy w_copy_;   // kLow: cached low-precision copy of the weight
  Tensor w_used_;            // kLow / kFp8: the weight operand of the last forward
  amp::Fp8Recipe fp8_recipe_;
  amp::Fp8TensorMeta fp8_input_, fp8_weight_, fp8_grad_;
  float input_scale_inv_ = 1.f, weight_scale_inv_ = 1.f;  // kFp8: of the saved tensors
};

/// Flattens dims start_dim..-1 into one (torch.nn.Flatten(start_dim, -1)): (N, C, H, W) ->
/// (N, C*H*W) for start_dim = 1. A view when the input is contiguous (a copy otherwise);
/// backward reshapes the gradient back. start_dim may be negative (counted from the end) and
/// must name a dim of the input.
class Flatten : public Module {
 public:
  explicit Flatten(int start_dim = 1) : start_dim_(start_dim) {}
  Tensor forward(const Tensor& input) override;
  Tensor backward(const Tensor& grad_output) override;
  std::string type_name() const override { return "Flatten"; }

 private:
  int start_dim_;
  Shape in_shape_;
  Shape out_shape_;
  bool has_forward_ = false;
};

}  // namespace frugal::nn
