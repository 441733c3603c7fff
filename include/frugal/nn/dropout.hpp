#pragma once
/// Inverted dropout (Srivastava et al. 2014; torch.nn.Dropout): in training each element is
/// zeroed with probability p and the survivors are scaled by 1 / (1 - p); in evaluation the layer
/// is the identity.
///
/// The mask is a pure function of (seed, step, element index): element i (row-major) of step s
/// is dropped when uniform01 of lane i % 4 of philox4x32_10(counter = (i/4 low 32 bits, i/4 high
/// 32 bits, s low 32 bits, s high 32 bits), key = seed) is below p (float) — the Philox stream of
/// frugal/core/philox.hpp with a 128-bit counter offset of s * 2^64. So the CPU and the GPU draw
/// the same mask for the same (seed, step), whatever the thread count, and every step draws an
/// independent mask. The drop probability is p rounded up to a multiple of 2^-24.
#include <cstdint>
#include <string>

#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"
#include "frugal/nn/module.hpp"

namespace frugal::nn {

/// Result of dropout: the output (x's dtype, shape and device) and the keep mask (u8, 1 = kept).
struct DropoutResult {
  Tensor output;
  Tensor mask;
};

/// Inverted dropout of x (floating dtype, any strides) with drop probability p in [0, 1) and the
/// mask of (seed, step) described above.
DropoutResult dropout(ConstTensorView x, double p, uint64_t seed, uint64_t step,
                      const ExecContext& ctx = {});

/// Input gradient of dropout: grad_out * mask / (1 - p), mask (u8) as returned by dropout.
Tensor dropout_backward(ConstTensorView grad_out, ConstTensorView mask, double p,
                        const ExecContext& ctx = {});

/// Dropout layer. Each training forward uses mask (seed, step()) and then advances step() by one;
/// evaluation forwards are the identity and leave step() alone. Backward applies the mask saved by
/// the last forward (forward then backward must pair).
class Dropout : public Module {
 public:
  /// Throws InvalidArgument "[Dropout] ..." unless 0 <= p < 1.
  explicit Dropout(double p = 0.5, uint64_t seed = 0);
  Tensor forward(const Tensor& input) override;
  Tensor backward(const Tensor& grad_output) override;
  std::string type_name() const override { return "Dropout"; }

  double p() const { return p_; }
  uint64_t seed() const { return seed_; }
  /// The step counter the next training forward draws its mask with.
  uint64_t step() const { return step_; }
  /// Sets the step counter (to resume from a checkpoint).
  void set_step(uint64_t step) { step_ = step; }

 private:
  double p_;
  uint64_t seed_;
  uint64_t step_ = 0;
  Tensor mask_;            // u8 keep mask of the last training forward
  bool identity_ = false;  // the last forward was the identity (eval or p = 0)
  bool has_forward_ = false;
  Shape shape_;
};

}  // namespace frugal::nn
