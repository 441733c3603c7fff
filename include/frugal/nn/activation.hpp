#pragma once
/// Elementwise activations: ReLU and GELU (exact erf form and tanh approximation), as functional
/// ops and as layers. Floating dtypes f32, f64, f16, bf16 (f16 / bf16 compute in float, f64 in
/// double) on the CPU and on CUDA. Inputs may be strided; outputs are new contiguous tensors.
#include <string>

#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"
#include "frugal/nn/module.hpp"

namespace frugal::nn {

/// Which GELU (torch.nn.GELU(approximate = "none" | "tanh")).
enum class GeluApprox {
  kNone,  ///< x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))
  kTanh,  ///< 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
};

/// max(x, 0) elementwise.
Tensor relu(ConstTensorView x, const ExecContext& ctx = {});
/// grad_out * (x > 0): the input gradient of relu (0 at x = 0, as PyTorch).
Tensor relu_backward(ConstTensorView grad_out, ConstTensorView x, const ExecContext& ctx = {});
/// GELU of x elementwise.
Tensor gelu(ConstTensorView x, GeluApprox approx = GeluApprox::kNone, const ExecContext& ctx = {});
/// grad_out * GELU'(x): Phi(x) + x phi(x) for kNone, the derivative of the tanh form for kTanh.
Tensor gelu_backward(ConstTensorView grad_out, ConstTensorView x,
                     GeluApprox approx = GeluApprox::kNone, const ExecContext& ctx = {});

/// ReLU layer; keeps its last input for backward (forward then backward must pair).
class ReLU : public Module {
 public:
  ReLU() = default;
  Tensor forward(const Tensor& input) override;
  Tensor backward(const Tensor& grad_output) override;
  std::string type_name() const override { return "ReLU"; }

 private:
  Tensor input_;
};

/// GELU layer (torch.nn.GELU); keeps its last input for backward.
class GELU : public Module {
 public:
  explicit GELU(GeluApprox approx = GeluApprox::kNone) : approx_(approx) {}
  Tensor forward(const Tensor& input) override;
  Tensor backward(const Tensor& grad_output) override;
  std::string type_name() const override { return "GELU"; }
  GeluApprox approx() const { return approx_; }

 private:
  GeluApprox approx_;
  Tensor input_;
};

}  // namespace frugal::nn
