#pragma once
// Backend contract of the optimizer kernels (include/frugal/nn/optim.hpp). Internal header.
//
// src/nn/optim.cpp validates and hands the backends (cpu:: here, cu:: through cu_ops.def)
// contiguous tensors of one dtype (f32 or f64) and one device, all of the same shape. The step's
// scalars arrive as doubles and are rounded once to the element type.
#include <cstdint>

#include "frugal/core/tensor.hpp"

namespace frugal::cpu {

/// One torch.optim.SGD update of p from g; `buf` (momentum buffer) is used only when
/// momentum != 0 and is set to the gradient when `first`.
void optim_sgd_update(TensorView p, ConstTensorView g, TensorView buf, double lr, double momentum,
                      double dampening, double weight_decay, bool nesterov, bool first,
                      const ExecContext& ctx);

/// One torch.optim.AdamW update: p *= decay; m = lerp(m, g, 1 - beta1);
/// v = beta2 v + (1 - beta2) g^2; p -= step_size * m / (sqrt(v) / bc2_sqrt + eps).
void optim_adamw_update(TensorView p, ConstTensorView g, TensorView m, TensorView v, double decay,
                        double beta1, double beta2, double step_size, double bc2_sqrt, double eps,
                        const ExecContext& ctx);

/// AdamW with bf16 moments m, v (f32 p and g): each element's moments are read to fp32, updated
/// as in optim_adamw_update (the parameter step uses the fp32 values) and stored to bf16 with
/// nearest-even or, when `stochastic`, stochastic rounding from Philox (seed, offset; consumes
/// 2 * ceil(n / 2) counters).
void optim_adamw_update_bf16(TensorView p, ConstTensorView g, TensorView m, TensorView v,
                             double decay, double beta1, double beta2, double step_size,
                             double bc2_sqrt, double eps, bool stochastic, uint64_t seed,
                             uint64_t offset, const ExecContext& ctx);

/// Sum of x^2 over every element, in double, in fixed chunks of kReduceChunk combined in order.
double optim_sum_squares(ConstTensorView x, const ExecContext& ctx);

/// x *= alpha in place (alpha rounded to the element type).
void optim_scale_inplace(TensorView x, double alpha, const ExecContext& ctx);

}  // namespace frugal::cpu
