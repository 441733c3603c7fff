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

/// ReLU layer; keeps its last input for backward (forward then backward must pair). Inside an
/// amp::AmpContext whose policy has low_saved_activations, an f32 input is kept in the policy's
/// low dtype (ReLU's backward needs only its sign, which bf16 / f16 keep exactly).
class ReLU : public Module {
 public:
  ReLU() = default;
  Tensor forward(const Tensor& input) override;
  Tensor backward(const Tensor& grad_output) override;
  std::string type_name() const override { return "ReLU"; }

 private:
  Tensor input_;
  bool autocast_ = false;  // input_ is a low-precision copy (released by backward)
};

/// GELU layer (torch.nn.GELU); keeps its last input for backward, in the policy's low dtype inside
/// an amp::AmpContext with low_saved_activations (the derivative is then taken at the rounded
/// input). Under a policy that runs kGemm low it also returns its output in the low dtype,
/// computed from the rounded input, for the Linear that follows (the GPT MLP: c_fc -> GELU ->
/// c_proj), and its gradient flows in the dtype it arrives in. Under autocast backward releases the
/// saved input.
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
  bool autocast_ = false;  // input_ is a low-precision copy (released by backward)
};

}  // namespace frugal::nn
