// Factorized layers, the model rewrite and LoRA (include/frugal/nn/lowrank_layers.hpp).
#include "frugal/nn/lowrank_layers.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <vector>

#include "frugal/core/ops.hpp"
#include "frugal/core/random.hpp"
#include "frugal/lowrank/svd.hpp"

namespace frugal::nn {
namespace {

/// diag(values) (r, r) of `dtype` on `device`.
Tensor diag_tensor(const std::vector<double>& values, DType dtype, Device device,
                   const ExecContext& ctx) {
  const auto r = static_cast<int64_t>(values.size());
  std::vector<double> d(static_cast<std::size_t>(r * r), 0.0);
  for (int64_t i = 0; i < r; ++i)
    d[static_cast<std::size_t>(i * r + i)] = values[static_cast<std::size_t>(i)];
  return Tensor::from_vector(d, {r, r}).to(dtype, ctx).to(device, ctx);
}

/// sqrt(sum_{i >= r} s_i^2 / sum s_i^2), the Eckart-Young error of rank r, summed from the tail.
double tail_ratio(const std::vector<double>& s, int64_t r) {
  double tail = 0.0, total = 0.0;
  for (std::size_t i = s.size(); i-- > 0;) {
    total += s[i] * s[i];
    if (static_cast<int64_t>(i) >= r) tail += s[i] * s[i];
  }
  return total == 0.0 ? 0.0 : std::sqrt(tail / total);
}

/// Copies `value` (any device) into the parameter's value (shapes must match).
void set_value(Parameter& p, const Tensor& value, const ExecContext& ctx) {
  p.value.copy_from(value.reshape(p.value.shape()), ctx);
}

/// The Sequential of factorize_linear from a thin SVD (all k triplets) of the weight.
std::shared_ptr<Sequential> linear_from_svd(Linear& layer, const lowrank::SvdResult& f,
                                            int64_t rank, const ExecContext& ctx) {
  const Tensor& w = layer.weight().value;
  const int64_t m = w.dim(0), n = w.dim(1);
  std::vector<double> root = f.s.slice(0, 0, rank).contiguous(ctx).to_vector<double>();
  for (double& v : root) v = std::sqrt(v);
  const Tensor d = diag_tensor(root, w.dtype(), w.device(), ctx);
  // W1 = S^1/2 V^T (r, n), W2 = U S^1/2 (m, r).
  const Tensor w1 = gemm(d, f.vt.slice(0, 0, rank), {}, ctx);
  const Tensor w2 = gemm(f.u.slice(1, 0, rank), d, {}, ctx);
  auto first = std::make_shared<Linear>(n, rank, false, 0, w.dtype());
  auto second = std::make_shared<Linear>(rank, m, layer.bias() != nullptr, 0, w.dtype());
  first->to(w.device(), ctx);
  second->to(w.device(), ctx);
  set_value(first->weight(), w1, ctx);
  set_value(second->weight(), w2, ctx);
  if (layer.bias() != nullptr) set_value(*second->bias(), layer.bias()->value, ctx);
  first->set_context(layer.context());
  second->set_context(layer.context());
  auto seq = std::make_shared<FactorizedSequential>("LowRankLinear");
  seq->add(first).add(second);
  return seq;
}

/// A Conv2d on `device` whose weight (and bias) are `weight` (and `bias`, if defined).
std::shared_ptr<Conv2d> make_conv(int64_t in, int64_t out, Size2 kernel, const Conv2dOptions& opt,
                                  const Tensor& weight, const Tensor& bias, DType dtype,
                                  Device device, const ExecContext& ctx) {
  auto c = std::make_shared<Conv2d>(in, out, kernel, opt, 0, dtype);
  c->to(device, ctx);
  set_value(c->weight(), weight, ctx);
  if (bias.defined()) set_value(*c->bias(), bias, ctx);
  return c;
}

void require_dense_conv(const char* op, Conv2d& layer) {
  FRUGAL_REQUIRE(layer.params().groups == 1, op,
                 "only groups = 1 convolutions are factorized, got groups ", layer.params().groups);
}

std::shared_ptr<Sequential> conv_from_tucker2(Conv2d& layer, const lowrank::Tucker2Result& t,
                                              const ExecContext& ctx) {
  const Tensor& w = layer.weight().value;
  const int64_t co = w.dim(0), ci = w.dim(1);
  const int64_t r1 = t.core.dim(0), r2 = t.core.dim(1);
  const Conv2dParams& p = layer.params();
  const Tensor bias = layer.bias() != nullptr ? layer.bias()->value : Tensor();
  auto seq = std::make_shared<FactorizedSequential>("Tucker2Conv2d");
  seq->add(make_conv(ci, r2, 1, Conv2dOptions{.bias = false}, t.u_in.t().contiguous(ctx), {},
                     w.dtype(), w.device(), ctx));
  seq->add(make_conv(
      r2, r1, layer.kernel_size(),
      Conv2dOptions{
          .stride = p.stride, .padding = p.padding, .dilation = p.dilation, .bias = false},
      t.core, {}, w.dtype(), w.device(), ctx));
  seq->add(make_conv(r1, co, 1, Conv2dOptions{.bias = bias.defined()}, t.u_out, bias, w.dtype(),
                     w.device(), ctx));
  seq->set_context(layer.context());
  return seq;
}

std::shared_ptr<Sequential> conv_from_cp(Conv2d& layer, const lowrank::CpResult& cp,
                                         const ExecContext& ctx) {
  const Tensor& w = layer.weight().value;
  const int64_t co = w.dim(0), ci = w.dim(1);
  const int64_t r = cp.out.dim(1);
  const Conv2dParams& p = layer.params();
  const Size2 k = layer.kernel_size();
  const Tensor bias = layer.bias() != nullptr ? layer.bias()->value : Tensor();
  auto seq = std::make_shared<FactorizedSequential>("CPConv2d");
  seq->add(make_conv(ci, r, 1, Conv2dOptions{.bias = false}, cp.in.t().contiguous(ctx), {},
                     w.dtype(), w.device(), ctx));
  seq->add(make_conv(r, r, Size2{k.h, 1},
                     Conv2dOptions{.stride = Size2{p.stride.h, 1},
                                   .padding = Size2{p.padding.h, 0},
                                   .dilation = Size2{p.dilation.h, 1},
                                   .groups = r,
                                   .bias = false},
                     cp.h.t().contiguous(ctx), {}, w.dtype(), w.device(), ctx));
  seq->add(make_conv(r, r, Size2{1, k.w},
                     Conv2dOptions{.stride = Size2{1, p.stride.w},
                                   .padding = Size2{0, p.padding.w},
                                   .dilation = Size2{1, p.dilation.w},
                                   .groups = r,
                                   .bias = false},
                     cp.w.t().contiguous(ctx), {}, w.dtype(), w.device(), ctx));
  seq->add(make_conv(r, co, 1, Conv2dOptions{.bias = bias.defined()}, cp.out, bias, w.dtype(),
                     w.device(), ctx));
  seq->set_context(layer.context());
  return seq;
}

// ---- parameter and FLOP counts ------------------------------------------------------------

int64_t tucker2_params(int64_t co, int64_t ci, int64_t hw, int64_t r1, int64_t r2) {
  return ci * r2 + r2 * r1 * hw + r1 * co;
}
int64_t cp_params(int64_t co, int64_t ci, int64_t kh, int64_t kw, int64_t r) {
  return r * (ci + kh + kw + co);
}

/// The largest r with f(r) <= budget for an increasing f, in [1, hi]; 0 if none.
template <class F>
int64_t largest_within(int64_t hi, int64_t budget, F&& f) {
  int64_t best = 0;
  for (int64_t r = 1; r <= hi; ++r) {
    if (f(r) <= budget) best = r;
  }
  return best;
}

struct Rewriter {
  const lowrank::RankPolicy& policy;
  const FactorizeOptions& opt;
  const ExecContext& ctx;
  std::vector<LowRankLayerReport> reports;

  bool skipped(const std::string& name) const {
    return std::find(opt.skip.begin(), opt.skip.end(), name) != opt.skip.end();
  }

  std::shared_ptr<Module> linear(Linear& l, LowRankLayerReport& rep) {
    const Tensor& w = l.weight().value;
    const int64_t m = w.dim(0), n = w.dim(1);
    const int64_t bias = l.bias() != nullptr ? m : 0;
    rep.type = "Linear";
    rep.method = "svd";
    rep.params_before = rep.params_after = m * n + bias;
    rep.flops_before = rep.flops_after = 2 * m * n;
    const lowrank::SvdResult f = lowrank::svd(w, lowrank::SvdMode::kThin, ctx);
    const std::vector<double> s = f.s.to_vector<double>();
    const int64_t r = lowrank::select_rank(s, m, n, policy);
    rep.rank = r;
    if (!f.converged) {
      rep.reason = "SVD did not converge";
      return nullptr;
    }
    if (r == 0 || !lowrank::worth_factorizing(m, n, r)) {
      rep.reason = "rank " + std::to_string(r) + " would not save parameters";
      return nullptr;
    }
    rep.relative_error = tail_ratio(s, r);
    rep.params_after = r * (m + n) + bias;
    rep.flops_after = 2 * r * (m + n);
    rep.factorized = true;
    return linear_from_svd(l, f, r, ctx);
  }

  std::shared_ptr<Module> conv(Conv2d& c, LowRankLayerReport& rep) {
    const Tensor& w = c.weight().value;
    const int64_t co = w.dim(0), ci = w.dim(1), kh = w.dim(2), kw = w.dim(3), hw = kh * kw;
    const int64_t bias = c.bias() != nullptr ? co : 0;
    rep.type = "Conv2d";
    rep.method = opt.conv == ConvFactorization::kCp ? "cp" : "tucker2";
    rep.params_before = rep.params_after = co * ci * hw + bias;
    rep.flops_before = rep.flops_after = 2 * co * ci * hw;
    if (c.params().groups != 1 || hw == 1) {
      rep.reason = c.params().groups != 1 ? "grouped convolution" : "1x1 convolution";
      return nullptr;
    }
    const int64_t max_out = std::min(co, ci * hw), max_in = std::min(ci, co * hw);
    const int64_t before = co * ci * hw;
    // Ranks per channel mode from the unfolding spectra (energy / error rules), or the largest
    // equal ranks within the parameter budget (shape rules), or the fixed rank.
    int64_t r1 = 0, r2 = 0;
    if (lowrank::needs_singular_values(policy)) {
      const lowrank::Tucker2Spectra sp = lowrank::tucker2_spectra(w, ctx);
      r1 = lowrank::select_rank(sp.s_out.to_vector<double>(), co, ci * hw, policy);
      r2 = lowrank::select_rank(sp.s_in.to_vector<double>(), ci, co * hw, policy);
    } else if (policy.rule == lowrank::RankRule::kFixed) {
      r1 = std::min<int64_t>(static_cast<int64_t>(policy.value), max_out);
      r2 = std::min<int64_t>(static_cast<int64_t>(policy.value), max_in);
    } else {
      const auto budget =
          static_cast<int64_t>(policy.rule == lowrank::RankRule::kParamBudget
                                   ? policy.value
                                   : std::floor(static_cast<double>(before) / policy.value));
      if (opt.conv == ConvFactorization::kCp) {
        r1 = r2 = largest_within(std::max(co, ci) * hw, budget,
                                 [&](int64_t r) { return cp_params(co, ci, kh, kw, r); });
      } else {
        r1 = r2 = largest_within(std::min(max_out, max_in), budget,
                                 [&](int64_t r) { return tucker2_params(co, ci, hw, r, r); });
      }
    }
    if (opt.conv == ConvFactorization::kCp) {
      // CP has one rank: the larger of the two channel-mode ranks (a heuristic, docs/lowrank.md).
      const int64_t r = std::max(r1, r2);
      rep.rank = r;
      if (r == 0 || cp_params(co, ci, kh, kw, r) >= before) {
        rep.reason = "rank " + std::to_string(r) + " would not save parameters";
        return nullptr;
      }
      const lowrank::CpResult cp = lowrank::cp_als(w, r, opt.cp, ctx);
      rep.relative_error = cp.relative_error;
      rep.params_after = cp_params(co, ci, kh, kw, r) + bias;
      rep.flops_after = 2 * cp_params(co, ci, kh, kw, r);
      rep.factorized = true;
      return conv_from_cp(c, cp, ctx);
    }
    rep.rank = r1;
    rep.rank_in = r2;
    if (r1 == 0 || r2 == 0 || tucker2_params(co, ci, hw, r1, r2) >= before) {
      rep.reason = "ranks (" + std::to_string(r1) + ", " + std::to_string(r2) +
                   ") would not save parameters";
      return nullptr;
    }
    const lowrank::Tucker2Result t = lowrank::tucker2(w, r1, r2, ctx);
    rep.relative_error = t.relative_error;
    rep.params_after = tucker2_params(co, ci, hw, r1, r2) + bias;
    rep.flops_after = 2 * tucker2_params(co, ci, hw, r1, r2);
    rep.factorized = true;
    return conv_from_tucker2(c, t, ctx);
  }

  void walk(Module& mod, const std::string& prefix) {
    if (dynamic_cast<FactorizedSequential*>(&mod) != nullptr) return;  // already factorized
    // Parents whose children are used only through the registry, so replace_child is safe:
    // Sequential and the GPT MLP. Other modules may hold their layers as members too.
    const bool replaceable =
        dynamic_cast<Sequential*>(&mod) != nullptr || dynamic_cast<MLP*>(&mod) != nullptr;
    const auto& children = mod.children();
    for (std::size_t i = 0; i < children.size(); ++i) {
      const std::string name = prefix + children[i].first;
      Module* child = children[i].second.get();
      auto* lin = dynamic_cast<Linear*>(child);
      auto* cv = dynamic_cast<Conv2d*>(child);
      const bool eligible =
          replaceable && ((lin != nullptr && opt.linear) ||
                          (cv != nullptr && opt.conv != ConvFactorization::kNone));
      if (!eligible) {
        walk(*child, name + ".");
        continue;
      }
      if (skipped(name)) continue;
      LowRankLayerReport rep;
      rep.name = name;
      std::shared_ptr<Module> repl = lin != nullptr ? linear(*lin, rep) : conv(*cv, rep);
      if (repl) {
        repl->train(child->is_training());
        mod.replace_child(i, std::move(repl));
      }
      reports.push_back(std::move(rep));
    }
  }
};

}  // namespace

std::shared_ptr<Sequential> factorize_linear(Linear& layer, int64_t rank, const ExecContext& ctx) {
  const char* op = "factorize_linear";
  const Tensor& w = layer.weight().value;
  const int64_t k = std::min(w.dim(0), w.dim(1));
  FRUGAL_REQUIRE(rank >= 1 && rank <= k, op, "rank ", rank, " outside [1, min(out, in) = ", k, "]");
  const lowrank::SvdResult f = lowrank::svd(w, lowrank::SvdMode::kThin, ctx);
  return linear_from_svd(layer, f, rank, ctx);
}

std::shared_ptr<Sequential> factorize_conv_tucker2(Conv2d& layer, int64_t rank_out, int64_t rank_in,
                                                   const ExecContext& ctx) {
  require_dense_conv("factorize_conv_tucker2", layer);
  const lowrank::Tucker2Result t = lowrank::tucker2(layer.weight().value, rank_out, rank_in, ctx);
  return conv_from_tucker2(layer, t, ctx);
}

std::shared_ptr<Sequential> factorize_conv_cp(Conv2d& layer, int64_t rank,
                                              const lowrank::CpOptions& opt,
                                              const ExecContext& ctx) {
  require_dense_conv("factorize_conv_cp", layer);
  const lowrank::CpResult cp = lowrank::cp_als(layer.weight().value, rank, opt, ctx);
  return conv_from_cp(layer, cp, ctx);
}

std::vector<LowRankLayerReport> factorize_model(Module& model, const lowrank::RankPolicy& policy,
                                                const FactorizeOptions& opt,
                                                const ExecContext& ctx) {
  // Validate the policy once up front (select_rank checks the value against its rule).
  if (!lowrank::needs_singular_values(policy)) {
    (void)lowrank::select_rank({}, 2, 2, policy);
  } else {
    const std::vector<double> probe{1.0};
    (void)lowrank::select_rank(probe, 2, 2, policy);
  }
  Rewriter rw{policy, opt, ctx, {}};
  rw.walk(model, "");
  return std::move(rw.reports);
}

LowRankSummary summarize(const std::vector<LowRankLayerReport>& reports) {
  LowRankSummary s;
  for (const LowRankLayerReport& r : reports) {
    if (!r.factorized) continue;
    ++s.layers;
    s.params_before += r.params_before;
    s.params_after += r.params_after;
    s.flops_before += r.flops_before;
    s.flops_after += r.flops_after;
  }
  if (s.params_after > 0) {
    s.param_ratio = static_cast<double>(s.params_before) / static_cast<double>(s.params_after);
  }
  return s;
}

namespace {

double seconds_between(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// Factorizes `model` with the loop's thread count and fills the first fields of the result.
LowRankFineTuneResult factorize_for_fine_tune(Module& model, const lowrank::RankPolicy& policy,
                                              const FactorizeOptions& fopt,
                                              const TrainOptions& train_opt) {
  LowRankFineTuneResult res;
  ExecContext ctx;
  ctx.num_threads = train_opt.num_threads;
  const auto t0 = std::chrono::steady_clock::now();
  ctx.run([&] { res.layers = factorize_model(model, policy, fopt, ctx); });
  res.factorize_seconds = seconds_between(t0);
  res.summary = summarize(res.layers);
  return res;
}

}  // namespace

LowRankFineTuneResult fine_tune_factorized_classifier(
    Module& model, const lowrank::RankPolicy& policy, const FactorizeOptions& fopt,
    const LabeledData& train, const LabeledData& test, const AdamWOptions& adamw,
    const TrainOptions& train_opt) {
  LowRankFineTuneResult res = factorize_for_fine_tune(model, policy, fopt, train_opt);
  if (test.inputs.defined() && test.inputs.numel() > 0) {
    DataLoaderOptions eo;
    eo.batch_size = 256;  // as train_classifier evaluates
    res.accuracy_before_fine_tune = evaluate_accuracy(
        model, DataLoader(std::make_shared<TensorDataset>(test.inputs, test.labels), eo));
  }
  AdamW opt(model.named_parameters(), adamw);
  res.fine_tune = train_classifier(model, opt, train, test, train_opt);
  return res;
}

LowRankFineTuneResult fine_tune_factorized_char_gpt(GPT& model, const lowrank::RankPolicy& policy,
                                                    const FactorizeOptions& fopt,
                                                    const CharCorpus& corpus,
                                                    const AdamWOptions& adamw,
                                                    const TrainOptions& train_opt) {
  LowRankFineTuneResult res = factorize_for_fine_tune(model, policy, fopt, train_opt);
  const int64_t t = train_opt.seq_len > 0 ? train_opt.seq_len : model.config().block_size;
  if (train_opt.eval_batches > 0 && t <= model.config().block_size) {
    // The windows train_char_gpt's val_loss uses (its evaluation key), so the two compare.
    const uint64_t eval_seed = char_eval_seed(train_opt);
    res.val_loss_before_fine_tune =
        estimate_char_loss(model, corpus, CorpusSplit::kVal, train_opt.eval_batches,
                           train_opt.batch_size, t, eval_seed);
  }
  AdamW opt(model.named_parameters(), adamw);
  res.fine_tune = train_char_gpt(model, opt, corpus, train_opt);
  return res;
}

// ---- LoRALinear -------------------------------------------------------------------------------

LoRALinear::LoRALinear(std::shared_ptr<Linear> base, int64_t rank, double alpha, uint64_t seed)
    : base_(std::move(base)), rank_(rank) {
  const char* op = "LoRALinear";
  FRUGAL_REQUIRE(base_ != nullptr, op, "base layer is null");
  const int64_t in = base_->in_features(), out = base_->out_features();
  FRUGAL_REQUIRE(rank >= 1 && rank <= std::min(in, out), op, "rank ", rank,
                 " outside [1, min(in, out) = ", std::min(in, out), "]");
  FRUGAL_REQUIRE(std::isfinite(alpha) && alpha > 0.0, op, "alpha ", alpha, " must be > 0");
  scaling_ = alpha / static_cast<double>(rank);
  base_->weight().trainable = false;
  if (base_->bias() != nullptr) base_->bias()->trainable = false;
  register_module("base", base_);
  const Tensor& w = base_->weight().value;
  // kaiming_uniform_(a = sqrt(5)) on A (r, in), as the LoRA reference code: bound 1 / sqrt(in).
  const auto bound = static_cast<float>(1.0 / std::sqrt(static_cast<double>(in)));
  ExecContext init;
  init.seed = seed;
  Tensor a = Tensor::empty({rank, in}, w.dtype(), w.device());
  fill_uniform(a, -bound, bound, init);
  a_ = &register_parameter("lora_a", std::move(a));
  b_ = &register_parameter("lora_b", Tensor::zeros({out, rank}, w.dtype(), w.device()));
}

Tensor LoRALinear::forward(const Tensor& input) {
  Tensor y = base_->forward(input);  // validates the input
  if (merged_) return y;
  const int64_t in = base_->in_features(), out = base_->out_features();
  x_ = input.contiguous(ctx_).reshape({-1, in});                 // (N, in)
  h_ = gemm(x_, a_->value, GemmOptions{.trans_b = true}, ctx_);  // (N, r)
  Tensor rows = y.reshape({-1, out});                            // (N, out), shares y's storage
  gemm_into(h_, b_->value, rows, GemmOptions{.trans_b = true, .alpha = scaling_, .beta = 1.0},
            ctx_);
  return y;
}

Tensor LoRALinear::backward(const Tensor& grad_output) {
  const char* op = "LoRALinear::backward";
  Tensor gx = base_->backward(grad_output);  // validates; frozen base: input gradient only
  if (merged_) return gx;
  FRUGAL_REQUIRE(x_.defined(), op, "called before forward");
  const int64_t in = base_->in_features(), out = base_->out_features();
  const Tensor g = grad_output.contiguous(ctx_).reshape({-1, out});  // (N, out)
  if (b_->trainable) {
    // dL/dB (out, r) += s g^T h.
    gemm_into(g, h_, b_->grad, GemmOptions{.trans_a = true, .alpha = scaling_, .beta = 1.0}, ctx_);
  }
  const Tensor gh = gemm(g, b_->value, GemmOptions{.alpha = scaling_}, ctx_);  // (N, r)
  if (a_->trainable) {
    // dL/dA (r, in) += (s g B)^T x.
    gemm_into(gh, x_, a_->grad, GemmOptions{.trans_a = true, .beta = 1.0}, ctx_);
  }
  Tensor rows = gx.reshape({-1, in});
  gemm_into(gh, a_->value, rows, GemmOptions{.beta = 1.0}, ctx_);  // dL/dx += s g B A
  return gx;
}

void LoRALinear::merge() {
  if (merged_) return;
  gemm_into(b_->value, a_->value, base_->weight().value,
            GemmOptions{.alpha = scaling_, .beta = 1.0}, ctx_);
  merged_ = true;
}

void LoRALinear::unmerge() {
  if (!merged_) return;
  gemm_into(b_->value, a_->value, base_->weight().value,
            GemmOptions{.alpha = -scaling_, .beta = 1.0}, ctx_);
  merged_ = false;
}

}  // namespace frugal::nn
