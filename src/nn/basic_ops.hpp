#pragma once
// Backend contract of the basic nn ops (Linear bias, activations, dropout, losses). Internal
// header, usable from host code and from .cu files.
//
// The dispatch files src/nn/{linear,activation,dropout,loss}.cpp validate arguments and hand the
// backends (cpu:: declared here, cu:: through cu_ops.def) contiguous inputs and outputs of one
// floating dtype (f32, f64, f16, bf16; f16 / bf16 compute in float). Masks are u8, targets i64.
#include <math.h>  // erf, exp, tanh and their float forms, host and device

#include <cstdint>

#include "frugal/core/config.hpp"
#include "frugal/core/philox.hpp"
#include "frugal/core/tensor.hpp"

namespace frugal::nn::detail {

/// Elementwise activations; the int value is what cpu:: / cu:: activation ops receive.
enum class ActKind : int { kRelu = 0, kGeluErf = 1, kGeluTanh = 2 };

/// act(x) in the arithmetic type A (float or double).
template <class A>
FRUGAL_INLINE A act_forward(int kind, A x) {
  constexpr A kHalf = A(0.5);
  constexpr A kInvSqrt2 = A(0.70710678118654752440);     // 1 / sqrt(2)
  constexpr A kSqrt2OverPi = A(0.79788456080286535588);  // sqrt(2 / pi)
  constexpr A kCubic = A(0.044715);
  switch (static_cast<ActKind>(kind)) {
    case ActKind::kRelu:
      return x < A(0) ? A(0) : x;  // NaN stays NaN
    case ActKind::kGeluErf:
      return kHalf * x * (A(1) + erf(x * kInvSqrt2));
    case ActKind::kGeluTanh:
      return kHalf * x * (A(1) + tanh(kSqrt2OverPi * (x + kCubic * x * x * x)));
  }
  return x;
}

/// grad * act'(x) in the arithmetic type A.
template <class A>
FRUGAL_INLINE A act_backward(int kind, A grad, A x) {
  constexpr A kHalf = A(0.5);
  constexpr A kInvSqrt2 = A(0.70710678118654752440);
  constexpr A kInvSqrt2Pi = A(0.39894228040143267794);  // 1 / sqrt(2 pi)
  constexpr A kSqrt2OverPi = A(0.79788456080286535588);
  constexpr A kCubic = A(0.044715);
  switch (static_cast<ActKind>(kind)) {
    case ActKind::kRelu:
      return x > A(0) ? grad : A(0);
    case ActKind::kGeluErf:
      // d/dx x Phi(x) = Phi(x) + x phi(x).
      return grad * (kHalf * (A(1) + erf(x * kInvSqrt2)) + x * kInvSqrt2Pi * exp(-kHalf * x * x));
    case ActKind::kGeluTanh: {
      // u = sqrt(2/pi) (x + c x^3): d/dx 0.5 x (1 + tanh u) = 0.5 (1 + t) + 0.5 x (1 - t^2) u'.
      const A x2 = x * x;
      const A t = tanh(kSqrt2OverPi * x * (A(1) + kCubic * x2));
      const A du = kSqrt2OverPi * (A(1) + A(3) * kCubic * x2);
      return grad * (kHalf * (A(1) + t) + kHalf * x * (A(1) - t * t) * du);
    }
  }
  return grad;
}

/// Philox block `block` (elements 4 block .. 4 block + 3) of the dropout stream of (seed, step):
/// the Philox stream of frugal/core/philox.hpp with a 128-bit counter offset of step * 2^64, i.e.
/// counter (block low, block high, step low, step high) and key seed. Each (seed, step) draws an
/// independent stream of up to 2^66 elements, identical on host and device.
FRUGAL_INLINE Uint4 dropout_block(uint64_t seed, uint64_t step, uint64_t block) {
  const Uint4 counter{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32),
                      static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32)};
  return Philox4x32::generate(counter, seed);
}

/// Keep bit of a dropout element from its Philox word: dropped when uniform01(word) < p.
FRUGAL_INLINE bool dropout_keep_word(uint32_t word, float p) { return !(uniform01(word) < p); }

/// Keep bit of dropout element i for (seed, step) (lane i % 4 of dropout_block(i / 4)).
FRUGAL_INLINE bool dropout_keep(uint64_t seed, uint64_t step, uint64_t i, float p) {
  return dropout_keep_word(lane(dropout_block(seed, step, i / 4), static_cast<int>(i % 4)), p);
}

/// True for the floating dtypes the basic nn ops compute in (f32, f64, f16, bf16).
inline bool is_nn_float(DType t) {
  return t == DType::kF32 || t == DType::kF64 || t == DType::kF16 || t == DType::kBF16;
}

/// Throws "[op] <name> has dtype ..." unless x has a floating dtype and data.
inline void require_float(const char* op, ConstTensorView x, const char* name) {
  FRUGAL_REQUIRE(is_nn_float(x.dtype), op, name, " has dtype ", dtype_name(x.dtype),
                 "; expected f32, f64, f16 or bf16");
  FRUGAL_REQUIRE(x.data != nullptr || x.numel() == 0, op, name, " has null data");
}

/// Throws unless a and b agree in device, dtype and shape.
inline void require_same(const char* op, ConstTensorView a, const char* an, ConstTensorView b,
                         const char* bn) {
  FRUGAL_REQUIRE(a.device == b.device, op, an, " is on ", a.device.str(), " but ", bn, " is on ",
                 b.device.str());
  FRUGAL_REQUIRE(a.dtype == b.dtype, op, an, " has dtype ", dtype_name(a.dtype), " but ", bn,
                 " has dtype ", dtype_name(b.dtype));
  FRUGAL_REQUIRE(a.shape == b.shape, op, an, " has shape ", a.shape, " but ", bn, " has shape ",
                 b.shape);
}

/// `v` itself when contiguous, otherwise a contiguous copy kept alive by `holder`.
inline ConstTensorView contiguous_view(ConstTensorView v, Tensor& holder, const ExecContext& ctx) {
  if (v.is_contiguous()) return v;
  holder = Tensor::empty(v.shape, v.dtype, v.device, ctx);
  holder.copy_from(v, ctx);
  return holder.cview();
}

}  // namespace frugal::nn::detail

namespace frugal::nn::cpu {

/// y (M, N) += bias (N) on every row.
void linear_add_bias(TensorView y, ConstTensorView bias, const ExecContext& ctx);
/// grad_bias (N) += sum over the rows of grad (M, N); double accumulation, fixed order.
void linear_bias_grad(ConstTensorView grad, TensorView grad_bias, const ExecContext& ctx);
/// y = act(x), elementwise.
void activation_forward(int kind, ConstTensorView x, TensorView y, const ExecContext& ctx);
/// out = grad * act'(x), elementwise.
void activation_backward(int kind, ConstTensorView grad, ConstTensorView x, TensorView out,
                         const ExecContext& ctx);
/// y (bf16 or f16) = act(x) for f32 x, computed in float and rounded once (nearest even): the
/// autocast output of an activation without an f32 buffer. Contiguous, same numel.
void activation_forward_low(int kind, ConstTensorView x, TensorView y, const ExecContext& ctx);
/// out = grad * act'(x) for x in bf16 or f16 (an activation input saved in the autocast's low
/// dtype) and grad either f32 or x's dtype; out has grad's dtype. Computed in float, no f32 copy
/// of x. Contiguous, same numel.
void activation_backward_low(int kind, ConstTensorView grad, ConstTensorView x, TensorView out,
                             const ExecContext& ctx);
/// y = keep ? x * scale : 0 and mask (u8) = keep, keep from detail::dropout_keep.
void dropout_forward(ConstTensorView x, float p, double scale, uint64_t seed, uint64_t step,
                     TensorView y, TensorView mask, const ExecContext& ctx);
/// out = mask ? grad * scale : 0.
void dropout_backward(ConstTensorView grad, ConstTensorView mask, double scale, TensorView out,
                      const ExecContext& ctx);
/// Mean softmax cross-entropy over the `num_valid` rows whose target is not ignore_index (targets
/// already validated), writing dL/dlogits into grad (N, C). Returns the mean loss.
double softmax_cross_entropy(ConstTensorView logits, ConstTensorView targets,
                             double label_smoothing, int64_t ignore_index, int64_t num_valid,
                             TensorView grad, const ExecContext& ctx);
/// Mean squared error of pred and target, writing dL/dpred = 2 (pred - target) / n into grad.
double mse_loss(ConstTensorView pred, ConstTensorView target, TensorView grad,
                const ExecContext& ctx);

}  // namespace frugal::nn::cpu
