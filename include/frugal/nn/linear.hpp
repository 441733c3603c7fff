#pragma once
/// Dense layers: Linear (y = x W^T + b, as torch.nn.Linear) and Flatten, plus the two bias ops
/// Linear is built from. The products go through frugal::gemm / gemm_into (Eigen on the CPU,
/// cuBLAS on CUDA); the bias add and the bias-gradient column sum are nn ops of their own.
///
/// Every layer keeps what its backward needs from its LAST forward (llm.c style, no tape):
/// call forward, then backward with the gradient of that forward's output, before the next
/// forward. A backward without a forward throws.
#include <cstdint>

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


 private:
  int64_t in_features_;
  int64_t out_features_;
  Parameter* weight_;
  Parameter* bias_ = nullptr;
  Tensor input_;     // (N, in), the last forward's input as rows
  Shape out_shape_;  // (..., out) of the last forward
  Shape in_shape_;   // (..., in) of the last forward
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
