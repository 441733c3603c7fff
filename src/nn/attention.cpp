// Validation and device dispatch of causal self-attention (frugal/nn/attention.hpp), and the
// module.
#include "frugal/nn/attention.hpp"

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
  // Autocast: q, k and v rounded to the low dtype (the products' operands), products accumulated
  // and softmax computed in fp32 / double.
  const Tensor qkv_low = amp::to_low(qkv, product_dtype_, ctx_);
  qkv = Tensor();
  const bool keep_low = amp::saved_activation_dtype() == product_dtype_;
  if (keep_low && qkv_low.device().kind == DeviceKind::kCpu) {
    // Host kernel on the low-precision tensors: no fp32 copy of qkv or probs is ever made.
    const int64_t b = qkv_low.dim(0), t = qkv_low.dim(1);
    Tensor out = Tensor::empty({b, t, dim_}, DType::kF32, qkv_low.device(), ctx_);
    probs_ = Tensor::empty({b, num_heads_, t, t}, product_dtype_, qkv_low.device(), ctx_);
    cpu::causal_attention_forward_low(qkv_low, num_heads_, out.view(), probs_.view(), ctx_);
    qkv_ = qkv_low;
    return c_proj_->forward(out);
  }
  // Elsewhere: the fp32 kernel on the rounded values.
  CausalAttentionForward a =
      causal_attention_forward(qkv_low.to(DType::kF32, ctx_), num_heads_, ctx_);
  qkv_ = keep_low ? qkv_low : qkv_low.to(DType::kF32, ctx_);
  probs_ = keep_low ? amp::to_low(a.probs, product_dtype_, ctx_) : std::move(a.probs);
  a.probs = Tensor();
  return c_proj_->forward(a.out);
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
  } else if (qkv_.dtype() == product_dtype_ && qkv_.device().kind == DeviceKind::kCpu) {
    grad_qkv = Tensor::empty(qkv_.shape(), g.dtype(), g.device(), ctx_);
    const Tensor gc = g.contiguous(ctx_);
    cpu::causal_attention_backward_low(gc, qkv_, probs_, num_heads_, grad_qkv.view(), ctx_);
  } else {
    // Autocast: the backward products take the rounded gradient, q, k, v and probabilities.
    const DType f = g.dtype();
    const Tensor gl = amp::to_low(g, product_dtype_, ctx_).to(f, ctx_);
    g = Tensor();
    grad_qkv =
        causal_attention_backward(gl, qkv_.to(f, ctx_), probs_.to(f, ctx_), num_heads_, ctx_);
  }
  if (product_dtype_ != grad_qkv.dtype()) {
    qkv_ = Tensor();  // mixed precision releases the saved tensors (see Linear::backward)
    probs_ = Tensor();
  }
  Tensor grad_input = c_attn_->backward(grad_qkv);
  notify_grads_ready(*c_attn_, "c_attn.");
  return grad_input;
}

}  // namespace frugal::nn
