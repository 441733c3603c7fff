// Validation and device dispatch of causal self-attention (frugal/nn/attention.hpp), and the
// module.
#include "frugal/nn/attention.hpp"

#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>

#include "cu_ops.hpp"
#include "frugal/amp/autocast.hpp"
#include "nn/cpu/transformer.hpp"
#include "nn/transformer_check.hpp"

namespace frugal::nn {
namespace {

constexpr const char* kFwd = "causal_attention_forward";
constexpr const char* kBwd = "causal_attention_backward";

/// qkv (B, T, 3C) with C divisible by num_heads; returns C.
int64_t check_qkv(const char* op, ConstTensorView qkv, int64_t num_heads) {
  detail::check_real(op, qkv, "qkv");
  FRUGAL_REQUIRE(qkv.rank() == 3, op, "qkv must be (B, T, 3C), got shape ", qkv.shape);
  FRUGAL_REQUIRE(qkv.dim(2) % 3 == 0, op, "the last axis of qkv (", qkv.dim(2),
                 ") is not divisible by 3");
  const int64_t c = qkv.dim(2) / 3;
  FRUGAL_REQUIRE(num_heads > 0, op, "num_heads must be > 0, got ", num_heads);
  FRUGAL_REQUIRE(c % num_heads == 0, op, "C = ", c, " is not divisible by num_heads = ", num_heads);
  return c;
}

/// amp::low_gemm_into of 3-D operands. On the CPU the batch is cut into fixed chunks of
/// kBatchChunk products spread over the oneTBB workers, each running oneDNN on its own thread
/// (products this small run single-threaded, see amp::low_gemm_into): the parallelism of the
/// fp32 kernel over (batch, head) pairs. The chunks are independent, so results do not depend
/// on the thread count.
void batched_low_gemm(const Tensor& a, const Tensor& b, Tensor c, const amp::GemmOptions& o,
                      const ExecContext& ctx) {
  constexpr int64_t kBatchChunk = 8;
  const int64_t batch = a.dim(0);
  if (a.device().kind != DeviceKind::kCpu || batch <= kBatchChunk) {
    amp::low_gemm_into(a, b, c, o, ctx);
    return;
  }
  const int64_t chunks = (batch + kBatchChunk - 1) / kBatchChunk;
  ctx.run([&] {
    tbb::parallel_for(int64_t{0}, chunks, [&](int64_t i) {
      const int64_t lo = i * kBatchChunk, hi = std::min(batch, lo + kBatchChunk);
      ExecContext one = ctx;
      one.num_threads = 1;
      amp::low_gemm_into(a.slice(0, lo, hi), b.slice(0, lo, hi), c.slice(0, lo, hi), o, one);
    });
  });
}

/// cpu:: / cu::attention_split_heads_low: src (B, T, P*C) f32 -> dst (P, B*H, T, hd) low.
void split_heads_low(const Tensor& src, int64_t parts, int64_t num_heads, Tensor& dst,
                     const ExecContext& ctx) {
  switch (src.device().kind) {
    case DeviceKind::kCpu:
      return cpu::attention_split_heads_low(src, parts, num_heads, dst, ctx);
    case DeviceKind::kCuda:
      return cu::attention_split_heads_low(src, parts, num_heads, dst, ctx);
  }
}

/// cpu:: / cu::attention_merge_heads: src (P, B*H, T, hd) f32 -> dst (B, T, P*C) f32.
void merge_heads(const Tensor& src, int64_t num_heads, Tensor& dst, const ExecContext& ctx) {
  switch (src.device().kind) {
    case DeviceKind::kCpu:
      return cpu::attention_merge_heads(src, num_heads, dst, ctx);
    case DeviceKind::kCuda:
      return cu::attention_merge_heads(src, num_heads, dst, ctx);
  }
}

}  // namespace

CausalAttentionForward causal_attention_forward(ConstTensorView qkv, int64_t num_heads,
                                                const ExecContext& ctx) {
  const int64_t c = check_qkv(kFwd, qkv, num_heads);
  const int64_t b = qkv.dim(0), t = qkv.dim(1);
  CausalAttentionForward r;
  r.out = Tensor::empty({b, t, c}, qkv.dtype, qkv.device, ctx);
  r.probs = Tensor::empty({b, num_heads, t, t}, qkv.dtype, qkv.device, ctx);
  if (b * t * c == 0) return r;
  Tensor hq;
  const ConstTensorView qc = detail::contiguous(qkv, hq, ctx);
  switch (qkv.device.kind) {
    case DeviceKind::kCpu:
      cpu::causal_attention_forward(qc, num_heads, r.out.view(), r.probs.view(), ctx);
      break;
    case DeviceKind::kCuda:
      cu::causal_attention_forward(qc, num_heads, r.out.view(), r.probs.view(), ctx);
      break;
  }
  return r;
}

Tensor causal_attention_backward(ConstTensorView grad_out, ConstTensorView qkv,
                                 ConstTensorView probs, int64_t num_heads, const ExecContext& ctx) {
  const int64_t c = check_qkv(kBwd, qkv, num_heads);
  const int64_t b = qkv.dim(0), t = qkv.dim(1);
  detail::check_like(kBwd, grad_out, "grad_out", qkv, "qkv");
  detail::check_like(kBwd, probs, "probs", qkv, "qkv");
  FRUGAL_REQUIRE(grad_out.shape == Shape({b, t, c}), kBwd, "grad_out has shape ", grad_out.shape,
                 "; expected ", Shape({b, t, c}));
  FRUGAL_REQUIRE(probs.shape == Shape({b, num_heads, t, t}), kBwd, "probs has shape ", probs.shape,
                 "; expected ", Shape({b, num_heads, t, t}));
  Tensor grad_qkv = Tensor::empty(qkv.shape, qkv.dtype, qkv.device, ctx);
  if (b * t * c == 0) return grad_qkv;
  Tensor hg, hq, hp;
  const ConstTensorView gc = detail::contiguous(grad_out, hg, ctx);
  const ConstTensorView qc = detail::contiguous(qkv, hq, ctx);
  const ConstTensorView pc = detail::contiguous(probs, hp, ctx);
  switch (qkv.device.kind) {
    case DeviceKind::kCpu:
      cpu::causal_attention_backward(gc, qc, pc, num_heads, grad_qkv.view(), ctx);
      break;
    case DeviceKind::kCuda:
      cu::causal_attention_backward(gc, qc, pc, num_heads, grad_qkv.view(), ctx);
      break;
  }
  return grad_qkv;
}

CausalSelfAttention::CausalSelfAttention(int64_t dim, int64_t num_heads, uint64_t seed, DType dtype)
    : dim_(dim), num_heads_(num_heads) {
  FRUGAL_REQUIRE(dim > 0 && num_heads > 0, "CausalSelfAttention",
                 "dim and num_heads must be > 0, got ", dim, " and ", num_heads);
  FRUGAL_REQUIRE(dim % num_heads == 0, "CausalSelfAttention", "dim ", dim,
                 " is not divisible by num_heads ", num_heads);
  FRUGAL_REQUIRE(dtype == DType::kF32 || dtype == DType::kF64, "CausalSelfAttention", "dtype ",
                 dtype_name(dtype), " is not supported (f32, f64)");
  c_attn_ = register_module("c_attn", std::make_shared<Linear>(dim, 3 * dim, true, seed, dtype));
  c_proj_ = register_module("c_proj", std::make_shared<Linear>(dim, dim, true, seed + 1, dtype));
}

Tensor CausalSelfAttention::forward(const Tensor& input) {
  FRUGAL_REQUIRE(input.defined(), "CausalSelfAttention::forward", "input is undefined");
  FRUGAL_REQUIRE(input.rank() == 3 && input.dim(2) == dim_, "CausalSelfAttention::forward",
                 "input must be (B, T, ", dim_, "), got shape ", input.shape());
  Tensor qkv = c_attn_->forward(input);  // (B, T, 3C)
  product_dtype_ = qkv.dtype() == DType::kF32 ? amp::autocast_dtype(amp::OpClass::kAttentionProduct)
                                              : qkv.dtype();
  if (product_dtype_ == qkv.dtype()) {
    CausalAttentionForward a = causal_attention_forward(qkv, num_heads_, ctx_);
    qkv_ = std::move(qkv);
    probs_ = std::move(a.probs);
    return c_proj_->forward(a.out);
  }
  // Autocast: q, k and v rounded to the low dtype (the products' operands), the products on
  // amp::gemm (fp32 accumulation; oneDNN on the CPU, cuBLAS on CUDA), the causal softmax in
  // fp32 / double with the probabilities stored rounded, and P V on the stored probabilities.
  const int64_t b = qkv.dim(0), t = qkv.dim(1), h = num_heads_, hd = dim_ / num_heads_;
  // (B, T, 3, H, hd) -> (3, B*H, T, hd), rounded: q, k, v as contiguous (B*H, T, hd) operands.
  Tensor heads = Tensor::empty({3, b * h, t, hd}, product_dtype_, qkv.device(), ctx_);
  split_heads_low(qkv.contiguous(ctx_), 3, num_heads_, heads, ctx_);
  qkv = Tensor();
  const Tensor q = heads.slice(0, 0, 1).reshape({b * h, t, hd});
  const Tensor k = heads.slice(0, 1, 2).reshape({b * h, t, hd});
  const Tensor v = heads.slice(0, 2, 3).reshape({b * h, t, hd});
  Tensor scores = Tensor::empty({b * h, t, t}, DType::kF32, heads.device(), ctx_);
  amp::GemmOptions qk;  // S = q k^T / sqrt(hd)
  qk.trans_b = true;
  qk.alpha = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  batched_low_gemm(q, k, scores, qk, ctx_);
  Tensor probs = Tensor::empty({b * h, t, t}, product_dtype_, heads.device(), ctx_);
  switch (heads.device().kind) {
    case DeviceKind::kCpu:
      cpu::causal_softmax_low(scores, probs.view(), ctx_);
      break;
    case DeviceKind::kCuda:
      cu::causal_softmax_low(scores, probs.view(), ctx_);
      break;
  }
  scores = Tensor();
  Tensor y = Tensor::empty({b * h, t, hd}, DType::kF32, heads.device(), ctx_);  // (B*H, T, hd)
  batched_low_gemm(probs, v, y, {}, ctx_);
  // Saved in the (3, B*H, T, hd) head layout; f32 copies of the rounded values when the policy
  // keeps fp32 activations (backward rounds them again, exactly).
  const bool keep_low = amp::saved_activation_dtype() == product_dtype_;
  qkv_ = keep_low ? std::move(heads) : heads.to(DType::kF32, ctx_);
  probs_ = keep_low ? std::move(probs) : probs.to(DType::kF32, ctx_);
  Tensor out = Tensor::empty({b, t, dim_}, DType::kF32, y.device(), ctx_);  // (B, T, C)
  merge_heads(y.reshape({1, b * h, t, hd}), num_heads_, out, ctx_);
  y = Tensor();
  return c_proj_->forward(out);
}

Tensor CausalSelfAttention::backward(const Tensor& grad_output) {
  FRUGAL_REQUIRE(qkv_.defined(), "CausalSelfAttention::backward", "backward called before forward");
  FRUGAL_REQUIRE(grad_output.defined(), "CausalSelfAttention::backward",
                 "grad_output is undefined");
  Tensor g = c_proj_->backward(grad_output);
  notify_grads_ready(*c_proj_, "c_proj.");
  Tensor grad_qkv;
  if (product_dtype_ == g.dtype()) {
    grad_qkv = causal_attention_backward(g, qkv_, probs_, num_heads_, ctx_);
  } else {
    // Autocast: every backward product on amp::gemm with low-precision operands (the rounded
    // output gradient, q, k, v, the stored probabilities and the rounded score gradient).
    const DType low = product_dtype_;
    const int64_t b = g.dim(0), t = g.dim(1), h = num_heads_, hd = dim_ / num_heads_;
    const Tensor heads = qkv_.dtype() == low ? qkv_ : amp::to_low(qkv_, low, ctx_);
    const Tensor p = probs_.dtype() == low ? probs_ : amp::to_low(probs_, low, ctx_);
    qkv_ = Tensor();  // mixed precision releases the saved tensors (see Linear::backward)
    probs_ = Tensor();
    const Tensor q = heads.slice(0, 0, 1).reshape({b * h, t, hd});
    const Tensor k = heads.slice(0, 1, 2).reshape({b * h, t, hd});
    const Tensor v = heads.slice(0, 2, 3).reshape({b * h, t, hd});
    Tensor dy = Tensor::empty({b * h, t, hd}, low, g.device(), ctx_);  // (B, T, C) rounded
    split_heads_low(g.contiguous(ctx_), 1, num_heads_, dy, ctx_);
    g = Tensor();
    const Device dev = heads.device();
    Tensor dp = Tensor::empty({b * h, t, t}, DType::kF32, dev, ctx_);
    amp::GemmOptions nt;  // dP = dy v^T
    nt.trans_b = true;
    batched_low_gemm(dy, v, dp, nt, ctx_);
    Tensor grads = Tensor::empty({3, b * h, t, hd}, DType::kF32, dev, ctx_);  // dq, dk, dv
    amp::GemmOptions tn;  // dv = P^T dy, dk = dS^T q
    tn.trans_a = true;
    batched_low_gemm(p, dy, grads.slice(0, 2, 3).reshape({b * h, t, hd}), tn, ctx_);
    Tensor ds = Tensor::empty({b * h, t, t}, low, dev, ctx_);
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    switch (dev.kind) {
      case DeviceKind::kCpu:
        cpu::causal_softmax_backward_low(p, dp, scale, ds.view(), ctx_);
        break;
      case DeviceKind::kCuda:
        cu::causal_softmax_backward_low(p, dp, scale, ds.view(), ctx_);
        break;
    }
    dp = Tensor();
    batched_low_gemm(ds, k, grads.slice(0, 0, 1).reshape({b * h, t, hd}), {}, ctx_);  // dq = dS k
    batched_low_gemm(ds, q, grads.slice(0, 1, 2).reshape({b * h, t, hd}), tn, ctx_);
    grad_qkv = Tensor::empty({b, t, 3 * dim_}, DType::kF32, dev, ctx_);  // (B, T, 3C)
    merge_heads(grads, num_heads_, grad_qkv, ctx_);
  }
  Tensor grad_input = c_attn_->backward(grad_qkv);
  notify_grads_ready(*c_attn_, "c_attn.");
  return grad_input;
}

}  // namespace frugal::nn
