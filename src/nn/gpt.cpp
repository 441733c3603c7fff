// The GPT model (frugal/nn/gpt.hpp): composition of the transformer layers, following llm.c's
// gpt2_forward / gpt2_backward. Device-neutral: every op it calls dispatches on its own.
#include "frugal/nn/gpt.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "frugal/amp/autocast.hpp"
#include "frugal/core/ops.hpp"
#include "frugal/core/random.hpp"

namespace frugal::nn {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

// ---- MLP ----------------------------------------------------------------------------------

MLP::MLP(int64_t dim, uint64_t seed, DType dtype) {
  register_module("c_fc", std::make_shared<Linear>(dim, 4 * dim, true, seed, dtype));
  register_module("gelu", std::make_shared<GELU>(GeluApprox::kTanh));
  register_module("c_proj", std::make_shared<Linear>(4 * dim, dim, true, seed + 1, dtype));
}

Tensor MLP::forward(const Tensor& input) {
  Module& gelu = *children()[1].second;
  return c_proj().forward(gelu.forward(c_fc().forward(input)));
}

Tensor MLP::backward(const Tensor& grad_output) {
  Module& gelu = *children()[1].second;
  Tensor g = c_proj().backward(grad_output);
  notify_grads_ready(c_proj(), "c_proj.");
  g = c_fc().backward(gelu.backward(g));
  notify_grads_ready(c_fc(), "c_fc.");
  return g;
}

// ---- TransformerBlock ---------------------------------------------------------------------

TransformerBlock::TransformerBlock(int64_t dim, int64_t num_heads, uint64_t seed, DType dtype) {
  ln_1_ = register_module("ln_1", std::make_shared<LayerNorm>(dim, 1e-5, true, dtype));
  attn_ =
      register_module("attn", std::make_shared<CausalSelfAttention>(dim, num_heads, seed, dtype));
  ln_2_ = register_module("ln_2", std::make_shared<LayerNorm>(dim, 1e-5, true, dtype));
  mlp_ = register_module("mlp", std::make_shared<MLP>(dim, seed + 2, dtype));
}

Tensor TransformerBlock::forward(const Tensor& input) {
  Tensor x = add(input, attn_->forward(ln_1_->forward(input)), ctx_);  // (B, T, C)
  return add(x, mlp_->forward(ln_2_->forward(x)), ctx_);
}

Tensor TransformerBlock::backward(const Tensor& grad_output) {
  // Each residual branch passes the gradient through unchanged and adds its body's gradient.
  Tensor g = mlp_->backward(grad_output);
  notify_grads_ready(*mlp_, "mlp.");
  g = ln_2_->backward(g);
  notify_grads_ready(*ln_2_, "ln_2.");
  Tensor g_mid = add(grad_output, g, ctx_);
  g = attn_->backward(g_mid);
  notify_grads_ready(*attn_, "attn.");
  g = ln_1_->backward(g);
  notify_grads_ready(*ln_1_, "ln_1.");
  return add(g_mid, g, ctx_);
}

// ---- GPT ----------------------------------------------------------------------------------

GPT::GPT(const GPTConfig& config) : config_(config) {
  const char* op = "GPT";
  FRUGAL_REQUIRE(config.vocab_size > 0 && config.block_size > 0 && config.n_layer >= 0 &&
                     config.n_head > 0 && config.n_embd > 0,
                 op, "vocab_size, block_size, n_head, n_embd must be > 0 and n_layer >= 0, got ",
                 config.vocab_size, ", ", config.block_size, ", ", config.n_head, ", ",
                 config.n_embd, ", ", config.n_layer);
  FRUGAL_REQUIRE(config.n_embd % config.n_head == 0, op, "n_embd ", config.n_embd,
                 " is not divisible by n_head ", config.n_head);
  FRUGAL_REQUIRE(config.dtype == DType::kF32 || config.dtype == DType::kF64, op, "dtype ",
                 dtype_name(config.dtype), " is not supported (f32, f64)");
  const int64_t c = config.n_embd;
  // The children's own seeds only matter until the re-initialisation below.
  wte_ = register_module("wte", std::make_shared<Embedding>(config.vocab_size, c, 0, config.dtype));
  wpe_ = register_module("wpe", std::make_shared<Embedding>(config.block_size, c, 0, config.dtype));
  for (int64_t i = 0; i < config.n_layer; ++i) {
    blocks_.push_back(
        register_module("h." + std::to_string(i),
                        std::make_shared<TransformerBlock>(c, config.n_head, 0, config.dtype)));
  }
  ln_f_ = register_module("ln_f", std::make_shared<LayerNorm>(c, 1e-5, true, config.dtype));

  // GPT-2 initialisation (llm.c / nanoGPT): N(0, 0.02), residual projections scaled by
  // 1 / sqrt(2 L) (two residual additions per block), biases 0; LayerNorms keep (1, 0).
  ExecContext ctx;
  ctx.seed = config.seed;
  const double proj_std =
      0.02 / std::sqrt(2.0 * static_cast<double>(std::max<int64_t>(1, config.n_layer)));
  for (NamedParameter& np : named_parameters()) {
    const std::string& name = np.name;
    if (name.find("ln_") != std::string::npos) continue;
    Tensor& v = np.param->value;
    if (ends_with(name, ".bias")) {
      v.fill(0.0);
      continue;
    }
    const double sigma = ends_with(name, "c_proj.weight") ? proj_std : 0.02;
    fill_normal(v.view(), 0.f, static_cast<float>(sigma), ctx);
    ctx.offset += philox_counters(v.numel());
  }
}

Tensor GPT::forward(const Tensor& tokens) {
  const char* op = "GPT::forward";
  FRUGAL_REQUIRE(tokens.defined(), op, "tokens are undefined");
  FRUGAL_REQUIRE(tokens.dtype() == DType::kI64, op, "tokens have dtype ",
                 dtype_name(tokens.dtype()), "; expected i64");
  FRUGAL_REQUIRE(tokens.rank() == 2, op, "tokens must be (B, T), got shape ", tokens.shape());
  const int64_t b = tokens.dim(0), t = tokens.dim(1);
  FRUGAL_REQUIRE(b >= 1 && t >= 1, op, "tokens shape ", tokens.shape(), " is empty");
  FRUGAL_REQUIRE(t <= config_.block_size, op, "sequence length ", t, " exceeds block_size ",
                 config_.block_size);
  const Device dev = wte_->weight().value.device();
  FRUGAL_REQUIRE(tokens.device() == dev, op, "tokens are on ", tokens.device().str(),
                 " but the model is on ", dev.str());
  if (!positions_.defined() || !(positions_.shape() == Shape({b, t})) ||
      positions_.device() != dev) {
    std::vector<int64_t> pos(static_cast<std::size_t>(b * t));
    for (int64_t i = 0; i < b * t; ++i) pos[static_cast<std::size_t>(i)] = i % t;
    positions_ = Tensor::from_vector(pos, {b, t}).to(dev, ctx_);
  }
  Tensor x = add(wte_->forward(tokens), wpe_->forward(positions_), ctx_);  // (B, T, C)
  for (auto& blk : blocks_) x = blk->forward(x);
  x = ln_f_->forward(x);
  x_final_ = x.reshape({b * t, config_.n_embd});
  const Tensor& w = wte_->weight().value;
  head_low_ = w.dtype() == DType::kF32 ? amp::autocast_dtype(amp::OpClass::kGemm) : w.dtype();
  if (head_low_ != w.dtype()) {
    // Autocast (policy kGemm): x and W_te rounded to the low dtype, fp32 accumulation and
    // logits; the rounded x is what backward's weight gradient multiplies, so it is kept.
    x_final_ = amp::to_low(x_final_, head_low_, ctx_);
    head_w_used_ = head_w_copy_.get(w, head_low_, "GPT head (wte)", 1.f, ctx_);
    amp::GemmOptions head;
    head.trans_b = true;
    // Through the layers' entry to frugal::amp::gemm_into (its small-product thread rule).
    Tensor logits = Tensor::empty({b * t, config_.vocab_size}, DType::kF32, dev, ctx_);
    amp::low_gemm_into(x_final_, head_w_used_, logits, head, ctx_);  // (B*T, V) = x W_te^T
    return logits.reshape({b, t, config_.vocab_size});
  }
  head_w_used_ = Tensor();
  GemmOptions head;
  head.trans_b = true;
  Tensor logits = gemm(x_final_, w, head, ctx_);  // (B*T, V) = x W_te^T
  return logits.reshape({b, t, config_.vocab_size});
}

Tensor GPT::backward(const Tensor& grad_logits) {
  const char* op = "GPT::backward";
  FRUGAL_REQUIRE(x_final_.defined(), op, "backward called before forward");
  FRUGAL_REQUIRE(grad_logits.defined(), op, "grad_logits is undefined");
  const int64_t bt = x_final_.dim(0), v = config_.vocab_size;
  FRUGAL_REQUIRE(grad_logits.rank() == 3 && grad_logits.dim(0) * grad_logits.dim(1) == bt &&
                     grad_logits.dim(2) == v,
                 op, "grad_logits has shape ", grad_logits.shape(),
                 "; expected the last forward's (B, T, ", v, ")");
  Parameter& w = wte_->weight();
  const DType wdt = w.value.dtype();
  FRUGAL_REQUIRE(grad_logits.dtype() == wdt && grad_logits.device() == x_final_.device(), op,
                 "grad_logits must be ", dtype_name(wdt), " on ", x_final_.device().str());
  const Shape bt_c = {grad_logits.dim(0), grad_logits.dim(1), config_.n_embd};
  Tensor g = grad_logits.contiguous(ctx_).reshape({bt, v});
  Tensor dx;
  if (head_low_ != wdt) {
    // Autocast: both backward products take the gradient rounded to the low dtype.
    const Tensor gl = amp::to_low(g, head_low_, ctx_);  // (B*T, V)
    g = Tensor();
    if (w.trainable) {
      amp::GemmOptions acc;  // grad_W_te += g^T x, fp32 accumulation into the f32 gradient
      acc.trans_a = true;
      acc.beta = 1.f;
      amp::low_gemm_into(gl, x_final_, w.grad, acc, ctx_);
    }
    dx = Tensor::empty({bt, config_.n_embd}, DType::kF32, gl.device(), ctx_);
    amp::low_gemm_into(gl, head_w_used_, dx, {}, ctx_);  // (B*T, C) = g W_te
    dx = dx.reshape(bt_c);
    x_final_ = Tensor();  // mixed precision releases the saved tensors (see Linear::backward)
    head_w_used_ = Tensor();
  } else {
    if (w.trainable) {
      GemmOptions acc;  // grad_W_te += g^T x (the head's half of the tied gradient)
      acc.trans_a = true;
      acc.beta = 1.0;
      gemm_into(g, x_final_, w.grad.view(), acc, ctx_);
    }
    dx = gemm(g, w.value, {}, ctx_).reshape(bt_c);  // (B*T, C) = g W_te
  }
  dx = ln_f_->backward(dx);
  notify_grads_ready(*ln_f_, "ln_f.");
  for (std::size_t i = blocks_.size(); i-- > 0;) {
    dx = blocks_[i]->backward(dx);
    notify_grads_ready(*blocks_[i], "h." + std::to_string(i) + ".");
  }
  wpe_->backward(dx);
  notify_grads_ready(*wpe_, "wpe.");
  wte_->backward(dx);
  notify_grads_ready(*wte_, "wte.");
  return Tensor();
}

}  // namespace frugal::nn
